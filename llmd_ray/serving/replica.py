"""``EngineReplica``: what every Serve replica that holds one engine answers the same way.

``LLMServer`` (every role, with its features) holds one engine (``self.engine``)
started from an ``EngineConfig`` (``self.config``). Its handle methods for
control and observation live here: abort, prefix-cache reset, model info,
stats for routers, policies and the health check, and shutting the engine down
when the replica goes; ``info_extra`` and ``stats_extra`` add the features' fields.
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve


def replica_context() -> tuple[int | None, str]:
    """(rank, unique id) of the Serve replica this runs in; (None, ``pid-N``) outside Serve."""
    try:
        ctx = serve.get_replica_context()
    except Exception:  # not inside a Serve replica
        return None, f"pid-{os.getpid()}"
    rank = getattr(ctx.rank, "rank", ctx.rank)
    return rank, ctx.replica_id.unique_id


def offset_rank(rank: int | None, offset: int) -> int | None:
    """A replica's rank among all engine replicas of the app (variants' ranks follow the earlier variants')."""
    return None if rank is None else rank + offset


class EngineReplica:
    """Mixin for deployments with ``self.engine``, ``self.config`` and ``self.rank``."""

    engine: Any
    config: Any
    rank: int | None
    demand: Any = None  # a DemandRecorder where the replica sees every request (aggregated, decode)

    def info_extra(self) -> dict:
        return {}

    def stats_extra(self) -> dict:
        return {}

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    async def reset_prefix_cache(self) -> None:
        await self.engine.reset_prefix_cache()

    def model_info(self) -> dict:
        e = self.engine
        return {
            "name": self.config.name, "max_model_len": e.max_model_len, "block_size": e.block_size,
            "num_blocks": e.num_blocks, "device": e.device, "cpu_bind": e.cpu_bind, "startup_s": e.startup_s,
            "rank": self.rank, **self.info_extra(),
        }

    def stats(self) -> dict:
        return {**self.engine.stats().as_dict(), "rank": self.rank, **self.stats_extra()}

    def record_routing_stats(self) -> dict:
        """Read by request routers (``RunningReplica.routing_stats``), with the latest requests' latencies."""
        log = getattr(self.engine, "latency", None)  # llmd_ray.engine.latency.LatencyLog; fakes may have none
        return {**self.stats(), **(log.export() if log is not None else {})}

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Read by autoscaling policies (``AutoscalingContext.raw_metrics``): the engine's load and, where this
        replica sees every request of its variant (aggregated, decode), the per-shape demand counters."""
        s = self.engine.stats()
        return {
            "num_waiting": float(s.num_waiting),
            "num_running": float(s.num_running),
            "kv_cache_usage": s.kv_cache_usage,
            "prefix_cache_hit_rate": s.prefix_cache_hit_rate,
            **(self.demand.metrics() if self.demand is not None else {}),  # llmd_ray.autoscaling.demand
        }

    async def check_health(self) -> None:
        await self.engine.check_health()

    def shutdown(self) -> None:
        """Stop the engine (and whatever ``release`` frees); never raises."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:
                pass
        self.release()

    def release(self) -> None:
        """Other resources a subclass frees at shutdown."""

    def __del__(self):
        self.shutdown()
