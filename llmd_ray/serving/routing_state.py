"""``RoutingState``: the routing decisions routers share (a one-replica Serve deployment, issue 16).

With several ingress replicas each has its own router and its own approximate prefix index. Routers send
their decisions here in batches from a sync thread and take back the other routers' decisions, which they
merge into their own index off the routing path (``llmd_ray.routing.shared_decisions``). Like ``KVIndex``,
nothing here is on a routing path: a slow or restarted ``RoutingState`` only makes the sharing lag (a new
epoch: routers resend nothing and re-learn from the next decisions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmd_ray.routing.shared_decisions import DEFAULT_LOG, DEFAULT_REPLY, Decision, DecisionLog

ROUTING_STATE_DEPLOYMENT = "RoutingState"
IDLE_ORIGIN_S = 60.0  # a router not heard from this long (its ingress replica gone) leaves the stats


class RoutingState:
    """Pools routers' decisions; each router's ``exchange`` returns what the others decided."""

    def __init__(self, max_entries: int = DEFAULT_LOG, reply_limit: int = DEFAULT_REPLY):
        self.log = DecisionLog(max_entries=max_entries)
        self.reply_limit = reply_limit

    async def exchange(self, origin: str, decisions: Sequence[Decision], epoch: str | None, since: int,
                       gone: Sequence[str] = ()) -> dict[str, Any]:
        reply = self.log.exchange(origin, decisions, epoch, since, gone, self.reply_limit)
        self.log.forget_idle(IDLE_ORIGIN_S)
        return reply

    def stats(self) -> dict[str, Any]:
        return self.log.stats()


def routing_state_deployment():
    """The app's bound ``RoutingState`` deployment (0 CPUs, one replica)."""
    from ray import serve

    return serve.deployment(RoutingState).options(
        name=ROUTING_STATE_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000,
    ).bind()
