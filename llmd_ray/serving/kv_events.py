"""``KVEvents``: the replica feature that publishes the engine's KV-cache events for the precise index.

The engine binds a ZMQ PUB socket (and a replay socket) on this node's address; the feature announces
the endpoints to the app's ``KVIndex`` deployment (routers' syncs announce them too) and in the
replica's stats, so routers mirror what each engine really caches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llmd_ray.host import free_ports
from llmd_ray.serving.feature import Feature

logger = logging.getLogger("ray.serve")


def kv_events_endpoints() -> dict[str, str]:
    """Free ports on this node for the engine's KV-event PUB and replay sockets."""
    import ray

    ip = ray.util.get_node_ip_address()
    ports = free_ports(2)
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


class KVEvents(Feature):
    name = "kv_events"

    def __init__(self, replica_id: str, kv_index: Any = None):
        self.replica_id = replica_id
        self.kv_index = kv_index
        self.endpoints = kv_events_endpoints()

    def engine_args(self) -> dict[str, Any]:
        return kv_events_engine_args(self.endpoints, self.replica_id)

    async def started(self, replica: Any) -> None:
        """Tell the app's KVIndex where this engine publishes (routers' syncs re-announce it too)."""
        if self.kv_index is None:
            return
        try:
            await asyncio.wait_for(self.kv_index.register.remote(self.replica_id, self.endpoints), timeout=10)
        except Exception as e:  # the index learns the endpoint from routers' next sync
            logger.warning("KV events: KVIndex registration failed (%s); routers will announce this replica", e)

    def stats(self) -> dict[str, Any]:
        return {"kv_events": self.endpoints}
