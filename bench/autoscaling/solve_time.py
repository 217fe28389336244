"""MILP solve time for V variants x K demand buckets (random but seeded instances).

    .venv/bin/python bench/autoscaling/solve_time.py --variants 20 --buckets 50 --repeats 5

Reports wall and CPU milliseconds per solve (the capacity table included) for
``solve(demand)`` with no state (``cold``), for the policy's call (``policy``:
``current`` = the plan of the previous interval, whose demand was 5% lower, so
switch costs are on and the current fleet seeds the upper bound), the time of the
explanation's extra solves (``alternatives``, off the per-interval path), and the
machine's load average. Run it under ``nice -n 19`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.demand import demand_from_shapes, scale_demand
from llmd_ray.autoscaling.optimizer import Optimizer
from llmd_ray.autoscaling.perf import Profile


def instance(V: int, K: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    profiles, variants = {}, []
    roles = (["aggregated"] * (V // 2) + ["prefill"] * (V // 5) + ["decode"] * V)[:V]
    for i in range(V):
        s = rng.uniform(0.3, 3.0)
        profiles[f"p{i}"] = Profile(f"p{i}", "m", f"A{i % 4}", "estimated", 6 * s, 0.05 * s, 0.05 * s, 7 * s, 30 * s,
                                    256, 8192, int(400_000 / s))
        variants.append({"name": f"v{i}", "role": roles[i], "accelerator": f"A{i % 4}", "profile": f"p{i}",
                         "cost_per_hour": float(3.0 / s * rng.uniform(0.7, 1.3)), "max_replicas": 200,
                         "pd_group": f"g{i % 2}"})
    cfg = AutoscalerConfig.model_validate({
        "variants": variants, "budget": {"accelerators": {"A0": 300, "A1": 300}},
        "qos": {"classes": {"interactive": {"priority": 2, "ttft_objective_s": 0.8, "itl_objective_s": 0.06, "max_output_tokens": 512}, "batch": {"priority": 1, "ttft_objective_s": 5.0, "itl_objective_s": 0.15}}, "default_class": "batch"}})
    shapes = [("interactive" if o <= 512 else "batch", float(rng.choice([128, 512, 1024, 2048, 4096])), float(o),
               float(rng.uniform(0, 0.8)), float(rng.uniform(1, 20))) for o in rng.choice([64, 256, 512, 1024, 2048], size=K)]
    return Optimizer(cfg, profiles), demand_from_shapes(shapes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", type=int, default=20)
    ap.add_argument("--buckets", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench/results/autoscaling/solve_time.json")
    ap.add_argument("--no-alternatives", action="store_true", help="skip timing the explanation's extra solves")
    a = ap.parse_args()
    rows = []
    for seed in range(a.repeats):
        opt, demand = instance(a.variants, a.buckets, seed)
        opt.solve(demand, explain=False)  # first call: imports and caches
        t, c = time.perf_counter(), time.process_time()
        plan = opt.solve(demand, explain=False)
        wall, cpu = 1000 * (time.perf_counter() - t), 1000 * (time.process_time() - c)
        t = time.perf_counter()
        opt.capacities(demand)
        cap_ms = 1000 * (time.perf_counter() - t)
        prev = opt.solve(scale_demand(demand, 0.95), explain=False)
        t, c = time.perf_counter(), time.process_time()
        policy = opt.solve(demand, explain=False, current=prev.counts)
        p_wall, p_cpu = 1000 * (time.perf_counter() - t), 1000 * (time.process_time() - c)
        row = {"seed": seed, "wall_ms": round(wall, 1), "cpu_ms": round(cpu, 1), "capacity_table_ms": round(cap_ms, 1),
               "policy_wall_ms": round(p_wall, 1), "policy_cpu_ms": round(p_cpu, 1), "status": plan.status,
               "routes": len(opt.routes), "cost_per_hour": round(plan.cost_per_hour, 2),
               "policy_cost_per_hour": round(policy.cost_per_hour, 2)}
        if not a.no_alternatives:
            c = time.process_time()
            alts = opt.alternatives(demand)
            row["alternatives_cpu_ms"], row["alternatives"] = round(1000 * (time.process_time() - c), 1), len(alts)
        rows.append(row)
        print(rows[-1], flush=True)
    load = float(Path("/proc/loadavg").read_text().split()[0])
    out = {"variants": a.variants, "buckets": a.buckets, "runs": rows, "load_avg_1m": load,
           "median_wall_ms": statistics.median(r["wall_ms"] for r in rows),
           "median_cpu_ms": statistics.median(r["cpu_ms"] for r in rows),
           "max_cpu_ms": max(r["cpu_ms"] for r in rows),
           "median_policy_wall_ms": statistics.median(r["policy_wall_ms"] for r in rows),
           "median_policy_cpu_ms": statistics.median(r["policy_cpu_ms"] for r in rows),
           "max_policy_cpu_ms": max(r["policy_cpu_ms"] for r in rows),
           "median_alternatives_cpu_ms": statistics.median(r.get("alternatives_cpu_ms", 0.0) for r in rows),
           "machine": "2 shared cores (other engineers' jobs running)",
           "solver": "LP reduced-cost fixing (raised degenerate duals, switch-cost columns) + restricted MILP + scipy.optimize.milp (HiGHS 1.12), threads=1, mip_rel_gap=0"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}))


if __name__ == "__main__":
    main()
