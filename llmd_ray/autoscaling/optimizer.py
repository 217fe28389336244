"""The MILP: the cheapest integer replica count per variant that serves the demand within SLO.

Variables: ``n_v`` (integer replicas of variant v) and ``x_rk`` (requests/s of
demand bucket k sent down route r, continuous). A route is an aggregated
variant, or a prefill variant paired with a decode variant of the same P/D
group. ``s_k`` (unserved requests/s) keeps the problem feasible: it costs far
more than any replica, so it is non-zero only when the bounds or the budget
cannot serve the demand (status ``best_effort``).

    minimise   sum_v cost_v n_v + M sum_k s_k
    s.t.       sum_r x_rk + s_k = demand_k                       every bucket
               sum_{r uses v as agg} sum_k x_rk / cap_vk  <= n_v  every variant (per-replica capacity
               sum_{r uses v as P}   sum_k x_rk / pcap_vk <= n_v   within the class's TTFT/ITL, with
               sum_{r uses v as D}   sum_k x_rk / dcap_vk <= n_v   the queueing headroom)
               min_v <= n_v <= max_v;  sum_{v on acc a} k_v n_v <= budget_a   (limited mode)
               ratio_min n_D <= n_P <= ratio_max n_D                (optional, per P/D group)

Solved with HiGHS through ``scipy.optimize.milp`` (deterministic for equal input).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from llmd_ray.autoscaling.capacity import aggregated_capacity, decode_capacity, prefill_capacity
from llmd_ray.autoscaling.config import AutoscalerConfig, VariantSpec
from llmd_ray.autoscaling.demand import DemandItem
from llmd_ray.autoscaling.perf import Profile

# One thread: the policy runs inside the Serve controller, and HiGHS's worker threads
# spin on a loaded machine (measured here: 300+ ms per tiny solve with them, a few ms without).
_HIGHS_OPTIONS = {"presolve": True, "threads": 1, "mip_rel_gap": 1e-4}


@dataclass(slots=True)
class Route:
    name: str
    kind: str  # aggregated | pd
    variants: tuple[int, ...]  # (agg,) or (prefill, decode)


@dataclass(slots=True)
class Plan:
    """The optimizer's answer."""

    counts: dict[str, int]
    cost_per_hour: float
    status: str  # optimal | best_effort | infeasible_bounds | no_demand
    message: str
    unserved_rps: float = 0.0
    routes: dict[str, float] = field(default_factory=dict)  # route -> req/s assigned
    utilization: dict[str, float] = field(default_factory=dict)  # variant -> planned load / replicas
    binding: dict[str, str] = field(default_factory=dict)  # variant -> what holds its count
    alternatives: dict[str, float | None] = field(default_factory=dict)  # alternative -> cost (None: cannot serve)
    solve_ms: float = 0.0

    def explain(self) -> str:
        lines = [f"{self.status}: ${self.cost_per_hour:.2f}/h  {self.message}"]
        for v, n in self.counts.items():
            lines.append(f"  {v}: {n} replicas, planned load {self.utilization.get(v, 0):.0%}, {self.binding.get(v, '')}")
        for r, x in self.routes.items():
            if x > 1e-9:
                lines.append(f"  route {r}: {x:.2f} req/s")
        for alt, c in self.alternatives.items():
            lines.append(f"  alternative {alt}: " + ("cannot serve the demand" if c is None else f"${c:.2f}/h"))
        return "\n".join(lines)


class Optimizer:
    """Builds and solves the MILP for a fixed set of variants and profiles."""

    def __init__(self, config: AutoscalerConfig, profiles: Mapping[str, Profile]):
        self.config = config
        self.variants: list[VariantSpec] = list(config.variants)
        self.profiles = [profiles[v.profile] for v in self.variants]
        self.classes = {c.name: c for c in config.classes}
        self.routes: list[Route] = []
        for i, v in enumerate(self.variants):
            if v.role == "aggregated":
                self.routes.append(Route(v.name, "aggregated", (i,)))
        for i, p in enumerate(self.variants):
            for j, d in enumerate(self.variants):
                if p.role == "prefill" and d.role == "decode" and p.pd_group == d.pd_group:
                    self.routes.append(Route(f"{p.name}->{d.name}", "pd", (i, j)))

    # ------------------------------------------------------------ capacity
    def capacities(self, demand: Sequence[DemandItem]) -> np.ndarray:
        """cap[r, k, slot]: requests/s one replica of the route's slot-th variant serves of bucket k."""
        u = self.config.utilization_cap
        inp = np.array([d.input_tokens for d in demand], dtype=float)
        out = np.array([d.output_tokens for d in demand], dtype=float)
        unc = np.array([d.uncached_tokens for d in demand], dtype=float)
        ttft = np.array([self.classes[d.cls].ttft_ms for d in demand], dtype=float)
        itl = np.array([self.classes[d.cls].itl_ms for d in demand], dtype=float)
        cap = np.zeros((len(self.routes), len(demand), 2))
        cache: dict[tuple, np.ndarray] = {}
        cls = np.array([d.cls for d in demand])
        for r, route in enumerate(self.routes):
            if route.kind == "aggregated":
                (i,) = route.variants
                if ("a", i) not in cache:
                    own = aggregated_capacity(self.profiles[i], inp, out, unc, ttft, itl, u)
                    # Requests of every class it serves share its steps: all must meet the strictest
                    # targets among those classes (a long prefill stalls an interactive decode).
                    served = own > 0
                    if served.any() and len(set(cls[served])) > 1:
                        t_strict = np.where(served, ttft[served].min(), ttft)
                        i_strict = np.where(served, itl[served].min(), itl)
                        own = np.where(served, aggregated_capacity(self.profiles[i], inp, out, unc, t_strict,
                                                                   i_strict, u), 0.0)
                    cache["a", i] = own
                cap[r, :, 0] = cache["a", i]
            else:
                i, j = route.variants
                handoff = self.variants[j].kv_transfer_ms
                if ("p", i, handoff) not in cache:
                    cache["p", i, handoff] = prefill_capacity(self.profiles[i], unc, ttft - handoff, u)
                if ("d", j) not in cache:
                    cache["d", j] = decode_capacity(self.profiles[j], inp, out, itl, u)
                cap[r, :, 0], cap[r, :, 1] = cache["p", i, handoff], cache["d", j]
        return cap

    # --------------------------------------------------------------- solve
    def solve(self, demand: Sequence[DemandItem], *, fixed: Mapping[str, int] | None = None,
              routes: Sequence[int] | None = None, explain: bool = True,
              current: Mapping[str, int] | None = None) -> Plan:
        """The cheapest plan; ``fixed`` pins some counts (feasibility checks), ``routes`` restricts routes.

        With ``current``, each replica added or removed costs ``switch_cost`` x its hourly price in the
        objective, so near-ties between mixes do not flip the fleet back and forth.
        """
        t0 = time.perf_counter()
        V, K = len(self.variants), len(demand)
        allowed = list(range(len(self.routes))) if routes is None else list(routes)
        cap = self.capacities(demand) if K else np.zeros((len(self.routes), 0, 2))
        pairs = [(r, k) for r in allowed for k in range(K) if cap[r, k, 0] > 0 and (
            self.routes[r].kind == "aggregated" or cap[r, k, 1] > 0)]
        nx = len(pairs)
        sw = self.config.switch_cost if current is not None and fixed is None else 0.0
        nsw = V if sw else 0
        nvar = V + nx + K + nsw
        cost = np.array([v.cost_per_hour for v in self.variants], dtype=float)
        # Unserved demand costs more than serving it on the dearest route would.
        per_req = [cost[list(self.routes[r].variants)] / np.maximum(cap[r, k, :len(self.routes[r].variants)], 1e-9)
                   for r, k in pairs]
        big = 10.0 * (max((float(p.sum()) for p in per_req), default=0.0) + float(cost.max(initial=1.0)) + 1.0)
        c = np.concatenate([cost, np.zeros(nx), np.full(K, big), sw * cost[:nsw]])
        rows, cols, vals, lo, hi = [], [], [], [], []
        row = 0
        for k in range(K):  # demand rows
            for xi, (r, kk) in enumerate(pairs):
                if kk == k:
                    rows.append(row); cols.append(V + xi); vals.append(1.0)
            rows.append(row); cols.append(V + nx + k); vals.append(1.0)
            lo.append(demand[k].rate); hi.append(demand[k].rate)
            row += 1
        for v in range(V):  # capacity rows: load (in replicas) - n_v <= 0
            entries = []
            for xi, (r, k) in enumerate(pairs):
                for slot, vi in enumerate(self.routes[r].variants):
                    if vi == v:
                        entries.append((V + xi, 1.0 / cap[r, k, slot]))
            if not entries:
                continue
            for col, val in entries:
                rows.append(row); cols.append(col); vals.append(val)
            rows.append(row); cols.append(v); vals.append(-1.0)
            lo.append(-np.inf); hi.append(0.0)
            row += 1
        budget_rows: dict[str, int] = {}
        if self.config.budget:
            for acc, units in self.config.budget.accelerators.items():
                members = [v for v in range(V) if self.variants[v].accelerator == acc]
                if not members:
                    continue
                for v in members:
                    rows.append(row); cols.append(v); vals.append(float(self.variants[v].accelerators_per_replica))
                lo.append(-np.inf); hi.append(float(units))
                budget_rows[acc] = row
                row += 1
        for lo_r, sign in ((self.config.pd_ratio_min, 1), (self.config.pd_ratio_max, -1)):
            if lo_r is None:
                continue
            for group in sorted({v.pd_group for v in self.variants if v.role != "aggregated"}):
                P = [v for v in range(V) if self.variants[v].role == "prefill" and self.variants[v].pd_group == group]
                D = [v for v in range(V) if self.variants[v].role == "decode" and self.variants[v].pd_group == group]
                if not P or not D:
                    continue
                for v in P:
                    rows.append(row); cols.append(v); vals.append(float(sign))
                for v in D:
                    rows.append(row); cols.append(v); vals.append(-sign * lo_r)
                lo.append(0.0); hi.append(np.inf)
                row += 1
        for v in range(nsw):  # d_v >= |n_v - current_v|
            cur = float(current.get(self.variants[v].name, 0))
            for sign in (1.0, -1.0):
                rows += [row, row]; cols += [V + nx + K + v, v]; vals += [1.0, -sign]
                lo.append(-sign * cur); hi.append(np.inf)
                row += 1
        nlo = np.array([v.min_replicas for v in self.variants], dtype=float)
        nhi = np.array([v.max_replicas for v in self.variants], dtype=float)
        for name, n in (fixed or {}).items():
            i = self._index(name)
            nlo[i] = nhi[i] = n
        lb = np.concatenate([nlo, np.zeros(nx + K + nsw)])
        ub = np.concatenate([nhi, np.full(nx + K + nsw, np.inf)])
        integrality = np.concatenate([np.ones(V), np.zeros(nx + K + nsw)])
        A = coo_matrix((vals, (rows, cols)), shape=(row, nvar)).tocsr()
        with warnings.catch_warnings():  # HiGHS options scipy does not list are passed verbatim, with a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            res = milp(c, constraints=[LinearConstraint(A, lo, hi)] if row else None, integrality=integrality,
                       bounds=Bounds(lb, ub), options=dict(_HIGHS_OPTIONS))
        if res.x is None:
            counts = {v.name: int(nlo[i]) for i, v in enumerate(self.variants)}
            plan = Plan(counts, float(cost @ nlo), "infeasible_bounds",
                        f"no plan satisfies the bounds/budget/ratios ({res.message}); holding the minimums")
            plan.solve_ms = (time.perf_counter() - t0) * 1000
            return plan
        x = res.x
        n = np.round(x[:V]).astype(int)
        counts = {v.name: int(n[i]) for i, v in enumerate(self.variants)}
        unserved = float(x[V + nx:V + nx + K].sum())
        total = float(sum(d.rate for d in demand))
        plan = Plan(counts, float(cost @ n), "optimal", "", unserved)
        if K == 0 or total <= 0:
            plan.status, plan.message = "no_demand", "no traffic observed: minimum replicas"
        elif unserved > 1e-6 * max(total, 1.0):
            plan.status = "best_effort"
            short = sorted({demand[k].cls for k in range(K) if x[V + nx + k] > 1e-6})
            plan.message = (f"demand exceeds what the max replicas/budget can serve within SLO: {unserved:.2f} of "
                            f"{total:.2f} req/s unserved (classes: {', '.join(short)})")
        else:
            plan.message = f"serves {total:.2f} req/s within SLO"
        load = np.zeros(V)
        for xi, (r, k) in enumerate(pairs):
            xr = x[V + xi]
            plan.routes[self.routes[r].name] = plan.routes.get(self.routes[r].name, 0.0) + float(xr)
            for slot, vi in enumerate(self.routes[r].variants):
                load[vi] += xr / cap[r, k, slot]
        for i, v in enumerate(self.variants):
            plan.utilization[v.name] = float(load[i] / n[i]) if n[i] else 0.0
            plan.binding[v.name] = self._binding(i, int(n[i]), load[i], budget_rows, n)
        if explain and K and fixed is None and routes is None:
            plan.alternatives = self.alternatives(demand)
        plan.solve_ms = (time.perf_counter() - t0) * 1000
        return plan

    def _binding(self, i: int, n: int, load: float, budget_rows: dict[str, int], counts: np.ndarray) -> str:
        v = self.variants[i]
        acc = v.accelerator
        if acc in budget_rows:
            used = sum(int(counts[j]) * self.variants[j].accelerators_per_replica
                       for j in range(len(self.variants)) if self.variants[j].accelerator == acc)
            if used >= self.config.budget.accelerators[acc]:
                return f"budget: all {used} {acc} in use"
        if n == v.max_replicas and load >= n - 1e-6 and n > 0:
            return "max_replicas"
        if n > 0 and load > n - 1 + 1e-9:
            return "slo_capacity: one replica fewer would miss the SLO"
        if n == v.min_replicas:
            return "min_replicas"
        return "slack"

    def alternatives(self, demand: Sequence[DemandItem]) -> dict[str, float | None]:
        """Cost of serving everything on each single route alone, and on aggregated / P/D only."""
        out: dict[str, float | None] = {}
        groups = {r.name: [i] for i, r in enumerate(self.routes)}
        agg = [i for i, r in enumerate(self.routes) if r.kind == "aggregated"]
        pd = [i for i, r in enumerate(self.routes) if r.kind == "pd"]
        if agg and pd:
            groups["aggregated only"], groups["P/D only"] = agg, pd
        for name, rs in groups.items():
            p = self.solve(demand, routes=rs, explain=False)
            out[name] = p.cost_per_hour if p.status == "optimal" else None
        return out

    def serves(self, demand: Sequence[DemandItem], counts: Mapping[str, int]) -> bool:
        """Whether exactly these counts serve ``demand`` within SLO (no unserved traffic)."""
        plan = self.solve(demand, fixed=counts, explain=False)
        return plan.status in ("optimal", "no_demand")

    def _index(self, name: str) -> int:
        for i, v in enumerate(self.variants):
            if v.name == name:
                return i
        raise KeyError(f"unknown variant {name!r}")
