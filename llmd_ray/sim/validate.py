"""Simulate one benchmark config on N replicas of one profile: the figures to compare with a real run.

    from llmd_ray.sim import simulate_bench
    simulate_bench("bench/configs/shared_prefix_small.yaml", "cpu-1core-tiny-llama", replicas=2)
    # -> {"ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "output_tokens_per_s", "requests_per_s", ...}

Same seed, same lengths and arrival times as ``python -m llmd_ray.bench`` with
that config; routing uses the same scheduler config as the Serve router.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.perf import Profile, load_profile
from llmd_ray.bench.config import BenchConfig, load_config_file
from llmd_ray.sim.fleet import Simulator
from llmd_ray.sim.workload import sim_jobs


def simulate_bench(config: BenchConfig | dict | str | Path, profile: Profile | str, replicas: int = 2, *,
                   router_config: dict | str | None = None, rate: float | None = None, seed: int = 0) -> dict:
    if isinstance(config, (str, Path)):
        config = load_config_file(config)
    cfg = config if isinstance(config, BenchConfig) else BenchConfig.model_validate(config)
    prof = load_profile(profile) if isinstance(profile, str) else profile
    rate = rate if rate is not None else cfg.load.rate
    scaler = AutoscalerConfig.model_validate({"variants": [
        {"name": "v", "accelerator": prof.accelerator, "profile": prof.name, "cost_per_hour": 1.0,
         "min_replicas": replicas, "max_replicas": replicas}],
        "classes": [{"name": "default", "ttft_ms": 1e9, "itl_ms": 1e9}]})
    sim = Simulator(scaler, {prof.name: prof}, initial={"v": replicas}, router_config=router_config,
                    block_size=prof.block_size, seed=seed)
    jobs = sim_jobs(cfg, rate=rate)
    res = sim.run(jobs, until=max(j.arrival_s for j in jobs) + 3600)
    done = [r for r in res.requests if r.finished is not None and np.isfinite(r.finished)]
    ttft = np.array([r.first_token - r.arrival for r in done])
    tpot = np.array([(r.finished - r.first_token) / (r.output_tokens - 1) for r in done if r.output_tokens > 1])
    start = min(r.arrival for r in done)
    span = max(r.finished for r in done) - start
    out_tokens = sum(r.output_tokens for r in done)
    return {
        "simulated": True, "replicas": replicas, "profile": prof.name, "requests": len(done),
        "ttft_p50_s": float(np.percentile(ttft, 50)), "ttft_p90_s": float(np.percentile(ttft, 90)),
        "tpot_p50_s": float(np.percentile(tpot, 50)) if len(tpot) else None,
        "output_tokens_per_s": out_tokens / span, "requests_per_s": len(done) / span,
        "cache_hit_rate": sum(r.cached for r in done) / max(1, sum(r.input_tokens for r in done)),
        "duration_s": span,
    }
