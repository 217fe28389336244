"""KV tier metrics: the connector's JSON counters and the replica's shared-tier counters as Ray metrics.

Names (Ray exports them with a ``ray_`` prefix), labelled ``model_name`` and ``tier``
(``memory``/``disk``/``shared``):

* ``llmd_kv_tier_hit_blocks`` / ``llmd_kv_tier_miss_blocks``: blocks past the engine's own hit found / not found
* ``llmd_kv_tier_loaded_bytes``, ``llmd_kv_tier_saved_bytes``, ``llmd_kv_tier_shared_fetched_bytes``,
  ``llmd_kv_tier_shared_uploaded_bytes``: bytes moved
* ``llmd_kv_tier_load_seconds_per_block``: mean load time of one block (all layers) into the paged cache
* ``llmd_kv_tier_evictions``; ``llmd_kv_tier_occupancy_bytes`` and ``llmd_kv_tier_budget_bytes`` per tier
"""

from __future__ import annotations

from typing import Any

from llmd_ray.observability.zero import declare

COUNTERS = {
    "hit_blocks": "Blocks after the engine's prefix hit loaded from a KV tier.",
    "miss_blocks": "Blocks after the engine's prefix hit no KV tier held.",
    "loaded_bytes": "KV bytes loaded from a tier into the paged cache.",
    "saved_bytes": "KV bytes saved from the paged cache into the local tier.",
    "shared_fetched_bytes": "KV bytes fetched from the shared tier (object store).",
    "shared_uploaded_bytes": "KV bytes uploaded to the shared tier (object store).",
    "evictions": "Blocks evicted from a tier.",
}
GAUGES = {
    "occupancy_bytes": "Bytes a KV tier holds.",
    "budget_bytes": "Byte budget of a KV tier.",
    "load_seconds_per_block": "Mean time to load one block (all layers) from the tiers.",
}


def flatten(conn: dict[str, Any], replica: dict[str, Any]) -> dict[tuple[str, str], float]:
    """Cumulative ``(metric, tier) -> value`` from the connector's and the replica's counters."""
    out: dict[tuple[str, str], float] = {}
    for tier in ("memory", "disk", "shared"):
        out[("hit_blocks", tier)] = conn.get(f"hit_blocks_{tier}", 0)
        out[("loaded_bytes", tier)] = conn.get(f"loaded_bytes_{tier}", 0)
    out[("miss_blocks", "")] = conn.get("miss_blocks", 0)
    out[("saved_bytes", "")] = conn.get("saved_bytes", 0)
    out[("shared_fetched_bytes", "shared")] = replica.get("fetched_bytes", 0)
    out[("shared_uploaded_bytes", "shared")] = replica.get("uploaded_bytes", 0)
    for tier, p in (conn.get("pools") or {}).items():
        out[("evictions", tier)] = p.get("evictions", 0)
        out[("occupancy_bytes", tier)] = p.get("used_bytes", 0)
        out[("budget_bytes", tier)] = p.get("budget_bytes", 0)
    blocks = conn.get("loaded_blocks", 0)
    out[("load_seconds_per_block", "")] = conn.get("load_seconds", 0.0) / blocks if blocks else 0.0
    return out


class TierMetrics:
    def __init__(self, model: str):
        from ray.util import metrics

        keys = ("model_name", "tier")
        self.model = model
        self._counters = {k: metrics.Counter(f"llmd_kv_tier_{k}", d, tag_keys=keys) for k, d in COUNTERS.items()}
        self._gauges = {k: metrics.Gauge(f"llmd_kv_tier_{k}", d, tag_keys=keys) for k, d in GAUGES.items()}
        self._last: dict[tuple[str, str], float] = {}

    def update(self, values: dict[tuple[str, str], float]) -> None:
        for (name, tier), v in values.items():
            tags = {"model_name": self.model, "tier": tier or "all"}
            if name in self._gauges:
                self._gauges[name].set(float(v), tags=tags)
                continue
            delta = v - self._last.get((name, tier), 0)
            if delta > 0:
                self._counters[name].inc(delta, tags=tags)
            elif (name, tier) not in self._last:
                declare(self._counters[name], [tags])  # exported at 0 until the first event
            self._last[(name, tier)] = v
