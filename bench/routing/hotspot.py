"""Hot-spot study: one prefix group takes 70% of the traffic.

    python bench/routing/hotspot.py --out bench/results/routing/hotspot

Runs bench/routing/hotspot.yaml against two routers, alternating phases in one
run on the same machine: ``release`` (the default "sticky until saturated"
affinity filter, serve_llmd_pressure.yaml) and ``sticky`` (the same profile
with saturation release and the imbalance gate switched off,
serve_llmd_sticky_pressure.yaml). While the load runs, every replica's
``stats`` (engine waiting + running requests, prompt tokens queried) is
sampled every 0.25 s through the deployment handle, so the report gives per
replica: time-averaged queue, the share of prompt tokens it prefilled, and the
ratio of the busiest replica's queue to the mean (p50/p95/max over samples),
next to the harness's TTFT/goodput for each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = {"release": "bench/routing/serve_llmd_pressure.yaml", "sticky": "bench/routing/serve_llmd_sticky_pressure.yaml"}


async def _sample(handle, replicas: int, stop: asyncio.Event, samples: list) -> None:
    while not stop.is_set():
        seen: dict[int, dict] = {}
        for _ in range(4 * replicas):
            try:
                s = await asyncio.wait_for(handle.stats.remote(), 2.0)
            except Exception:
                continue
            seen[s["rank"]] = s
            if len(seen) == replicas:
                break
        if len(seen) == replicas:
            samples.append({"t": time.time(), **{str(r): {"queue": s["num_waiting"] + s["num_running"],
                                                         "queries": s["prefix_cache_queries"]} for r, s in seen.items()}})
        await asyncio.sleep(0.25)


def _analyse(samples: list, replicas: int) -> dict:
    ranks = [str(r) for r in range(replicas)]
    ratios = []
    for s in samples:
        qs = [s[r]["queue"] for r in ranks]
        mean = statistics.fmean(qs)
        if mean > 0:
            ratios.append(max(qs) / mean)
    tokens = {r: samples[-1][r]["queries"] - samples[0][r]["queries"] for r in ranks} if samples else {}
    total = sum(tokens.values()) or 1
    ratios.sort()
    return {
        "samples": len(samples),
        "mean_queue": {r: statistics.fmean(s[r]["queue"] for s in samples) for r in ranks} if samples else {},
        "prefill_token_share": {r: tokens[r] / total for r in ranks},
        "max_over_mean_queue": {"p50": ratios[len(ratios) // 2] if ratios else None,
                                "p95": ratios[int(0.95 * (len(ratios) - 1))] if ratios else None,
                                "max": ratios[-1] if ratios else None},
    }


async def _phase(label: str, config: str, out: Path, port: int, salt: int) -> dict:
    import ray
    from ray import serve

    from llmd_ray import build_app

    args = yaml.safe_load((ROOT / config).read_text())["applications"][0]["args"]
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="default", route_prefix="/")
    handle = serve.get_deployment_handle("LLMServer", app_name="default")
    samples: list = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(handle, args["num_replicas"], stop, samples))
    cmd = [sys.executable, "-m", "llmd_ray.bench", "run", "bench/routing/hotspot.yaml", "--base-url",
           f"http://127.0.0.1:{port}", "--out", str(out / f"{label}_{salt}"), "--no-progress"]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT)
    await proc.wait()
    stop.set()
    await sampler
    serve.shutdown()
    ray.shutdown()
    result = json.loads((out / f"{label}_{salt}" / "result.json").read_text())
    summary = result.get("summary", result)
    return {"label": label, "phase": salt, "routing": _analyse(samples, args["num_replicas"]),
            "ttft_p50_ms": summary["ttft_ms"]["p50"], "ttft_p99_ms": summary["ttft_ms"]["p99"],
            "goodput": summary.get("goodput"), "cache_hit_rate": summary.get("cache_hit_rate")}


def _systems(specs: list[str] | None) -> dict[str, str]:
    """``LABEL=CONFIG`` pairs from ``--system``; none: the two default systems."""
    if not specs:
        return SYSTEMS
    return dict(spec.split("=", 1) for spec in specs)


async def main(a) -> list:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(a.phases):
        for label, config in _systems(a.system).items():
            rows.append(await _phase(label, config, out, a.port, i))
            print(json.dumps(rows[-1]), file=sys.stderr)
    (out / "hotspot.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/routing/hotspot")
    ap.add_argument("--phases", type=int, default=2)
    ap.add_argument("--port", type=int, default=8600)
    ap.add_argument("--system", action="append", metavar="LABEL=CONFIG",
                    help="a system to run (repeat); default: release and sticky")
    asyncio.run(main(ap.parse_args()))
