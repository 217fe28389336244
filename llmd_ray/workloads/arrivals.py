"""Arrival schedules: when each job is released, relative to the run start.

Processes (same definitions as `vllm bench serve`):
  constant  gaps of exactly 1/rate
  poisson   exponential gaps with mean 1/rate (gamma with shape 1)
  gamma     gamma gaps with shape k = burstiness and mean 1/rate;
            k < 1 is burstier than Poisson, k > 1 smoother (CV = 1/sqrt(k))
rate = inf releases everything at t = 0 (max_concurrency then paces it).
A fixed count of n jobs arrives at the cumulative sums of n gaps, rescaled
so the n-th arrival falls exactly at n/rate (as `vllm bench serve` does):
the realized rate equals the configured one for every seed, and the gaps
keep their distribution's shape. Stages are piecewise-constant rates:
arrivals are generated inside each stage's window until it ends (the first
at the stage start), without rescaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llmd_ray.workloads.spec import LoadSpec, Stage


@dataclass(frozen=True)
class Arrival:
    t: float
    stage: int = 0


def gaps(n: int, rate: float, process: str, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """n inter-arrival gaps in seconds."""
    if n <= 0:
        return np.zeros(0)
    if math.isinf(rate):
        return np.zeros(n)
    if process == "constant":
        return np.full(n, 1.0 / rate)
    shape = 1.0 if process == "poisson" else burstiness
    return rng.gamma(shape, 1.0 / (rate * shape), size=n)


def fixed_count(n: int, rate: float, process: str, burstiness: float, rng: np.random.Generator) -> list[Arrival]:
    t = np.cumsum(gaps(n, rate, process, burstiness, rng))
    if n and t[-1] > 0:
        t *= (n / rate) / t[-1]
    return [Arrival(float(x)) for x in t]


def staged(stages: list[Stage], process: str, burstiness: float, rng: np.random.Generator) -> list[Arrival]:
    out: list[Arrival] = []
    start = 0.0
    for k, st in enumerate(stages):
        t = 0.0
        while t < st.duration_s - 1e-9:  # tolerance: accumulated float gaps
            out.append(Arrival(start + t, k))
            t += float(gaps(1, st.rate, process, burstiness, rng)[0])
        start += st.duration_s
    return out


def schedule(load: LoadSpec, n_default: int, seed: int, rate: float | None = None) -> list[Arrival]:
    """Arrivals for one run. `rate` overrides load.rate (one point of a sweep)."""
    rng = np.random.default_rng([seed, 3])
    r = load.rate if rate is None else rate
    if load.stages:
        return staged(load.stages, load.process, load.burstiness, rng)
    if load.duration_s:
        return staged([Stage(rate=r, duration_s=load.duration_s)], load.process, load.burstiness, rng)
    return fixed_count(n_default, r, load.process, load.burstiness, rng)


def offered_rates(load: LoadSpec) -> list[float]:
    """The request rates this config runs, one entry per separate run."""
    return list(load.rates) if load.rates else [load.rate]
