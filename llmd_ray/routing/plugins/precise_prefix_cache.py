"""``precise-prefix-cache``: scorer (affinity). Prefix hits from the engines' own KV events.

The lead's KV-index actor consumes vLLM KV events (``BlockStored`` /
``BlockRemoved``, 64-bit block hashes) and exposes, in the router process, a
``PreciseIndexView``: ``lookup(hashes) -> {endpoint_id: (matched_blocks, tier)}``,
where ``tier`` says where the leading blocks live. Hits are weighted by tier
(``GPU``/engine memory beats ``CPU`` offload beats shared storage). When the
view is missing, stale (``staleness_s() > maxStalenessSeconds``) or fails, the
scorer falls back to the approximate index and counts the fallback.

Inputs: the request's event-form block hashes (``RoutingRequest.event_block_hashes``);
the ``PreciseIndexView`` (``llmd_ray.routing.framework``) set with ``Scheduler.set_precise_view``;
on fallback, the ``prefix-cache`` plugin's approximate index.

Score: ``matched_blocks * tier_weight / request_blocks``; on fallback the
``prefix-cache`` score (tier weight 1).

Parameters: ``tierWeights``, ``unknownTierWeight``, ``maxStalenessSeconds``, ``fallbackToApproximate``.

Example:

```yaml
plugins:
- type: precise-prefix-cache
  parameters:
    tierWeights: {gpu: 1.0, cpu: 0.8, storage: 0.5}
    maxStalenessSeconds: 5
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: precise-prefix-cache
    weight: 3
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from llmd_ray.routing.framework import Category, CycleState, PluginParameters, Scorer
from llmd_ray.routing.plugins.prefix_cache import UsesPrefixIndex
from llmd_ray.routing.types import SHARED_TIER, Endpoint


DEFAULT_TIER_WEIGHTS = {
    "gpu": 1.0, "engine": 1.0,  # the engine's own KV memory (vLLM medium "GPU")
    "cpu": 0.8, "local": 0.8,  # offloaded to the node's CPU memory (medium "CPU")
    "storage": 0.5, "shared": 0.5, SHARED_TIER: 0.5,  # shared tiers: a transfer away
}


def precise_matches(cycle: CycleState, max_staleness_s: float) -> tuple[Mapping[str, tuple[int, str]] | None, str]:
    """The view's matches for this request, once per cycle; ``(None, reason)`` when unusable."""
    key = f"precise-matches@{max_staleness_s}"
    cached = cycle.data.get(key)
    if cached is None:
        view = cycle.handle.precise_view
        if view is None:
            cached = (None, "missing")
        else:
            try:
                if view.staleness_s() > max_staleness_s:
                    cached = (None, "stale")
                elif view.is_recovering():
                    cached = (None, "recovering")
                else:
                    cached = (view.lookup(cycle.request.event_block_hashes), "ok")
            except Exception:  # a broken view must not break routing
                cached = (None, "error")
        cycle.data[key] = cached
    return cached


class PrecisePrefixCacheParameters(PluginParameters):
    tier_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_WEIGHTS),
        description="Weight of a hit by tier name (case-insensitive), in [0, 1].",
    )
    unknown_tier_weight: float = Field(0.5, ge=0, le=1, description="Weight of a hit in a tier not listed.")
    max_staleness_seconds: float = Field(10.0, gt=0, description="Older views are not trusted: fall back.")
    fallback_to_approximate: bool = Field(True, description="On fallback use the approximate index (else score 0).")


class PrecisePrefixCacheScorer(UsesPrefixIndex, Scorer):
    type = "precise-prefix-cache"
    category: ClassVar[Category] = "affinity"
    Parameters = PrecisePrefixCacheParameters

    def __init__(self, name, params, handle):
        super().__init__(name, params, handle)
        self._weights = {k.lower(): v for k, v in params.tier_weights.items()}
        self.lookups = 0
        self.fallbacks: dict[str, int] = {"missing": 0, "stale": 0, "recovering": 0, "error": 0}

    def needs_prefix_index(self) -> bool:
        return self.params.fallback_to_approximate

    def tier_weight(self, tier: str) -> float:
        return self._weights.get(tier.lower(), self.params.unknown_tier_weight)

    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        total = cycle.request.num_blocks
        if total == 0:
            return [0.0] * len(endpoints)
        self.lookups += 1
        matches, reason = precise_matches(cycle, self.params.max_staleness_seconds)
        if matches is None:
            self.fallbacks[reason] += 1
            if not self.params.fallback_to_approximate:
                return [0.0] * len(endpoints)
            approx = self.prefix.matches(cycle)
            return [approx.get(e.id, 0) / total for e in endpoints]
        # Blocks in the cluster-wide shared tier (held by the pseudo-endpoint
        # SHARED_TIER) are a transfer away from EVERY endpoint: credit them to
        # all, at the shared tier's weight, so a lightly loaded replica can win.
        shared = matches.get(SHARED_TIER)
        shared_score = shared[0] * self.tier_weight(shared[1]) if shared else 0.0
        out = []
        for e in endpoints:
            hit = matches.get(e.id)
            own = 0.0 if hit is None else hit[0] * self.tier_weight(hit[1])
            out.append(max(own, shared_score) / total)
        return out

    def stats(self) -> dict:
        return {"lookups": self.lookups, "fallbacks": dict(self.fallbacks)}
