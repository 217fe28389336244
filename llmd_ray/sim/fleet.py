"""A discrete-event SIMULATOR of a fleet of engine replicas (not a serving system).

It drives the real routing code (``llmd_ray.routing.scheduler.Scheduler``, one
per pool, with the same EndpointPickerConfig as the Serve router) and any
autoscaling policy through ``Policy.tick``; ``VariantPolicy`` wraps the
real ``VariantAutoscaler`` (the code the Ray Serve policy calls). Replicas
come from profiles (``replica.py``); P/D requests prefill on a prefill
replica, wait ``kv_transfer_ms`` and decode on a decode replica.

Pools are the optimizer's routes: each aggregated variant, each prefill ->
decode pair. A request goes to a pool with probability proportional to the
pool's ready capacity for its shape, then the pool's Scheduler picks the
replica from endpoint stats refreshed every ``stats_period_s`` (like the
Serve router) plus exact in-flight counts.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.topology.variant import Variant
from llmd_ray.autoscaling.demand import classify
from llmd_ray.autoscaling.optimizer import Optimizer
from llmd_ray.autoscaling.demand import DemandItem
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.scheduler import Scheduler
from llmd_ray.routing.table import EndpointTable
from llmd_ray.routing.types import Endpoint, RoutingRequest
from llmd_ray.sim.fastroute import FastRouter
from llmd_ray.sim.replica import SimReplica, SimRequest
from llmd_ray.sim.workload import SimJob, block_hashes, SynthText

ARRIVE, STEP, TICK, STATS, READY, HANDOFF, NEXT_TURN = range(7)


@dataclass(slots=True)
class ScaleEvent:
    t: float
    variant: str
    before: int
    after: int


@dataclass
class SimResult:
    requests: list[SimRequest]
    scale_events: list[ScaleEvent]
    cost: float  # $ over the run (replica-seconds x price, from start until removal)
    replica_timeline: list[tuple[float, dict[str, int]]]  # (t, ready replicas per variant)
    sim_seconds: float
    wall_seconds: float = 0.0
    routing_calls: int = 0
    extra: dict = field(default_factory=dict)


class Simulator:
    def __init__(self, config: AutoscalerConfig, profiles: dict, *, initial: dict[str, int],
                 router_config: dict | str | None = None, candidates: int | None = None, block_size: int = 16,
                 stats_period_s: float = 0.5, seed: int = 0, policy=None, tick_s: float = 1.0,
                 startup_s: float | None = None, instant_start: bool = True, router: str = "llmd",
                 table_routing: bool = True, fast_routing: bool = True):
        self.config = config
        self.classes = config.classes
        self.variants = {v.name: v for v in config.variants}
        self.profiles = {v.name: profiles[v.profile] for v in config.variants}
        self.optimizer = Optimizer(config, profiles)
        self.routes = self.optimizer.routes
        self.block_size = block_size
        self.candidates = candidates
        if router not in ("llmd", "pow2"):
            raise ValueError(f"router: 'llmd' (the plugin Scheduler) or 'pow2' (Ray's default), not {router!r}")
        self.router = router
        self.table_routing = table_routing  # False: the Scheduler's per-endpoint list path (same decisions, slower)
        self.fast_routing = fast_routing and table_routing  # FastRouter over the whole table (same decisions)
        self.stats_period_s = stats_period_s
        self.rng = random.Random(seed)
        self.policy = policy
        self.tick_s = tick_s
        self.startup_s = startup_s
        self.now = 0.0
        self.events: list = []
        self._seq = itertools.count()
        self.replicas: dict[str, list[SimReplica]] = {v: [] for v in self.variants}
        self._ready: dict[str, list[SimReplica]] = {v: [] for v in self.variants}
        self._ready_eps: dict[str, EndpointTable] = {v: EndpointTable(track_in_flight=True) for v in self.variants}
        self.all_replicas: list[SimReplica] = []
        self.endpoints: dict[str, Endpoint] = {}
        self.by_id: dict[str, SimReplica] = {}
        # One Scheduler per variant: the pool of replicas a router would see for that deployment.
        self.schedulers = {v: Scheduler.from_config(router_config, clock=lambda: self.now, seed=seed)
                           for v in self.variants}
        self.fast = {v: FastRouter(s) for v, s in self.schedulers.items()}
        self.done: list[SimRequest] = []
        self.scale_events: list[ScaleEvent] = []
        self.timeline: list[tuple[float, dict[str, int]]] = []
        self.routing_calls = 0
        self._cap_cache: dict[tuple, np.ndarray] = {}
        self._ids = itertools.count()
        for v, n in initial.items():
            for _ in range(n):
                self._add_replica(v, ready=instant_start)

    # ------------------------------------------------------------ events
    def push(self, t: float, kind: int, payload) -> None:
        heapq.heappush(self.events, (t, next(self._seq), kind, payload))

    def run(self, jobs: Sequence[SimJob], until: float | None = None) -> SimResult:
        import time as _time

        wall = _time.perf_counter()
        for job in jobs:
            self.push(job.arrival_s, NEXT_TURN, (job, 0, None))
        end = until if until is not None else (max((j.arrival_s for j in jobs), default=0.0) + 120.0)
        self.push(0.0, STATS, None)
        if self.policy is not None:
            self.push(self.tick_s, TICK, None)
        while self.events:
            t, _, kind, payload = heapq.heappop(self.events)
            if t > end:
                break
            self.now = t
            if kind == STEP:
                rep, epoch = payload
                if epoch == rep.epoch:
                    self._on_step(rep)
            elif kind == NEXT_TURN:
                self._on_turn(*payload)
            elif kind == HANDOFF:
                self._route_decode(payload)
            elif kind == STATS:
                self._refresh_stats()
                if t + self.stats_period_s <= end:
                    self.push(t + self.stats_period_s, STATS, None)
            elif kind == TICK:
                self._tick()
                if t + self.tick_s <= end:
                    self.push(t + self.tick_s, TICK, None)
            elif kind == READY:
                self._on_ready(payload)
        self.now = max(self.now, end) if until is not None else self.now
        cost = sum(self.variants[r.variant].cost_per_hour / 3600.0 * ((r.removed_at if r.removed_at is not None else self.now) - r.created)
                   for r in self.all_replicas)
        return SimResult(self.done, self.scale_events, cost, self.timeline, self.now,
                         _time.perf_counter() - wall, self.routing_calls)

    # ------------------------------------------------------------ replicas
    def _add_replica(self, variant: str, ready: bool = False) -> SimReplica:
        spec = self.variants[variant]
        prof = self.profiles[variant]
        start = 0.0 if ready else (self.startup_s if self.startup_s is not None else prof.startup_s)
        rep = SimReplica(f"{variant}-{next(self._ids)}", variant, spec.role, prof, self.now, self.now + start)
        self.all_replicas.append(rep)
        self.replicas[variant].append(rep)
        self.by_id[rep.id] = rep
        if start == 0:
            self._on_ready(rep)
        else:
            self.push(rep.ready_at, READY, rep)
        return rep

    def _on_ready(self, rep: SimReplica) -> None:
        if rep.draining:
            return
        self._ready[rep.variant].append(rep)
        ep = self.endpoints[rep.id] = Endpoint(rep.id, block_size=self.block_size,
                                               num_blocks=rep.cache_blocks, updated_at=self.now)
        self._ready_eps[rep.variant].add(ep)

    def ready(self, variant: str) -> list[SimReplica]:
        return self._ready[variant]

    def counts(self) -> dict[str, int]:
        return {v: len(rs) for v, rs in self.replicas.items()}

    def scale_to(self, variant: str, n: int) -> None:
        have = self.replicas[variant]
        if n == len(have):
            return
        self.scale_events.append(ScaleEvent(self.now, variant, len(have), n))
        while len(have) < n:
            self._add_replica(variant)
        while len(have) > n:  # drain the least loaded, not-yet-ready first
            rep = min(have, key=lambda r: (r.id in self.endpoints, r.in_flight))
            have.remove(rep)
            rep.draining = True
            ep = self.endpoints.pop(rep.id, None)
            if ep is not None:
                self._ready[variant].remove(rep)
                self._ready_eps[variant].remove(ep.id)
            self.schedulers[variant].remove_endpoint(rep.id)
            if rep.in_flight == 0:
                rep.removed_at = self.now

    # ------------------------------------------------------------- traffic
    def _on_turn(self, job: SimJob, turn: int, history: SynthText | None) -> None:
        t = job.turns[turn]
        if t.prompt is not None:
            prompt = t.prompt
        else:  # chat: system + history + this message
            prompt = (history if history is not None else (job.system or SynthText())) + t.user
        n_in = prompt.tokens
        req = SimRequest(next(self._ids), self.now, n_in, t.max_tokens, block_hashes(prompt, self.block_size),
                         classify(self.classes, n_in, t.max_tokens).name, job, turn, job.session_id)
        req.prompt = prompt
        route = self._pick_route(req)
        if route is None:
            req.finished = float("inf")
            self.done.append(req)
            return
        first = self.routes[route].variants[0]
        self._route(req, self.optimizer.variants[first].name)

    def _pick_route(self, req: SimRequest) -> int | None:
        key = (req.cls, req.input_tokens // 64, req.output_tokens // 16)
        caps = self._cap_cache.get(key)
        if caps is None:
            d = [DemandItem("k", req.cls, req.input_tokens, req.output_tokens, 0.0, 1.0)]
            c = self.optimizer.capacities(d)[:, 0, :]
            caps = self._cap_cache[key] = c
        weights = []
        for r, route in enumerate(self.routes):
            w = float("inf")
            for slot, vi in enumerate(route.variants):
                n = len(self.ready(self.optimizer.variants[vi].name))
                w = min(w, n * caps[r, slot])
            weights.append(w)
        total = sum(weights)
        if total <= 0:  # nothing ready that meets the SLO: any ready route
            weights = [min(len(self.ready(self.optimizer.variants[vi].name)) for vi in route.variants)
                       for route in self.routes]
            total = sum(weights)
            if total <= 0:
                return None
        x = self.rng.random() * total
        for r, w in enumerate(weights):
            x -= w
            if x < 0:
                return r
        return len(weights) - 1

    def _route(self, req: SimRequest, variant: str) -> None:
        eps = self._eps(variant)
        if not eps:
            req.finished = float("inf")
            self.done.append(req)
            return
        if self.router == "pow2":  # Ray Serve's default: the less loaded of two distinct random replicas, ties random
            a, b = self.rng.sample(eps, 2) if len(eps) > 1 else (eps[0], eps[0])
            self._deliver(req, (a if a.in_flight <= b.in_flight else b).id)
            return
        sched = self.schedulers[variant]
        rr = RoutingRequest(str(req.id), _Len(req.input_tokens), self.block_size, req.session_id,
                            _block_hashes=list(req.hashes))
        if self.candidates and len(eps) > self.candidates:
            eps = self._candidates(sched, rr, eps)
        self.routing_calls += 1
        fast = self.fast[variant]
        if self.fast_routing and fast.supported and isinstance(eps, EndpointTable):
            target = fast.schedule(rr, eps) or eps[0].id
            fast.on_routed(rr, target)
            self._deliver(req, target)
            return
        result = sched.schedule(rr, eps if self.table_routing or not isinstance(eps, EndpointTable) else list(eps))
        target = result.target or eps[0].id
        sched.on_routed(rr, target)
        self._deliver(req, target)

    def _deliver(self, req: SimRequest, target: str) -> None:
        rep = self.by_id[target]
        self._ready_eps[rep.variant].add_in_flight(target, 1)
        req.replica = target
        busy = rep.busy
        rep.enqueue(req)
        if not busy:
            self._kick(rep)
        elif rep.is_run:  # cut a decode run at the next step boundary
            t = rep.cut_run(self.now)
            if t is not None:
                rep.epoch += 1
                self.push(t, STEP, (rep, rep.epoch))

    def _eps(self, variant: str) -> EndpointTable:
        return self._ready_eps[variant]

    def _candidates(self, sched: Scheduler, rr: RoutingRequest, eps: list[Endpoint]) -> list[Endpoint]:
        """Prefix holders first, then a seeded sample (bounds the per-decision cost at fleet scale)."""
        k = self.candidates
        prefix = sched.plugin_of_type(PrefixCacheScorer)
        holders = prefix.index.match(rr.block_hashes) if prefix is not None else {}
        get = eps.get if isinstance(eps, EndpointTable) else {e.id: e for e in eps}.get
        chosen = [e for i, _ in sorted(holders.items(), key=lambda kv: -kv[1]) if (e := get(i)) is not None][: k // 2]
        ids = {e.id for e in chosen}
        rest = [e for e in self.rng.sample(eps, min(len(eps), k)) if e.id not in ids]
        return chosen + rest[: k - len(chosen)]

    def _route_decode(self, req: SimRequest) -> None:
        req.decode_only = True
        route_decode = req.decode_variant
        self._route(req, route_decode)

    def _kick(self, rep: SimReplica) -> None:
        nxt = rep.start_step(self.now)
        if nxt is None:
            rep.busy = False
            return
        rep.busy = True
        rep.is_run = nxt[1]
        rep.epoch += 1
        self.push(nxt[0], STEP, (rep, rep.epoch))

    def _on_step(self, rep: SimReplica) -> None:
        firsts, done = rep.finish_step(self.now)
        for req in done:
            ep = self.endpoints.get(rep.id)
            if ep is not None and ep.in_flight > 0:
                self._ready_eps[rep.variant].add_in_flight(rep.id, -1)
            self.schedulers[rep.variant].on_completed(str(req.id), rep.id)
            if rep.role == "prefill":
                self._handoff(req, rep)
            else:
                self._complete(req)
        if rep.draining and rep.in_flight == 0 and not rep.queue and not rep.decoding:
            rep.removed_at = self.now
            rep.busy = False
            return
        self._kick(rep)

    def _handoff(self, req: SimRequest, rep: SimReplica) -> None:
        pre = self.optimizer._index(rep.variant)
        decs = [self.optimizer.variants[r.variants[1]] for r in self.routes
                if r.kind == "pd" and r.variants[0] == pre and self.ready(self.optimizer.variants[r.variants[1]].name)]
        if not decs:
            req.finished = float("inf")
            self.done.append(req)
            return
        d = decs[0] if len(decs) == 1 else self.rng.choice(decs)
        req.decode_variant = d.name
        req.first_token = self.now + d.kv_transfer_ms / 1000.0  # the first token comes from the prefill
        self.push(self.now + d.kv_transfer_ms / 1000.0, HANDOFF, req)

    def _complete(self, req: SimRequest) -> None:
        self.done.append(req)
        job = req.job
        if job is not None and req.turn + 1 < len(job.turns):
            history = req.prompt + SynthText(((hash((job.index, req.turn, "out")), req.output_tokens),))
            self.push(self.now + job.turns[req.turn].think_after_s, NEXT_TURN, (job, req.turn + 1, history))

    # --------------------------------------------------------------- stats
    def _refresh_stats(self) -> None:
        for rid, ep in self.endpoints.items():
            rep = self.by_id[rid]
            ep.num_waiting, ep.num_running, ep.kv_cache_usage, ep.updated_at = (
                rep.num_waiting, rep.num_running, rep.kv_usage, self.now)
        for table in self._ready_eps.values():
            table.sync()
        self.timeline.append((self.now, {v: len(self.ready(v)) for v in self.variants}))

    def _tick(self) -> None:
        targets = self.policy.tick(self)
        for v, n in (targets or {}).items():
            spec: Variant = self.variants[v]
            self.scale_to(v, min(max(int(n), spec.min_replicas), spec.max_replicas))


class _Len:
    """Stands in for token ids: the router only needs their count (hashes are precomputed)."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n
