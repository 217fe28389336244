"""Simulator speed: simulated seconds per wall second with the real plugin Scheduler over all endpoints.

    PYTHONHASHSEED=0 .venv/bin/python bench/sim/speed.py [--seconds 10] [--path fast|table|list] [--only big|small]

Two fleets, each one variant of H100 replicas (``h100-llama-3.1-8b`` profile)
behind the default EndpointPickerConfig (prefix-cache-affinity filter,
prefix-cache, queue, kv-cache-utilization, session-affinity, max-score):

* ``big``: 1,000 replicas at 10,000 req/s;
* ``small``: 100 replicas at 1,000 req/s.

Workload: the harness's shared-prefix generator (2,000 zipf groups, 800-token
system prompt + 200-token question, 200 tokens out), Poisson arrivals for
``--seconds`` simulated seconds. Timed: ``Simulator.run`` only (the workload is
built first, the prompts' block hashes included: ``prehash``; the build time is
reported apart), in wall and process-CPU seconds; ``speed`` = simulated
seconds / wall seconds (> 1: faster than real time). The host's load average and core
count are recorded before and after each run: a figure measured with the load
above the core count is not a clean measurement.

``--path``: ``fast`` (the simulator's default: ``llmd_ray.sim.fastroute``),
``table`` (the Scheduler's array path over an ``EndpointTable``) or ``list``
(its per-endpoint path). All three make the same decisions.
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
from llmd_ray.sim.workload import prehash, sim_jobs

FLEETS = {"big": (1000, 10_000.0), "small": (100, 1_000.0)}
OUT = Path(__file__).resolve().parents[1] / "results" / "sim" / "speed.json"


def load_avg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def run(replicas: int, qps: float, seconds: float, path: str = "fast", profile_lines: int = 0) -> dict:
    prof = load_profile("h100-llama-3.1-8b")
    cfg = AutoscalerConfig.model_validate({"variants": [
        {"name": "h100", "accelerator": "H100", "profile": prof.name, "cost_per_hour": 3.0,
         "min_replicas": replicas, "max_replicas": replicas}],
        "qos": {"classes": {"default": {"priority": 1, "ttft_objective_s": 2.0, "itl_objective_s": 0.1}},
                "default_class": "default"}})
    bench = {"seed": 0, "workload": {"type": "shared_prefix", "num_groups": 2000, "prompts_per_group": 20,
                                     "system_prompt_len": 800, "question_len": 200, "output_len": 200,
                                     "group_popularity": "zipf", "zipf_exponent": 0.8},
             "load": {"process": "poisson", "rate": qps, "duration_s": seconds}}
    t0 = time.perf_counter()
    jobs = sim_jobs(bench)
    prehash(jobs, 16)  # the prompts' block hashes, before the timed run
    build_s = time.perf_counter() - t0
    sim = Simulator(cfg, {prof.name: prof}, initial={"h100": replicas}, block_size=16,
                    table_routing=path != "list", fast_routing=path == "fast")
    load_before = load_avg()
    pr = cProfile.Profile() if profile_lines else None
    if pr:
        pr.enable()
    c0, w0 = time.process_time(), time.perf_counter()
    res = sim.run(jobs, until=seconds)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    if pr:
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(profile_lines)
    done = [r for r in res.requests if r.finished is not None]
    sched = sim.schedulers["h100"]
    return {
        "simulated": True, "replicas": replicas, "qps": qps, "sim_seconds": seconds, "path": path,
        "requests": len(jobs), "completed_in_window": len(done), "routing_calls": res.routing_calls,
        "fast_fallbacks": sim.fast["h100"].fallbacks if path == "fast" else None,
        "affinity_outcomes": sched.stats().get("prefix-cache-affinity", {}).get("outcomes"),
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "speed": round(seconds / wall, 3), "speed_cpu": round(seconds / cpu, 3),
        "us_per_request": round(1e6 * wall / max(1, len(jobs)), 1),
        "workload_build_s": round(build_s, 2), "profiled": bool(pr),
        "host": {"cores": os.cpu_count(), "load_avg_1m_before": load_before, "load_avg_1m_after": load_avg()},
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="simulated seconds per fleet")
    ap.add_argument("--path", choices=["fast", "table", "list"], default="fast")
    ap.add_argument("--only", choices=list(FLEETS), default=None)
    ap.add_argument("--profile", type=int, default=0, metavar="LINES", help="cProfile, print the top LINES")
    ap.add_argument("--out", default=str(OUT), help="JSON file; runs are appended ('' : do not write)")
    a = ap.parse_args(argv)
    rows = []
    for name, (replicas, qps) in FLEETS.items():
        if a.only and name != a.only:
            continue
        row = {"fleet": name, **run(replicas, qps, a.seconds, a.path, a.profile)}
        row["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.out:
        p = Path(a.out)
        p.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(p.read_text()) if p.exists() else []
        p.write_text(json.dumps(old + rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
