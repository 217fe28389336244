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


from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.topology.variant import Variant
from llmd_ray.autoscaling.demand import classify
from llmd_ray.autoscaling.optimizer import Optimizer
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.scheduler import Scheduler
from llmd_ray.routing.table import EndpointTable
from llmd_ray.routing.types import Endpoint
from llmd_ray.sim.fastroute import FastRouter
from llmd_ray.sim.fleet_routing import FleetRouting
from llmd_ray.sim.replica import SimReplica, SimRequest
from llmd_ray.sim.result import ScaleEvent, SimResult
from llmd_ray.sim.runindex import RunPrefixIndex
from llmd_ray.sim.workload import SimJob, block_hashes, SynthText

ARRIVE, STEP, TICK, STATS, READY, HANDOFF, NEXT_TURN = range(7)


class Simulator(FleetRouting):
    def __init__(self, config: AutoscalerConfig, profiles: dict, *, initial: dict[str, int],
                 router_config: dict | str | None = None, candidates: int | None = None, block_size: int = 16,
                 stats_period_s: float = 0.5, seed: int = 0, policy=None, tick_s: float = 1.0,
                 startup_s: float | None = None, instant_start: bool = True, router: str = "llmd",
                 table_routing: bool = True, fast_routing: bool = True, run_index: bool = True,
                 mirror_cache: bool = True):
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
        # The prefix index per run of blocks (same answers: llmd_ray.sim.runindex); with the llmd router it
        # also stands for the replicas' caches it mirrors (same requests, capacity and order): mirror_cache.
        self.prefix = {v: s.plugin_of_type(PrefixCacheScorer) for v, s in self.schedulers.items()}
        for p in self.prefix.values():
            if run_index and p is not None and not p.index.endpoints():
                p.index = RunPrefixIndex(p.index.default_capacity)
        self.mirror_cache = mirror_cache and router == "llmd"
        self.done: list[SimRequest] = []
        self.scale_events: list[ScaleEvent] = []
        self.timeline: list[tuple[float, dict[str, int]]] = []
        self.routing_calls = 0
        self._cap_cache: dict[tuple, list[list[float]]] = {}
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
        pre = t.prehashed if t.prompt is not None else None
        hashes = pre[1] if pre is not None and pre[0] == self.block_size else block_hashes(prompt, self.block_size)
        req = SimRequest(next(self._ids), self.now, n_in, t.max_tokens, hashes,
                         classify(self.classes, n_in, t.max_tokens).name, job, turn, job.session_id)
        req.prompt = prompt
        route = self._pick_route(req)
        if route is None:
            req.finished = float("inf")
            self.done.append(req)
            return
        first = self.routes[route].variants[0]
        self._route(req, self.optimizer.variants[first].name)

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
