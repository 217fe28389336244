"""The MILP against brute force, infeasible demand, explanations, capacity sanity."""

import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from llmd_ray.autoscaling.capacity import aggregated_capacity, decode_capacity, prefill_capacity
from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.demand import demand_from_shapes
from llmd_ray.autoscaling.optimizer import Optimizer
from llmd_ray.autoscaling.perf import Profile

QOS = {"classes": {"interactive": {"priority": 2, "ttft_objective_s": 0.8, "itl_objective_s": 0.06, "max_output_tokens": 300}, "batch": {"priority": 1, "ttft_objective_s": 6.0, "itl_objective_s": 0.2}}, "default_class": "batch"}


def prof(name, speed, kv=200_000):
    s = 1.0 / speed
    return Profile(name, "m", name, "estimated", 6 * s, 0.1 * s, 0.02 * s, 10 * s, 80 * s, 128, 4096, int(kv))


def served(opt, demand, counts):
    """Independent LP: can these counts carry the demand? (x_rk >= 0, capacity rows per variant)."""
    cap = opt.capacities(demand)
    V, K = len(opt.variants), len(demand)
    pairs = [(r, k) for r in range(len(opt.routes)) for k in range(K)
             if cap[r, k, 0] > 0 and (opt.routes[r].kind == "aggregated" or cap[r, k, 1] > 0)]
    if not pairs:
        return False
    A_eq = np.zeros((K, len(pairs)))
    A_ub = np.zeros((V, len(pairs)))
    for j, (r, k) in enumerate(pairs):
        A_eq[k, j] = 1
        for slot, v in enumerate(opt.routes[r].variants):
            A_ub[v, j] += 1 / cap[r, k, slot]
    b_ub = [counts[v.name] for v in opt.variants]
    res = linprog(np.zeros(len(pairs)), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[d.rate for d in demand], method="highs")
    return res.status == 0


def random_instance(seed):
    rng = np.random.default_rng(seed)
    profiles = {f"p{i}": prof(f"p{i}", rng.uniform(0.3, 3.0)) for i in range(3)}
    roles = rng.permutation(["aggregated", "prefill", "decode"]).tolist() if seed % 2 else ["aggregated"] * 3
    variants = [{"name": f"v{i}", "role": roles[i], "accelerator": f"A{i}", "profile": f"p{i}",
                 "cost_per_hour": float(rng.uniform(0.5, 5)), "max_replicas": 4,
                 "min_replicas": int(rng.integers(0, 2))} for i in range(3)]
    cfg = AutoscalerConfig.model_validate({"variants": variants, "qos": QOS})
    shapes = [(str(rng.choice(["interactive", "batch"])), float(rng.choice([200, 1000, 3000])),
               float(rng.choice([64, 256, 1024])), float(rng.uniform(0, 0.7)), float(rng.uniform(0.5, 8)))
              for _ in range(int(rng.integers(1, 4)))]
    return Optimizer(cfg, profiles), demand_from_shapes(shapes)


@pytest.mark.parametrize("seed", range(12))
def test_milp_matches_brute_force(seed):
    opt, demand = random_instance(seed)
    plan = opt.solve(demand, explain=False)
    best = None
    ranges = [range(v.min_replicas, v.max_replicas + 1) for v in opt.variants]
    for combo in itertools.product(*ranges):
        counts = {v.name: n for v, n in zip(opt.variants, combo)}
        cost = sum(v.cost_per_hour * n for v, n in zip(opt.variants, combo))
        if (best is None or cost < best - 1e-9) and served(opt, demand, counts):
            best = cost
    if best is None:
        assert plan.status == "best_effort" and plan.unserved_rps > 0
    else:
        assert plan.status == "optimal", plan.explain()
        assert plan.cost_per_hour == pytest.approx(best, abs=1e-6), plan.explain()
        assert served(opt, demand, plan.counts)


def test_infeasible_demand_gives_best_effort_and_a_clear_status():
    cfg = AutoscalerConfig.model_validate({"variants": [
        {"name": "small", "accelerator": "L4", "profile": "p", "cost_per_hour": 1.0, "max_replicas": 2}],
        "qos": QOS})
    opt = Optimizer(cfg, {"p": prof("p", 1.0)})
    demand = demand_from_shapes([("interactive", 1000, 128, 0.0, 500.0)])
    plan = opt.solve(demand)
    assert plan.status == "best_effort"
    assert plan.counts == {"small": 2}  # everything it has
    assert 0 < plan.unserved_rps < 500
    assert "unserved" in plan.message and "interactive" in plan.message
    assert plan.binding["small"] == "max_replicas"


def test_budget_limits_and_is_reported():
    cfg = AutoscalerConfig.model_validate({"variants": [
        {"name": "fast", "accelerator": "H100", "profile": "f", "cost_per_hour": 1.0, "max_replicas": 50},
        {"name": "slow", "accelerator": "L4", "profile": "s", "cost_per_hour": 1.0, "max_replicas": 50}],
        "qos": QOS, "budget": {"accelerators": {"H100": 1}}})
    opt = Optimizer(cfg, {"f": prof("f", 3.0), "s": prof("s", 1.0)})
    demand = demand_from_shapes([("interactive", 500, 128, 0.0, 200.0)])
    plan = opt.solve(demand)
    assert plan.status == "optimal"
    assert plan.counts["fast"] == 1 and plan.counts["slow"] > 0
    assert plan.binding["fast"].startswith("budget")
    assert set(plan.alternatives) == {"fast", "slow"}


def test_bounds_that_contradict_the_budget_hold_the_minimums():
    cfg = AutoscalerConfig.model_validate({"variants": [
        {"name": "a", "accelerator": "H100", "profile": "f", "cost_per_hour": 1.0, "min_replicas": 3}],
        "qos": QOS, "budget": {"accelerators": {"H100": 2}}})
    plan = Optimizer(cfg, {"f": prof("f", 1.0)}).solve(demand_from_shapes([("batch", 500, 128, 0.0, 1.0)]))
    assert plan.status == "infeasible_bounds" and plan.counts == {"a": 3}


def test_cheaper_aggregated_variant_takes_the_traffic_and_pd_balances():
    cfg = AutoscalerConfig.model_validate({"variants": [
        {"name": "agg", "accelerator": "A", "profile": "p", "cost_per_hour": 1.0, "max_replicas": 64},
        {"name": "pre", "role": "prefill", "accelerator": "A", "profile": "p", "cost_per_hour": 3.0, "max_replicas": 64},
        {"name": "dec", "role": "decode", "accelerator": "A", "profile": "p", "cost_per_hour": 3.0, "max_replicas": 64}],
        "qos": QOS})
    opt = Optimizer(cfg, {"p": prof("p", 1.0)})
    demand = demand_from_shapes([("batch", 2000, 512, 0.0, 5.0)])
    plan = opt.solve(demand)
    assert plan.counts["pre"] == plan.counts["dec"] == 0 and plan.counts["agg"] > 0
    only_pd = opt.solve(demand, routes=[1], explain=False)
    assert only_pd.counts["pre"] > 0 and only_pd.counts["dec"] > 0  # P and D sized together
    assert plan.alternatives["pre->dec"] == pytest.approx(only_pd.cost_per_hour)


def test_cache_hits_cut_prefill_capacity_needs():
    p = prof("p", 1.0)
    cold = prefill_capacity(p, np.array([4000.0]), np.array([2000.0]), 0.85)
    warm = prefill_capacity(p, np.array([4000.0 * 0.25]), np.array([2000.0]), 0.85)
    assert warm[0] > 3 * cold[0]


def test_capacity_respects_the_slo():
    p = prof("p", 1.0)
    inp, out = np.array([1000.0]), np.array([200.0])
    assert decode_capacity(p, inp, out, np.array([1.0]), 0.85)[0] == 0  # ITL below the batch-1 step: impossible
    loose = aggregated_capacity(p, inp, out, inp, 5000.0, 200.0, 0.85)[0]
    tight = aggregated_capacity(p, inp, out, inp, 800.0, 30.0, 0.85)[0]
    assert loose > tight > 0


def test_deterministic():
    opt, demand = random_instance(3)
    a, b = opt.solve(demand), opt.solve(demand)
    assert a.counts == b.counts and a.routes == b.routes and a.cost_per_hour == b.cost_per_hour
