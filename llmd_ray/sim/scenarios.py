"""Evaluation scenarios for the SIMULATOR: variants, classes and a diurnal trace with a shape shift.

Shared by ``bench/autoscaling/evaluate.py`` and ``notebooks/03_variant_autoscaling.ipynb``.
Prices are rounded public on-demand list prices per GPU-hour (an assumption, see
bench/results/autoscaling/README.md); GPU profiles are estimated (see their citations).
"""

from __future__ import annotations

import math

from llmd_ray.sim.workload import sim_jobs

PRICES = {"H100": 3.00, "L4": 0.80}  # $/GPU-hour, rounded public on-demand list prices (see README)

CONFIG = {
    "variants": [
        {"name": "h100-agg", "accelerator": "H100", "profile": "h100-llama-3.1-8b", "cost_per_hour": PRICES["H100"],
         "min_replicas": 1, "max_replicas": 40},
        {"name": "l4-agg", "accelerator": "L4", "profile": "l4-llama-3.1-8b", "cost_per_hour": PRICES["L4"],
         "min_replicas": 0, "max_replicas": 80},
        {"name": "h100-prefill", "role": "prefill", "accelerator": "H100", "profile": "h100-llama-3.1-8b",
         "cost_per_hour": PRICES["H100"], "max_replicas": 20},
        {"name": "h100-decode", "role": "decode", "accelerator": "H100", "profile": "h100-llama-3.1-8b",
         "cost_per_hour": PRICES["H100"], "max_replicas": 20, "kv_transfer_ms": 10},
        {"name": "l4-decode", "role": "decode", "accelerator": "L4", "profile": "l4-llama-3.1-8b",
         "cost_per_hour": PRICES["L4"], "max_replicas": 80, "kv_transfer_ms": 40},
    ],
    "qos": {"classes": {
        "interactive": {"priority": 1, "ttft_objective_s": 1.0, "itl_objective_s": 0.05, "max_input_tokens": 2048,
                        "max_output_tokens": 512},
        "batch": {"priority": 0, "ttft_objective_s": 10.0, "itl_objective_s": 0.15},
    }, "default_class": "batch"},
    "interval_s": 15, "forecast_horizon_s": 150, "ewma_half_life_s": 15, "trend_half_life_s": 60,
    "downscale_stable_s": 90, "downscale_margin": 0.15, "cold_start_s": 30, "utilization_cap": 0.8,
    "solve_in_background": False, "export_metrics": False,
}
INITIAL = {"h100-agg": 2, "l4-agg": 1, "h100-prefill": 0, "h100-decode": 0, "l4-decode": 0}


def diurnal(duration: float, peak: float, trough: float, phase: float = 0.0, step: float = 30.0) -> list[dict]:
    """Piecewise-constant stages following trough -> peak -> trough over ``duration``."""
    stages = []
    for k in range(int(duration / step)):
        t = (k + 0.5) * step / duration
        x = 0.5 - 0.5 * math.cos(2 * math.pi * (t - phase))
        stages.append({"rate": max(0.05, trough + (peak - trough) * x), "duration_s": step})
    return stages


def trace(duration: float, peak: float, seed: int = 0):
    """Three harness workloads on their own diurnal schedules (the mix shifts over the day).

    ``seed`` 0 is the trace of the published runs (workload seeds 1, 2, 3); seed s uses 10 s + 1, 2, 3:
    the same schedules, other arrival times, prompts and lengths."""
    chat = {"seed": 10 * seed + 1, "workload": {"type": "shared_prefix", "num_groups": 64, "prompts_per_group": 64,
                                    "system_prompt_len": 800, "question_len": 150, "output_len": 200,
                                    "group_popularity": "zipf", "num_requests": 10**6},
            "load": {"process": "poisson", "stages": diurnal(duration, 0.7 * peak, 0.1 * peak, phase=-0.1)}}
    rag = {"seed": 10 * seed + 2, "workload": {"type": "long_input", "num_requests": 10**6},
           "load": {"process": "poisson", "stages": diurnal(duration, 0.2 * peak, 0.01 * peak, phase=0.15)}}
    reasoning = {"seed": 10 * seed + 3, "workload": {"type": "long_output", "num_requests": 10**6,
                                         "output_len": {"mean": 1000, "distribution": "uniform", "range_ratio": 0.5}},
                 "load": {"process": "poisson", "stages": diurnal(duration, 0.1 * peak, 0.005 * peak, phase=0.2)}}
    jobs = sim_jobs(chat, salt=1) + sim_jobs(rag, salt=2) + sim_jobs(reasoning, salt=3)
    jobs.sort(key=lambda j: j.arrival_s)
    return jobs
