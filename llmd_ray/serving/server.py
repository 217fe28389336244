"""``LLMServer``: a Ray Serve deployment holding one vLLM engine.

Each replica pins its engine to cores derived from its rank, publishes its
engine stats to routers (``record_routing_stats``) and to autoscaling policies
(``record_autoscaling_stats``), exports vLLM-named metrics, and fails its
health check when the engine process dies so that Serve replaces it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from ray import serve

from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.engine import Engine
from llmd_ray.engine.types import GenerateChunk, GenerateRequest
from llmd_ray.serving.metrics import EngineMetrics

logger = logging.getLogger("ray.serve")  # Serve captures this logger into replica logs


def _replica_rank() -> int | None:
    try:
        rank = serve.get_replica_context().rank
    except Exception:  # not inside a Serve replica
        return None
    return getattr(rank, "rank", rank)


class LLMServer:
    """One engine per replica. Methods are called through a DeploymentHandle."""

    async def __init__(self, engine_config: EngineConfig | dict):
        self.config = EngineConfig.model_validate(engine_config)
        self.rank = _replica_rank()
        self.metrics = EngineMetrics(self.config.name)
        self.engine = await Engine.start(self.config, replica_rank=self.rank, observers=[self.metrics.observe])
        logger.info("LLMServer ready: %s", self.model_info())

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        """Stream output deltas (one final chunk when ``request.stream`` is false).

        Cancelling the call (client disconnect) aborts the engine request.
        """
        async for chunk in self.engine.generate(request):
            yield chunk

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    async def reset_prefix_cache(self) -> None:
        await self.engine.reset_prefix_cache()

    def model_info(self) -> dict:
        e = self.engine
        return {
            "name": self.config.name,
            "max_model_len": e.max_model_len,
            "block_size": e.block_size,
            "num_blocks": e.num_blocks,
            "device": e.device,
            "cpu_bind": e.cpu_bind,
            "startup_s": e.startup_s,
            "rank": self.rank,
        }

    def stats(self) -> dict:
        return {**self.engine.stats().as_dict(), "rank": self.rank}

    async def check_health(self) -> None:
        await self.engine.check_health()

    def record_routing_stats(self) -> dict:
        """Read by request routers (``RunningReplica.routing_stats``)."""
        return self.stats()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Read by autoscaling policies (``AutoscalingContext``)."""
        s = self.engine.stats()
        return {
            "num_waiting": float(s.num_waiting),
            "num_running": float(s.num_running),
            "kv_cache_usage": s.kv_cache_usage,
            "prefix_cache_hit_rate": s.prefix_cache_hit_rate,
        }

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:
                pass
