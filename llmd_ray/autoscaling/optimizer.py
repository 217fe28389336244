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

Built with numpy/scipy.sparse and solved exactly (``mip_rel_gap`` 0) by ``milp.solve``: HiGHS through
``scipy.optimize.milp`` after LP reduced-cost fixing (deterministic for equal input).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

from llmd_ray.autoscaling.capacity import aggregated_capacity, decode_capacity, prefill_capacity, stack_profiles
from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.topology.variant import Variant
from llmd_ray.autoscaling.demand import DemandItem
from llmd_ray.autoscaling.milp import Model, Moves
from llmd_ray.autoscaling.milp import solve as solve_milp
from llmd_ray.autoscaling.perf import Profile
from llmd_ray.autoscaling.plan import Plan, Route

__all__ = ["Optimizer", "Plan", "Route"]


@dataclass(slots=True)
class _Built:
    model: Model
    nx: int  # flow columns x_rk
    cost: np.ndarray  # per-variant hourly price
    nlo: np.ndarray  # count lower bounds (after ``fixed``)
    load: csr_matrix  # (V x nx) replicas of each variant one req/s of each flow column takes
    pair_route: np.ndarray  # flow column -> route index
    budget_accs: set[str]



class Optimizer:
    """Builds and solves the MILP for a fixed set of variants and profiles."""

    def __init__(self, config: AutoscalerConfig, profiles: Mapping[str, Profile]):
        self.config = config
        self.variants: list[Variant] = list(config.variants)
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
        cls = np.array([list(self.classes).index(d.cls) for d in demand], dtype=int)
        cap = np.zeros((len(self.routes), len(demand), 2))
        agg = sorted({r.variants[0] for r in self.routes if r.kind == "aggregated"})
        rows: dict[int, np.ndarray] = {}
        if agg:  # every aggregated variant in one vectorised bisection (elementwise: same numbers as one by one)
            K = len(demand)
            p = stack_profiles([self.profiles[i] for i in agg])
            own = aggregated_capacity(p, *(np.broadcast_to(a, (len(agg), K)) for a in (inp, out, unc, ttft, itl)), u)
            # Requests of every class it serves share its steps: all must meet the strictest
            # targets among those classes (a long prefill stalls an interactive decode).
            served = own > 0
            mixed = np.array([len(set(cls[s])) > 1 for s in served], dtype=bool)
            if mixed.any():
                s = served[mixed]
                t_strict = np.where(s, np.where(s, ttft, np.inf).min(axis=1, keepdims=True), ttft)
                i_strict = np.where(s, np.where(s, itl, np.inf).min(axis=1, keepdims=True), itl)
                q = stack_profiles([self.profiles[i] for i, m in zip(agg, mixed) if m])
                strict = aggregated_capacity(q, *(np.broadcast_to(a, s.shape) for a in (inp, out, unc)),
                                             t_strict, i_strict, u)
                own[mixed] = np.where(s, strict, 0.0)
            rows = dict(zip(agg, own))
        cache: dict[tuple, np.ndarray] = {}
        for r, route in enumerate(self.routes):
            if route.kind == "aggregated":
                cap[r, :, 0] = rows[route.variants[0]]
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
              current: Mapping[str, int] | None = None, fixing: bool | None = None) -> Plan:
        """The cheapest plan; ``fixed`` pins some counts (feasibility checks), ``routes`` restricts routes.

        With ``current``, each replica added or removed costs ``switch_cost`` x its hourly price in the
        objective, so near-ties between mixes do not flip the fleet back and forth (columns up_v/down_v,
        whose reduced costs also bound the search); the current counts are the fallback upper bound.
        ``fixing``: force (True) or skip (False) the reduced-cost fixing of ``milp.solve`` (default: by
        model size); the optimum is the same either way.
        """
        t0 = time.perf_counter()
        V, K = len(self.variants), len(demand)
        cap = self.capacities(demand) if K else np.zeros((len(self.routes), 0, 2))
        b = self._model(demand, cap, fixed, routes, current)
        nx, cost, nlo = b.nx, b.cost, b.nlo
        seeds = [np.array([current.get(v.name, 0) for v in self.variants], dtype=float)] if current else []
        sol = solve_milp(b.model, seeds, fixing)
        if sol.x is None:
            counts = {v.name: int(nlo[i]) for i, v in enumerate(self.variants)}
            plan = Plan(counts, float(cost @ nlo), "infeasible_bounds",
                        f"no plan satisfies the bounds/budget/ratios ({sol.message}); holding the minimums")
            plan.solve_ms = (time.perf_counter() - t0) * 1000
            return plan
        x = sol.x
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
        load = b.load @ x[V:V + nx]
        for r, xr in zip(b.pair_route.tolist(), x[V:V + nx]):
            name = self.routes[r].name
            plan.routes[name] = plan.routes.get(name, 0.0) + float(xr)
        for i, v in enumerate(self.variants):
            plan.utilization[v.name] = float(load[i] / n[i]) if n[i] else 0.0
            plan.binding[v.name] = self._binding(i, int(n[i]), load[i], b.budget_accs, n)
        if explain and K and fixed is None and routes is None:
            plan.alternatives = self.alternatives(demand)
        plan.solve_ms = (time.perf_counter() - t0) * 1000
        return plan

    def _model(self, demand: Sequence[DemandItem], cap: np.ndarray, fixed: Mapping[str, int] | None,
               routes: Sequence[int] | None, current: Mapping[str, int] | None) -> _Built:
        """The MILP as sparse matrices (columns: n_v, x_rk, s_k, switch up_v, down_v), built with numpy."""
        V, K = len(self.variants), len(demand)
        allowed = np.arange(len(self.routes)) if routes is None else np.asarray(list(routes), dtype=int)
        slots = np.array([[len(r.variants) for r in self.routes]], dtype=int).reshape(-1)[allowed]
        var = np.array([list(r.variants) + list(r.variants[:1]) * (2 - len(r.variants)) for r in self.routes],
                       dtype=int).reshape(-1, 2)[allowed]  # (route, slot) -> variant; 1-slot routes repeat
        c_all = cap[allowed]
        ok = (c_all[:, :, 0] > 0) & ((slots == 1)[:, None] | (c_all[:, :, 1] > 0))
        ri, ki = np.nonzero(ok)  # route-major, bucket-minor: the column order of x
        nx = len(ri)
        sw = self.config.switch_cost if current is not None and fixed is None else 0.0
        nsw = V if sw else 0  # up_v and down_v columns: replicas added / removed
        nvar = V + nx + K + 2 * nsw
        cost = np.array([v.cost_per_hour for v in self.variants], dtype=float)
        c0, c1 = c_all[ri, ki, 0], c_all[ri, ki, 1]
        two = slots[ri] == 2
        # Unserved demand costs more than serving it on the dearest route would.
        per_req = cost[var[ri, 0]] / np.maximum(c0, 1e-9) + np.where(two, cost[var[ri, 1]] / np.maximum(c1, 1e-9), 0.0)
        big = 10.0 * (float(per_req.max(initial=0.0)) + float(cost.max(initial=1.0)) + 1.0)
        c = np.concatenate([cost, np.zeros(nx), np.full(K, big), sw * cost[:nsw], sw * cost[:nsw]])
        xcol = V + np.arange(nx)
        # load matrix (V x nx): replicas of variant v one req/s of column x uses
        lv = np.concatenate([var[ri, 0], var[ri[two], 1]])
        lx = np.concatenate([np.arange(nx), np.flatnonzero(two)])
        lval = np.concatenate([1.0 / c0, 1.0 / c1[two]])
        load = coo_matrix((lval, (lv, lx)), shape=(V, nx)).tocsr()
        used = np.unique(lv)  # variants with a capacity row
        r_parts = [ki, np.arange(K)]
        c_parts = [xcol, V + nx + np.arange(K)]
        v_parts = [np.ones(nx), np.ones(K)]
        lo, hi = [np.array([d.rate for d in demand], dtype=float)], [np.array([d.rate for d in demand], dtype=float)]
        cap_row = np.full(V, 0, dtype=int)
        cap_row[used] = K + np.arange(len(used))
        r_parts += [cap_row[lv], K + np.arange(len(used))]
        c_parts += [V + lx, used]
        v_parts += [lval, -np.ones(len(used))]
        lo.append(np.full(len(used), -np.inf)); hi.append(np.zeros(len(used)))
        row = K + len(used)
        extra_r, extra_c, extra_v, extra_lo, extra_hi = [], [], [], [], []
        budget_accs: set[str] = set()
        if self.config.budget:
            for acc, units in self.config.budget.accelerators.items():
                members = [v for v in range(V) if self.variants[v].accelerator == acc]
                if not members:
                    continue
                for v in members:
                    extra_r.append(row); extra_c.append(v); extra_v.append(float(self.variants[v].accelerators_per_replica))
                extra_lo.append(-np.inf); extra_hi.append(float(units))
                budget_accs.add(acc)
                row += 1
        for ratio, sign in ((self.config.pd_ratio_min, 1), (self.config.pd_ratio_max, -1)):
            if ratio is None:
                continue
            for group in sorted({v.pd_group for v in self.variants if v.role != "aggregated"}):
                P = [v for v in range(V) if self.variants[v].role == "prefill" and self.variants[v].pd_group == group]
                D = [v for v in range(V) if self.variants[v].role == "decode" and self.variants[v].pd_group == group]
                if not P or not D:
                    continue
                for v in P:
                    extra_r.append(row); extra_c.append(v); extra_v.append(float(sign))
                for v in D:
                    extra_r.append(row); extra_c.append(v); extra_v.append(-sign * ratio)
                extra_lo.append(0.0); extra_hi.append(np.inf)
                row += 1
        cur = np.array([float(current.get(v.name, 0)) for v in self.variants]) if nsw else np.zeros(0)
        up, down = V + nx + K + np.arange(nsw), V + nx + K + nsw + np.arange(nsw)
        for v in range(nsw):  # n_v - up_v + down_v == current_v
            extra_r += [row] * 3; extra_c += [v, int(up[v]), int(down[v])]; extra_v += [1.0, -1.0, 1.0]
            extra_lo.append(cur[v]); extra_hi.append(cur[v])
            row += 1
        r_parts.append(np.array(extra_r, dtype=int)); c_parts.append(np.array(extra_c, dtype=int))
        v_parts.append(np.array(extra_v, dtype=float))
        lo.append(np.array(extra_lo, dtype=float)); hi.append(np.array(extra_hi, dtype=float))
        A = coo_matrix((np.concatenate(v_parts), (np.concatenate(r_parts), np.concatenate(c_parts))),
                       shape=(row, nvar)).tocsr()
        nlo = np.array([v.min_replicas for v in self.variants], dtype=float)
        nhi = np.array([v.max_replicas for v in self.variants], dtype=float)
        for name, n in (fixed or {}).items():
            i = self._index(name)
            nlo[i] = nhi[i] = n
        lb = np.concatenate([nlo, np.zeros(nx + K + 2 * nsw)])
        ub = np.concatenate([nhi, np.full(nx + K + 2 * nsw, np.inf)])
        uses = csr_matrix((np.ones(len(lv)), (lv, V + lx)), shape=(V, nvar))
        model = Model(c, A, np.concatenate(lo), np.concatenate(hi), lb, ub, V, uses, K + np.arange(len(used)), used,
                      Moves(up, down, cur) if nsw else None)
        return _Built(model, nx, cost, nlo, load, allowed[ri], budget_accs)

    def _binding(self, i: int, n: int, load: float, budget_accs: set[str], counts: np.ndarray) -> str:
        v = self.variants[i]
        acc = v.accelerator
        if acc in budget_accs:
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
