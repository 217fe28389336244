"""``LLMServer``: a Ray Serve deployment holding one vLLM engine.

Each replica pins its engine to cores derived from its rank, publishes its
engine stats to routers (``record_routing_stats``) and to autoscaling policies
(``record_autoscaling_stats``), exports vLLM-named metrics, and fails its
health check when the engine process dies so that Serve replaces it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from llmd_ray.autoscaling.demand import DemandRecorder
from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.engine import Engine
from llmd_ray.engine.types import GenerateChunk, GenerateRequest
from llmd_ray.serving.metrics import EngineMetrics
from llmd_ray.serving.replica import EngineReplica, offset_rank, replica_context

logger = logging.getLogger("ray.serve")  # Serve captures this logger into replica logs


def kv_events_endpoints() -> dict[str, str]:
    """Free ports on this node for the engine's KV-event PUB and replay sockets."""
    import ray

    ip = ray.util.get_node_ip_address()
    ports = []
    socks = []
    for _ in range(2):  # hold both until chosen so they differ
        s = socket.socket()
        s.bind(("", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return {"events": f"tcp://{ip}:{ports[0]}", "replay": f"tcp://{ip}:{ports[1]}"}


def kv_events_engine_args(endpoints: dict[str, str], replica_id: str) -> dict[str, Any]:
    """vLLM ``kv_events_config``: bind (wildcard host) the ports announced in ``endpoints``."""
    port = lambda url: url.rsplit(":", 1)[1]  # noqa: E731
    return {
        "kv_events_config": {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": f"tcp://*:{port(endpoints['events'])}",
            "replay_endpoint": f"tcp://*:{port(endpoints['replay'])}",
            "topic": replica_id,
        }
    }


class LLMServer(EngineReplica):
    """One engine per replica. Methods are called through a DeploymentHandle."""

    async def __init__(self, engine_config: EngineConfig | dict, kv_index: Any = None, rank_offset: int = 0):
        self.config = EngineConfig.model_validate(engine_config)
        self.rank = offset_rank(replica_context()[0], rank_offset)
        self.metrics = EngineMetrics(self.config.name)
        self.demand = DemandRecorder()  # per-shape arrivals for the variant autoscaler
        self.kv_events = kv_events_endpoints() if self.config.kv_events else None
        extra = kv_events_engine_args(self.kv_events, self.replica_id) if self.kv_events else None
        self.engine = await Engine.start(
            self.config, replica_rank=self.rank, observers=[self.metrics.observe], extra_engine_args=extra
        )
        if self.kv_events and kv_index is not None:
            await self._register_kv_events(kv_index)
        logger.info("LLMServer ready: %s", self.model_info())

    async def _register_kv_events(self, kv_index: Any) -> None:
        """Tell the app's KVIndex where this engine publishes (routers' syncs re-announce it too)."""
        try:
            await asyncio.wait_for(kv_index.register.remote(self.replica_id, self.kv_events), timeout=10)
        except Exception as e:  # the index learns the endpoint from routers' next sync
            logger.warning("LLMServer: KVIndex registration failed (%s); routers will announce this replica", e)

    @functools.cached_property
    def replica_id(self) -> str:
        """This Serve replica's unique id (subclasses with their own ``__init__`` get it too)."""
        return replica_context()[1]

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        """Stream output deltas (one final chunk when ``request.stream`` is false).

        Cancelling the call (client disconnect) aborts the engine request.
        """
        bucket = self.demand.on_arrival(len(request.prompt_token_ids), request.sampling.max_tokens)
        first = True
        async for chunk in self.engine.generate(request):
            if first:
                self.demand.on_cached(bucket, chunk.cached_tokens)
                first = False
            chunk.replica = self.replica_id
            yield chunk


    def stats_extra(self) -> dict:
        return {"kv_events": self.kv_events} if self.kv_events else {}
