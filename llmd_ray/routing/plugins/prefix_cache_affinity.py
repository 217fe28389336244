# Prefix-cache affinity with saturation release ("sticky until saturated").
#
# Per request, over the endpoints that reach this filter:
#  1. Load: load(e) = max(backlog(e), num_waiting(e) * averageUncachedTokens), in pending prefill tokens.
#  2. IMBALANCE GATE, before affinity: if max load - min load > imbalanceAbsTokens
#     and max load > imbalanceRatio * min load: skip affinity, keep all, route by load.
#  3. Match: m(e) = leading prefix blocks endpoint e holds; best = max m(e).
#     If best < minMatchBlocks the request is cold: keep all.
#  4. Warm set: the endpoints with m(e) >= warmFraction * best.
#  5. Saturation: threshold = prefillTokensPerSecond * maxTtftPenaltySeconds;
#     a warm endpoint is saturated when load(e) > threshold or it is at max_ongoing.
#  6. Keep the unsaturated warm endpoints; if every warm endpoint is saturated,
#     RELEASE: keep all, route by load. With releaseWhen: faster, release only if
#     that starts the request sooner: some other endpoint's load + uncached tokens
#     < the least of the same over the warm ones (not at max_ongoing); else HOLD:
#     keep the warm ones. (At overload every endpoint is saturated: releasing
#     would scatter the prefix for no gain.) releaseMarginSeconds: release only
#     if the other endpoint starts it more than this much sooner
#     (x prefillTokensPerSecond tokens).
#
# backlog(e) is the router's own estimate: each request routed to e adds its uncached tokens
# (prompt - matched blocks * block_size), and the backlog drains at prefillTokensPerSecond.
# "Route by load" = keep all endpoints and switch this profile's affinity scorers off (score 0),
# so the balance scorers (queue, kv-cache-utilization, ...) decide.
"""``prefix-cache-affinity``: filter. Keep a request on cache-warm endpoints until they saturate.

llm-d's default, "sticky until saturated": a request whose prefix is cached
somewhere stays on the endpoints holding (nearly) the longest match, unless
that would queue it behind more prefill work than the allowed TTFT penalty
buys; then it is released to all endpoints and routed by load. An imbalance
gate evaluated first routes by load whenever the fleet is badly skewed. The
algorithm, step by step, is the numbered comment at the top of this module.

Inputs: prefix matches (the ``prefix-cache`` plugin's approximate index, or
the precise view with ``matchSource: precise``); ``Endpoint.num_waiting``, ``in_flight``,
``max_ongoing``; the router-side prefill backlog it keeps from ``on_routed``.

Effect: keeps the warm set (verdict ``warm``), or keeps all endpoints (verdicts
``cold``, ``imbalanced``, ``released``); ``imbalanced`` and ``released`` also
switch the profile's affinity scorers off.

Parameters: ``prefillTokensPerSecond``, ``maxTtftPenaltySeconds``, ``warmFraction``,
``minMatchBlocks``, ``averageUncachedTokens``, ``imbalanceAbsTokens``, ``imbalanceRatio``,
``matchSource``, ``maxStalenessSeconds``, ``releaseWhen``, ``releaseMarginSeconds``.

Example:

```yaml
plugins:
- type: prefix-cache-affinity
  parameters:
    prefillTokensPerSecond: 8000
    maxTtftPenaltySeconds: 0.5
- type: prefix-cache
- type: queue
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache-affinity
  - pluginRef: prefix-cache
    weight: 3
  - pluginRef: queue
    weight: 2
```
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from llmd_ray.routing.framework import CycleState, Filter, FilterResult, PluginParameters, RoutedEvent
from llmd_ray.routing.plugins.precise_prefix_cache import precise_matches
from llmd_ray.routing.plugins.prefix_cache import UsesPrefixIndex
from llmd_ray.routing.result import Affinity
from llmd_ray.routing.types import Endpoint


class PrefixCacheAffinityParameters(PluginParameters):
    prefill_tokens_per_second: float = Field(
        8000.0, gt=0, description="Measured prefill throughput of one endpoint (uncached tokens/s)."
    )
    max_ttft_penalty_seconds: float = Field(
        0.5, gt=0, description="Queueing delay a warm endpoint may add; saturation threshold = throughput x this."
    )
    warm_fraction: float = Field(0.8, gt=0, le=1, description="Warm: matched blocks >= this x the best match.")
    min_match_blocks: int = Field(1, ge=1, description="A best match below this many blocks makes the request cold.")
    average_uncached_tokens: int = Field(
        512, ge=0, description="Prefill tokens assumed per request in an engine's reported waiting queue."
    )
    imbalance_abs_tokens: float = Field(
        16384.0, ge=0, description="Imbalance gate: max load - min load must exceed this (tokens)..."
    )
    imbalance_ratio: float = Field(2.0, ge=1, description="...and max load must exceed this x min load.")
    match_source: Literal["approximate", "precise"] = Field(
        "approximate", description="Where matches come from; precise falls back to approximate when unusable."
    )
    max_staleness_seconds: float = Field(10.0, gt=0, description="With matchSource precise: oldest usable view.")
    release_when: Literal["saturated", "faster"] = Field(
        "saturated", description="saturated: release whenever every warm endpoint is saturated; faster: only when "
        "another endpoint would start the request sooner (load + uncached tokens), else hold the warm ones.")
    release_margin_seconds: float = Field(
        0.0, ge=0, description="With releaseWhen faster: how much sooner (seconds of prefill at "
        "prefillTokensPerSecond) another endpoint must start the request for the warm ones to be released.")


class PrefixCacheAffinityFilter(UsesPrefixIndex, Filter):
    type = "prefix-cache-affinity"
    Parameters = PrefixCacheAffinityParameters

    def __init__(self, name, params, handle):
        super().__init__(name, params, handle)
        self._backlog: dict[str, tuple[float, float]] = {}  # endpoint -> (tokens, as of)
        self._table = None  # (table uid, members, index_of, tokens array, as-of array): _backlog by position
        self.outcomes = {str(a): 0 for a in (Affinity.COLD, Affinity.WARM, Affinity.RELEASED, Affinity.IMBALANCED)}
        self.held = 0  # warm verdicts where every warm endpoint was saturated but releasing would not pay

    @property
    def threshold_tokens(self) -> float:
        return self.params.prefill_tokens_per_second * self.params.max_ttft_penalty_seconds

    def backlog(self, endpoint_id: str, now: float) -> float:
        entry = self._backlog.get(endpoint_id)
        if entry is None:
            return 0.0
        tokens, t = entry
        return max(0.0, tokens - self.params.prefill_tokens_per_second * max(0.0, now - t))

    def load(self, e: Endpoint, now: float) -> float:
        return max(self.backlog(e.id, now), e.num_waiting * self.params.average_uncached_tokens)

    def _matches(self, cycle: CycleState) -> dict[str, int]:
        if self.params.match_source == "precise":
            m, _reason = precise_matches(cycle, self.params.max_staleness_seconds)
            if m is not None:
                return {ep: hit[0] for ep, hit in m.items()}
        return self.prefix.matches(cycle)

    def _loads(self, endpoints: list[Endpoint], now: float) -> list[float]:
        """``load`` for every endpoint, inlined: this runs on every decision."""
        rate, per_waiting = self.params.prefill_tokens_per_second, self.params.average_uncached_tokens
        get = self._backlog.get
        loads = []
        for e in endpoints:
            queued = e.num_waiting * per_waiting
            entry = get(e.id)
            if entry is not None:
                left = entry[0] - rate * (now - entry[1]) if now > entry[1] else entry[0]
                if left > queued:
                    queued = left
            loads.append(queued)
        return loads

    def _verdict(self, kept, affinity: Affinity, reason: str) -> FilterResult:
        self.outcomes[affinity] += 1
        return FilterResult(kept, reason, affinity)

    def filter(self, cycle: CycleState, endpoints: list[Endpoint]) -> FilterResult:
        p, now = self.params, cycle.now
        loads = self._loads(endpoints, now)
        lo, hi = min(loads), max(loads)
        if hi - lo > p.imbalance_abs_tokens and hi > p.imbalance_ratio * lo:
            return self._verdict(endpoints, Affinity.IMBALANCED,
                                 f"imbalanced: load {lo:.0f}..{hi:.0f} tokens; affinity skipped")
        matches = self._matches(cycle)
        get = matches.get
        matched = [get(e.id, 0) for e in endpoints] if matches else None
        best = max(matched) if matched else 0
        if best < p.min_match_blocks:
            return self._verdict(endpoints, Affinity.COLD, f"cold: best match {best} blocks")
        floor = p.warm_fraction * best
        threshold = self.threshold_tokens
        warm = [i for i, m in enumerate(matched) if m >= floor]
        kept = [endpoints[i] for i in warm if loads[i] <= threshold and not endpoints[i].at_capacity]
        if kept:
            reason = f"warm: {len(kept)} of {len(warm)} warm endpoints under {threshold:.0f} tokens (best {best})"
            return self._verdict(kept, Affinity.WARM, reason)
        if p.release_when == "faster":
            req, is_warm = cycle.request, set(warm)
            cost = [loads[i] + max(0, req.num_tokens - m * req.block_size) for i, m in enumerate(matched)]
            usable = [i for i in range(len(endpoints)) if not endpoints[i].at_capacity]
            warm_best = min((cost[i] for i in usable if i in is_warm), default=None)
            other_best = min((cost[i] for i in usable if i not in is_warm), default=None)
            margin = p.release_margin_seconds * p.prefill_tokens_per_second
            if warm_best is not None and (other_best is None or other_best + margin >= warm_best):
                held = [endpoints[i] for i in usable if i in is_warm]
                return self._hold(held, len(held), len(warm), warm_best, other_best)
        return self._verdict(endpoints, Affinity.RELEASED,
                             f"released: all {len(warm)} warm endpoints saturated (> {threshold:.0f} tokens)")

    def _hold(self, kept, n_kept: int, n_warm: int, warm_best: float, other_best: float | None) -> FilterResult:
        """Step 6 with ``releaseWhen: faster``: every warm endpoint is saturated, but none other starts sooner."""
        self.held += 1
        other = "none free" if other_best is None else f"{other_best:.0f}"
        return self._verdict(kept, Affinity.WARM, f"warm: held {n_kept} of {n_warm} saturated warm endpoints "
                             f"(start cost {warm_best:.0f} tokens, elsewhere {other})")

    def _backlog_arrays(self, table) -> tuple[np.ndarray, np.ndarray]:
        """``_backlog`` aligned with ``table``'s positions (absent: 0 tokens as of 0, which never counts)."""
        t = self._table
        if t is None or t[0] != table.uid or t[1] != table.members:
            n = len(table)
            tokens, at = np.zeros(n), np.zeros(n)
            index_of = table.index_of
            for ep, (tok, asof) in self._backlog.items():
                pos = index_of.get(ep)
                if pos is not None:
                    tokens[pos], at[pos] = tok, asof
            t = self._table = (table.uid, table.members, index_of, tokens, at)
        return t[3], t[4]

    def filter_table(self, cycle: CycleState, cands) -> FilterResult:
        """``filter`` on arrays (same loads, matches and outcome)."""
        p, now = self.params, cycle.now
        tokens, at = self._backlog_arrays(cands.table)
        tokens, at = cands.gather(tokens), cands.gather(at)
        queued = cands.col("num_waiting") * p.average_uncached_tokens
        left = np.where(now > at, tokens - p.prefill_tokens_per_second * (now - at), tokens)
        loads = np.where(left > queued, left, queued)
        lo, hi = loads.min(), loads.max()
        if hi - lo > p.imbalance_abs_tokens and hi > p.imbalance_ratio * lo:
            return self._verdict(None, Affinity.IMBALANCED,
                                 f"imbalanced: load {lo:.0f}..{hi:.0f} tokens; affinity skipped")
        matches = self._matches(cycle)
        matched = cands.positions(matches) if matches else None
        best = int(matched.max()) if matched is not None else 0
        if best < p.min_match_blocks:
            return self._verdict(None, Affinity.COLD, f"cold: best match {best} blocks")
        threshold = self.threshold_tokens
        warm = matched >= p.warm_fraction * best
        kept = warm & (loads <= threshold)
        for i in np.flatnonzero(kept).tolist():
            if cands.endpoint(i).at_capacity:
                kept[i] = False
        n_warm = int(warm.sum())
        if kept.any():
            n_kept = int(kept.sum())
            reason = f"warm: {n_kept} of {n_warm} warm endpoints under {threshold:.0f} tokens (best {best})"
            return self._verdict(kept, Affinity.WARM, reason)
        if p.release_when == "faster":
            req = cycle.request
            cost = loads + np.maximum(0, req.num_tokens - matched * req.block_size)
            usable = np.array([not cands.endpoint(i).at_capacity for i in range(len(cands))], dtype=bool)
            w, o = usable & warm, usable & ~warm
            if w.any():
                warm_best = float(cost[w].min())
                other_best = float(cost[o].min()) if o.any() else None
                if other_best is None or other_best + p.release_margin_seconds * p.prefill_tokens_per_second >= warm_best:
                    return self._hold(w, int(w.sum()), n_warm, warm_best, other_best)
        return self._verdict(None, Affinity.RELEASED,
                             f"released: all {n_warm} warm endpoints saturated (> {threshold:.0f} tokens)")

    def on_routed(self, event: RoutedEvent) -> None:
        req = event.request
        uncached = max(0, req.num_tokens - self.prefix.prior_matches(event).get(event.endpoint_id, 0) * req.block_size)
        ep = event.endpoint_id
        entry = self._backlog[ep] = (self.backlog(ep, event.now) + uncached, event.now)
        t = self._table
        if t is not None and (pos := t[2].get(ep)) is not None:
            t[3][pos], t[4][pos] = entry

    def remove_endpoint(self, endpoint_id: str) -> None:
        self._backlog.pop(endpoint_id, None)
        t = self._table
        if t is not None and (pos := t[2].get(endpoint_id)) is not None:
            t[3][pos] = t[4][pos] = 0.0

    def stats(self) -> dict:
        return {"outcomes": dict(self.outcomes), "held": self.held}
