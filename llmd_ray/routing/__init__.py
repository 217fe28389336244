"""Prefix-cache-aware, load-aware routing, modelled on llm-d's inference scheduler.

Pure Python: no Ray or vLLM import here. The Ray Serve ``RequestRouter``
wraps :class:`Scheduler`: it builds :class:`Endpoint` s from replica stats and
a :class:`RoutingRequest` from the tokenized request, calls ``schedule`` for a
ranked list of endpoint ids, and reports the replica used with ``on_routed``.
"""

from llmd_ray.routing.config import DEFAULT_CONFIG_YAML, ConfigError, SchedulerConfig, default_config
from llmd_ray.routing.framework import (
    CycleState, Filter, FilterResult, Picker, Plugin, PluginHandle, PluginParameters, PreciseIndexView, RoutedEvent,
    SchedulingProfile, Scorer,
)
from llmd_ray.routing.hashing import block_hashes, hash_block_tokens, none_hash, to_event_hash
from llmd_ray.routing.index import ApproximatePrefixIndex
from llmd_ray.routing.registry import PLUGIN_TYPES
from llmd_ray.routing.result import Affinity, FilterOutcome, SchedulingResult
from llmd_ray.routing.scheduler import Scheduler
from llmd_ray.routing.types import Endpoint, RoutingRequest

__all__ = [
    "DEFAULT_CONFIG_YAML", "PLUGIN_TYPES", "Affinity", "ApproximatePrefixIndex", "ConfigError", "CycleState",
    "Endpoint", "Filter", "FilterOutcome", "FilterResult", "Picker", "Plugin", "PluginHandle", "PluginParameters",
    "PreciseIndexView", "RoutedEvent", "RoutingRequest", "Scheduler", "SchedulerConfig", "SchedulingProfile",
    "SchedulingResult", "Scorer", "block_hashes", "default_config", "hash_block_tokens", "none_hash",
    "to_event_hash",
]
