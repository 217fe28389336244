"""The one explicit list of plugin types a config may name."""

from __future__ import annotations

from collections.abc import Sequence

from llmd_ray.routing.framework import Plugin
from llmd_ray.routing.plugins.active_request import ActiveRequestScorer
from llmd_ray.routing.plugins.kv_cache_utilization import KVCacheUtilizationScorer
from llmd_ray.routing.plugins.load_aware import LoadAwareScorer
from llmd_ray.routing.plugins.lora_affinity import LoraAffinityScorer
from llmd_ray.routing.plugins.max_score import MaxScorePicker
from llmd_ray.routing.plugins.no_hit_lru import NoHitLRUScorer
from llmd_ray.routing.plugins.precise_prefix_cache import PrecisePrefixCacheScorer
from llmd_ray.routing.plugins.predicted_latency import PredictedLatencyPicker
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.plugins.prefix_cache_affinity import PrefixCacheAffinityFilter
from llmd_ray.routing.plugins.queue import QueueScorer
from llmd_ray.routing.plugins.session_affinity import SessionAffinityScorer
from llmd_ray.routing.plugins.weighted_random import WeightedRandomPicker

PLUGIN_TYPES: tuple[type[Plugin], ...] = (
    # filters
    PrefixCacheAffinityFilter,
    # scorers
    PrefixCacheScorer,
    PrecisePrefixCacheScorer,
    QueueScorer,
    KVCacheUtilizationScorer,
    LoadAwareScorer,
    ActiveRequestScorer,
    SessionAffinityScorer,
    NoHitLRUScorer,
    LoraAffinityScorer,
    # pickers
    MaxScorePicker,
    WeightedRandomPicker,
    PredictedLatencyPicker,
)

# Types a config may still name, and why they are gone (the config error says so).
RETIRED_TYPES: dict[str, str] = {
    "role": "removed: under P/D each role is its own deployment with its own router, so no role filter is needed",
    "single-profile": "removed: a scheduler runs exactly one scheduling profile",
}


def types_by_name(types: Sequence[type[Plugin]] = PLUGIN_TYPES) -> dict[str, type[Plugin]]:
    out: dict[str, type[Plugin]] = {}
    for t in types:
        if t.type in out:
            raise ValueError(f"plugin type {t.type!r} registered twice")
        out[t.type] = t
    return out
