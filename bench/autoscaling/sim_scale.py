"""Simulator speed at fleet scale: N replicas at Q req/s, simulated seconds per wall second.

    .venv/bin/python bench/autoscaling/sim_scale.py --replicas 1000 --qps 10000 --seconds 10 [--candidates 32]

Routing runs the real Scheduler (default EndpointPickerConfig) over all
endpoints, or over ``--candidates`` of them (prefix holders + a seeded sample).
By default over an ``EndpointTable`` (array path); ``--list-routing`` uses the
per-endpoint path instead (same decisions), for a side-by-side ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from pathlib import Path

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.perf import load_profile
from llmd_ray.sim.fleet import Simulator
from llmd_ray.sim.workload import sim_jobs


def run(replicas: int, qps: float, seconds: float, candidates: int | None, profile: bool = False,
        router: str = "llmd", table_routing: bool = True) -> dict:
    prof = load_profile("h100-llama-3.1-8b")
    cfg = AutoscalerConfig.model_validate({"variants": [
        {"name": "h100", "accelerator": "H100", "profile": prof.name, "cost_per_hour": 3.0,
         "min_replicas": replicas, "max_replicas": replicas}],
        "qos": {"classes": {"default": {"priority": 1, "ttft_objective_s": 2.0, "itl_objective_s": 0.1}}, "default_class": "default"}})
    bench = {"seed": 0, "workload": {"type": "shared_prefix", "num_groups": 2000, "prompts_per_group": 20,
                                     "system_prompt_len": 800, "question_len": 200, "output_len": 200,
                                     "group_popularity": "zipf", "zipf_exponent": 0.8},
             "load": {"process": "poisson", "rate": qps, "duration_s": seconds}}
    t0 = time.perf_counter()
    jobs = sim_jobs(bench)
    gen_s = time.perf_counter() - t0
    sim = Simulator(cfg, {prof.name: prof}, initial={"h100": replicas}, candidates=candidates, block_size=16,
                    router=router, table_routing=table_routing)
    pr = cProfile.Profile() if profile else None
    if pr:
        pr.enable()
    c0 = time.process_time()
    res = sim.run(jobs, until=seconds)
    cpu = time.process_time() - c0
    if pr:
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(int(os.environ.get("SIM_SCALE_PROFILE_LINES", "25")))
    done = [r for r in res.requests if r.finished is not None]
    return {"simulated": True, "replicas": replicas, "qps": qps, "sim_seconds": seconds, "requests": len(jobs),
            "completed_in_window": len(done), "candidates": candidates, "router": router,
            "scheduler_path": "table" if table_routing else "list", "cpu_s": round(cpu, 2),
            "speed_vs_real_time_cpu": round(seconds / cpu, 3), "load_avg_1m": _load(), "workload_build_s": round(gen_s, 2),
            "wall_s": round(res.wall_seconds, 2), "speed_vs_real_time": round(seconds / res.wall_seconds, 3),
            "routing_calls": res.routing_calls,
            "us_per_request": round(1e6 * res.wall_seconds / max(1, len(jobs)), 1)}


def _load() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--qps", type=float, default=10000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--candidates", type=int, default=None)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--router", default="llmd", choices=["llmd", "pow2"])
    ap.add_argument("--list-routing", action="store_true",
                    help="the Scheduler's per-endpoint list path (as before EndpointTable), for A/B")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    r = run(a.replicas, a.qps, a.seconds, a.candidates, a.profile, a.router, not a.list_routing)
    print(json.dumps(r))
    if a.out:
        p = Path(a.out)
        rows = json.loads(p.read_text()) if p.exists() else []
        p.write_text(json.dumps(rows + [r], indent=1) + "\n")


if __name__ == "__main__":
    main()
