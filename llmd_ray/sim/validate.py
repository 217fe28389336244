"""Simulate one benchmark config on N replicas of one profile: the figures to compare with a real run.

    from llmd_ray.sim import simulate_bench
    simulate_bench("bench/configs/shared_prefix_small.yaml", "cpu-1core-tiny-llama", replicas=2)
    # -> {"ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "output_tokens_per_s", "requests_per_s", ...}

Same seed, same lengths and arrival times as ``python -m llmd_ray.bench`` with
that config; routing uses the same scheduler config as the Serve router.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.perf import Profile, load_profile
from llmd_ray.sim.fleet import Simulator
from llmd_ray.sim.workload import sim_jobs
from llmd_ray.workloads.spec import RunSpec


def simulate_bench(config: RunSpec | dict | str | Path, profile: Profile | str, replicas: int = 2, *,
                   router_config: dict | str | None = None, rate: float | None = None, seed: int = 0,
                   router: str = "llmd", kv_cache_tokens: int | None = None, ttft_overhead_s: float = 0.0,
                   host=None) -> dict:
    """``router``: ``llmd`` (the plugin Scheduler with ``router_config``) or ``pow2`` (Ray's default);
    ``kv_cache_tokens`` overrides the profile's KV size (e.g. a serve config's ``num_kv_blocks``);
    ``ttft_overhead_s`` is a fixed per-request delay before the engine (ingress, proxy, client) that the
    simulator does not model, added to every request's arrival at the engine. ``host``: a fitted
    ``host.HostProfile`` (its overhead replaces ``ttft_overhead_s``; the replicas share one host).
    ``config``: a benchmark config (a ``BenchConfig``, its dict or YAML file; only seed, workload and load are read) or a ``RunSpec``."""
    if isinstance(config, (str, Path)):
        config = yaml.safe_load(Path(config).read_text()) or {}
    cfg = RunSpec.of(config)
    prof = load_profile(profile) if isinstance(profile, str) else profile
    if kv_cache_tokens is not None:
        prof = replace(prof, kv_cache_tokens=int(kv_cache_tokens))
    rate = rate if rate is not None else cfg.load.rate
    scaler = AutoscalerConfig.model_validate({"variants": [
        {"name": "v", "accelerator": prof.accelerator, "profile": prof.name, "cost_per_hour": 1.0,
         "min_replicas": replicas, "max_replicas": replicas}],
        "qos": {"classes": {"default": {"priority": 1, "ttft_objective_s": 1000000.0, "itl_objective_s": 1000000.0}}, "default_class": "default"}})
    sim = Simulator(scaler, {prof.name: prof}, initial={"v": replicas}, router_config=router_config,
                    block_size=prof.block_size, seed=seed, router=router)
    if host is not None:
        from llmd_ray.sim.host import attach

        attach(sim.all_replicas, host)
        ttft_overhead_s = host.overhead_ms / 1000.0
    jobs = sim_jobs(cfg, rate=rate, time_offset=ttft_overhead_s)
    res = sim.run(jobs, until=max(j.arrival_s for j in jobs) + 3600)
    done = [r for r in res.requests if r.finished is not None and np.isfinite(r.finished)]
    ttft = np.array([r.first_token - r.arrival + ttft_overhead_s for r in done])
    tpot = np.array([(r.finished - r.first_token) / (r.output_tokens - 1) for r in done if r.output_tokens > 1])
    span = max(r.finished for r in done)  # as the harness: from the schedule's t = 0 to the last finish
    out_tokens = sum(r.output_tokens for r in done)
    return {
        "simulated": True, "replicas": replicas, "profile": prof.name, "requests": len(done),
        "ttft_p50_s": float(np.percentile(ttft, 50)), "ttft_p90_s": float(np.percentile(ttft, 90)),
        "tpot_p50_s": float(np.percentile(tpot, 50)) if len(tpot) else None,
        "output_tokens_per_s": out_tokens / span, "requests_per_s": len(done) / span,
        "cache_hit_rate": sum(r.cached for r in done) / max(1, sum(r.input_tokens for r in done)),
        "duration_s": span,
        # per request, shaped like the harness's requests.jsonl rows
        "records": [{"job": r.job.index if r.job is not None else r.id, "ok": True, "sent_s": r.arrival - ttft_overhead_s,
                     "ttft_ms": 1e3 * t, "e2e_ms": 1e3 * (r.finished - r.arrival + ttft_overhead_s),
                     "input_tokens": r.input_tokens, "cached_tokens": r.cached, "output_tokens": r.output_tokens}
                    for r, t in zip(done, ttft)],
    }
