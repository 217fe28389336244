"""Fakes for tests and benchmarks: a settable clock, plugin and request builders.

Pure (no Ray, no vLLM), so the Ray router's tests can use them too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from llmd_ray.routing.framework import CycleState, Plugin, PluginHandle
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer, UsesPrefixIndex
from llmd_ray.routing.types import Endpoint, RoutingRequest


class FakeClock:
    def __init__(self, t: float = 1_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def make_handle(clock: FakeClock | None = None, seed: int = 0, precise_view: Any = None) -> PluginHandle:
    return PluginHandle(clock or FakeClock(), random.Random(seed), precise_view)


def make_plugin(
    cls: type[Plugin], handle: PluginHandle | None = None, name: str | None = None,
    prefix: PrefixCacheScorer | None = None, **params: Any
) -> Plugin:
    """Instantiate a plugin directly; ``params`` use the YAML (camelCase) or Python names.

    A plugin that reads the prefix index gets ``prefix`` (default: a new ``prefix-cache`` plugin)."""
    handle = handle or make_handle()
    plugin = cls(name or cls.type, cls.Parameters.model_validate(params), handle)
    if isinstance(plugin, UsesPrefixIndex):
        plugin.prefix = prefix or make_plugin(PrefixCacheScorer, handle)
    return plugin


def make_cycle(request: RoutingRequest, handle: PluginHandle) -> CycleState:
    return CycleState(request, handle.clock(), handle)


def make_request(
    blocks: Sequence[int], block_size: int = 4, tail: int = 0, request_id: str = "r", session_id: str | None = None
) -> RoutingRequest:
    """A request whose block i is filled with token ``blocks[i]`` (equal prefixes share blocks)."""
    tokens = [t for b in blocks for t in [b] * block_size] + [999_999] * tail
    return RoutingRequest(request_id, tokens, block_size, session_id)


def make_endpoints(n: int, **fields: Sequence[Any]) -> list[Endpoint]:
    """``n`` endpoints e0..e{n-1}; each keyword gives a per-endpoint list for that field."""
    return [Endpoint(f"e{i}", **{k: v[i] for k, v in fields.items()}) for i in range(n)]


def predictor_config() -> dict[str, Any]:
    """The default profile with the predicted-latency picker instead of max-score (microbench, tests)."""
    from llmd_ray.routing.config import default_config

    cfg = default_config()
    cfg["plugins"] = [p for p in cfg["plugins"] if p["type"] != "max-score"] + [{"type": "predicted-latency"}]
    prof = cfg["schedulingProfiles"][0]
    prof["plugins"] = [r for r in prof["plugins"] if r["pluginRef"] != "max-score"] + [{"pluginRef": "predicted-latency"}]
    return cfg
