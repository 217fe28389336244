"""The fast exact solve (reduced-cost fixing, vectorised model) against the plain full MILP."""

import numpy as np
import pytest

from llmd_ray.autoscaling import milp
from llmd_ray.autoscaling.capacity import aggregated_capacity
from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.demand import demand_from_shapes
from llmd_ray.autoscaling.optimizer import Optimizer
from llmd_ray.autoscaling.perf import Profile

QOS = {"classes": {"interactive": {"priority": 2, "ttft_objective_s": 0.8, "itl_objective_s": 0.06, "max_output_tokens": 512}, "batch": {"priority": 1, "ttft_objective_s": 5.0, "itl_objective_s": 0.15}}, "default_class": "batch"}


def instance(seed, V=8, K=12, budget=True, ratio=False):
    """Near-tied variants (cost ~ 1/speed), P/D and aggregated: the hard case for the MILP."""
    rng = np.random.default_rng(seed)
    profiles, variants = {}, []
    roles = (["aggregated"] * (V // 2) + ["prefill"] * max(1, V // 5) + ["decode"] * V)[:V]
    for i in range(V):
        s = rng.uniform(0.3, 3.0)
        profiles[f"p{i}"] = Profile(f"p{i}", "m", f"A{i % 3}", "estimated", 6 * s, 0.05 * s, 0.05 * s, 7 * s, 30 * s,
                                    256, 8192, int(400_000 / s))
        variants.append({"name": f"v{i}", "role": roles[i], "accelerator": f"A{i % 3}", "profile": f"p{i}",
                         "cost_per_hour": float(3.0 / s * rng.uniform(0.7, 1.3)), "max_replicas": 60,
                         "min_replicas": int(rng.integers(0, 2)), "pd_group": f"g{i % 2}",
                         "kv_transfer_ms": float(rng.choice([0.0, 20.0]))})
    cfg = {"variants": variants, "qos": QOS}
    if budget:
        cfg["budget"] = {"accelerators": {"A0": 40}}
    if ratio:
        cfg["pd_ratio_min"], cfg["pd_ratio_max"] = 0.25, 4.0
    shapes = [("interactive" if o <= 512 else "batch", float(rng.choice([128, 1024, 4096])), float(o),
               float(rng.uniform(0, 0.8)), float(rng.uniform(1, 20))) for o in rng.choice([64, 512, 2048], size=K)]
    return Optimizer(AutoscalerConfig.model_validate(cfg), profiles), demand_from_shapes(shapes)


@pytest.mark.parametrize("seed", range(10))
def test_fixing_gives_the_same_optimum_as_the_full_milp(seed):
    opt, demand = instance(seed, ratio=seed % 3 == 0)
    fast = opt.solve(demand, explain=False, fixing=True)
    full = opt.solve(demand, explain=False, fixing=False)
    assert fast.status == full.status
    assert fast.cost_per_hour == pytest.approx(full.cost_per_hour, abs=1e-6)
    assert fast.unserved_rps == pytest.approx(full.unserved_rps, abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_fixing_with_switch_costs_and_an_incumbent(seed):
    """The policy's call: ``current`` adds switch costs and seeds the upper bound."""
    opt, demand = instance(100 + seed)
    prev = opt.solve(demand_from_shapes([(d.cls, d.input_tokens, d.output_tokens, d.hit_rate, d.rate * 0.9)
                                         for d in demand]), explain=False)
    for current in (prev.counts, {v.name: v.max_replicas for v in opt.variants}):
        fast = opt.solve(demand, explain=False, current=current, fixing=True)
        full = opt.solve(demand, explain=False, current=current, fixing=False)
        objective = lambda p: p.cost_per_hour + opt.config.switch_cost * sum(  # noqa: E731
            v.cost_per_hour * abs(p.counts[v.name] - current[v.name]) for v in opt.variants)
        assert objective(fast) == pytest.approx(objective(full), abs=1e-6)


def test_an_unreachable_budget_is_reported_by_both_paths():
    opt, demand = instance(7)
    opt.config.budget.accelerators["A0"] = 0
    for v in opt.variants:
        if v.accelerator == "A0":
            v.min_replicas = 1
    assert opt.solve(demand, fixing=True).status == opt.solve(demand, fixing=False).status == "infeasible_bounds"


def test_large_instance_takes_the_fixing_path_and_fixes_counts():
    opt, demand = instance(3, V=20, K=50)
    b = opt._model(demand, opt.capacities(demand), None, None, None)
    assert len(b.model.c) >= milp.FIXING_MIN_COLUMNS
    sol = milp.solve(b.model)
    assert sol.path in ("fixed", "restricted")
    assert sol.free_counts < len(opt.variants)  # the fixing removed some counts from the search
    assert sol.lp_bound <= float(b.model.c @ sol.x) + 1e-6


def test_vectorised_capacities_equal_one_variant_at_a_time():
    opt, demand = instance(5, V=12, K=30)
    cap = opt.capacities(demand)
    inp = np.array([d.input_tokens for d in demand])
    out = np.array([d.output_tokens for d in demand])
    unc = np.array([d.uncached_tokens for d in demand])
    cls = [d.cls for d in demand]
    ttft = np.array([opt.classes[c].ttft_ms for c in cls])
    itl = np.array([opt.classes[c].itl_ms for c in cls])
    u = opt.config.utilization_cap
    checked = 0
    for r, route in enumerate(opt.routes):
        if route.kind != "aggregated":
            continue
        p = opt.profiles[route.variants[0]]
        own = aggregated_capacity(p, inp, out, unc, ttft, itl, u)
        served = own > 0
        if len({cls[k] for k in np.flatnonzero(served)}) > 1:
            own = np.where(served, aggregated_capacity(p, inp, out, unc, np.where(served, ttft[served].min(), ttft),
                                                       np.where(served, itl[served].min(), itl), u), 0.0)
        assert np.array_equal(cap[r, :, 0], own)  # bit for bit
        checked += 1
    assert checked == 6


@pytest.mark.parametrize("policy", [False, True])
def test_raised_duals_keep_the_bound_and_the_box_keeps_the_optimum(policy):
    """Step 1's dual raise must stay dual-feasible (bound = z_lp) and step 3's box must contain the optimum."""
    opt, demand = instance(3, V=20, K=50)
    current = opt.solve(demand_from_shapes([(d.cls, d.input_tokens, d.output_tokens, d.hit_rate, d.rate * 0.9)
                                            for d in demand]), explain=False).counts if policy else None
    m = opt._model(demand, opt.capacities(demand), None, None, current).model
    assert (m.moves is not None) == policy
    lp = milp._lp(m, m.lb, m.ub)
    d, bound = milp._duals(m, lp)
    assert bound == pytest.approx(lp.fun, rel=1e-9)
    raw = lp.lower.marginals + lp.upper.marginals
    k = m.n_int
    assert np.all(d[:k] >= raw[:k] - 1e-9)  # raising a capacity dual only adds to its count's reduced cost
    if policy:  # here HiGHS's duals leave idle counts unpriced, and the raise prices them
        assert np.sum(d[:k] > 1e-7) > np.sum(raw[:k] > 1e-7)
    full = milp._milp(m, m.lb, m.ub)
    lb, ub = milp._tighten(m, d, float(full.fun) - bound + 1e-6)
    n = np.round(full.x[:k])
    assert np.all(lb[:k] <= n) and np.all(n <= ub[:k])
    assert np.sum(lb[:k] < ub[:k]) < k  # and it still fixes counts
