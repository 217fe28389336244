"""The simulator's routing half (a mixin of ``fleet.Simulator``): which pool a request goes to, then which
replica, through the real plugin ``Scheduler`` (or ``FastRouter``, its incremental twin) or Ray's pow-2.

Reads the simulator's state (``routes``, ``optimizer``, ``schedulers``, ``fast``, ``prefix``, ``by_id``,
ready endpoint tables, ``rng``) and hands the chosen replica to ``_deliver``; owns no state of its own.
"""

from __future__ import annotations

from llmd_ray.autoscaling.demand import DemandItem
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.scheduler import Scheduler
from llmd_ray.routing.table import EndpointTable
from llmd_ray.routing.types import Endpoint, RoutingRequest
from llmd_ray.sim.replica import SimRequest


class FleetRouting:
    """Routing methods of ``Simulator``; see the module docstring."""

    def _pick_route(self, req: SimRequest) -> int | None:
        key = (req.cls, req.input_tokens // 64, req.output_tokens // 16)
        caps = self._cap_cache.get(key)
        if caps is None:
            d = [DemandItem("k", req.cls, req.input_tokens, req.output_tokens, 0.0, 1.0)]
            caps = self._cap_cache[key] = self.optimizer.capacities(d)[:, 0, :].tolist()  # floats: the same sums
        weights = []
        for r, route in enumerate(self.routes):
            w = float("inf")
            for slot, vi in enumerate(route.variants):
                n = len(self.ready(self.optimizer.variants[vi].name))
                w = min(w, n * caps[r][slot])
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
                            _block_hashes=req.hashes)
        if self.candidates and len(eps) > self.candidates:
            eps = self._candidates(sched, rr, eps)
        self.routing_calls += 1
        fast = self.fast[variant]
        if self.fast_routing and fast.supported and isinstance(eps, EndpointTable):
            target = fast.schedule(rr, eps) or eps[0].id
            fast.on_routed(rr, target)
        else:
            result = sched.schedule(rr, eps if self.table_routing or not isinstance(eps, EndpointTable) else list(eps))
            target = result.target or eps[0].id
            sched.on_routed(rr, target)
        prefix = self.prefix[variant]
        if self.mirror_cache and prefix is not None and self.by_id[target].role != "decode":
            req.hit_blocks = prefix.routed_matches().get(target, 0)
        self._deliver(req, target)

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


class _Len:
    """Stands in for token ids: the router only needs their count (hashes are precomputed)."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n
