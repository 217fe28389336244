"""Read a profile's step-time model back out of a real benchmark run (for checking the simulator).

A request that overlapped no other request in a run (``isolated_requests``)
saw an idle fleet: its TTFT is the fixed per-request cost (client, proxy,
ingress tokenisation, routing, one engine step) plus the prefill of its
uncached tokens, and its TPOT is the decode step time at batch 1. Fitting
``TTFT = intercept + slope * uncached tokens`` over such requests, and taking
their median TPOT, gives what a profile should predict on that machine, at
that time; ``calibrated_profile`` turns it into a ``Profile`` plus the
per-request overhead the simulator does not model (``simulate_bench``'s
``ttft_overhead_s``). Batch and context effects on decode (beta, gamma) are not
identifiable from isolated requests: the calibrated profile sets them to 0.

Records are the harness's ``requests.jsonl`` rows (dicts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from statistics import median

import numpy as np

from llmd_ray.autoscaling.perf import Profile


@dataclass(slots=True)
class IsolatedFit:
    requests: int  # isolated requests used
    prefill_intercept_ms: float  # TTFT at 0 uncached tokens: fixed per-request cost
    prefill_ms_per_1k: float  # TTFT slope per 1000 uncached tokens
    itl_ms: float  # median TPOT of isolated requests (decode step at batch 1)
    context_tokens: float  # median prompt length of those requests

    def as_dict(self) -> dict:
        return {"requests": self.requests, "prefill_intercept_ms": round(self.prefill_intercept_ms, 2),
                "prefill_ms_per_1k_tokens": round(self.prefill_ms_per_1k, 2), "itl_ms": round(self.itl_ms, 2),
                "context_tokens": self.context_tokens}


def rel_err(sim: float, real: float) -> float:
    """Signed relative error of a simulated figure against the real one: (sim - real) / real."""
    if real == 0:
        raise ValueError("relative error against a real figure of 0 is undefined")
    return (sim - real) / real


def isolated_requests(records: list[dict]) -> list[dict]:
    """The successful requests whose [sent, sent + e2e] interval overlaps no other request's."""
    rows = sorted((r for r in records if r.get("ok") and r.get("e2e_ms") is not None), key=lambda r: r["sent_s"])
    spans = [(r["sent_s"], r["sent_s"] + r["e2e_ms"] / 1000.0) for r in rows]
    out, prev_end = [], float("-inf")
    for i, (start, end) in enumerate(spans):
        next_start = spans[i + 1][0] if i + 1 < len(spans) else float("inf")
        if start >= prev_end and end <= next_start:
            out.append(rows[i])
        prev_end = max(prev_end, end)
    return out


def fit_isolated(runs: list[list[dict]]) -> IsolatedFit | None:
    """Fit TTFT against uncached prompt tokens, and the batch-1 ITL, over the isolated requests of ``runs``.

    Isolation is judged within each run (a list of records). None when fewer than
    2 distinct uncached lengths are isolated (the line is not identifiable).
    """
    iso = [r for run in runs for r in isolated_requests(run) if r.get("ttft_ms") is not None]
    x = np.array([r["input_tokens"] - (r.get("cached_tokens") or 0) for r in iso], dtype=float)
    if len(iso) < 2 or np.unique(x).size < 2:
        return None
    y = np.array([r["ttft_ms"] for r in iso], dtype=float)
    slope, intercept = np.polyfit(x / 1000.0, y, 1)
    if intercept < 0:  # keep the line physical: refit through the origin
        slope, intercept = float(x @ y / (x @ x)) * 1000.0, 0.0
    tpots = [r["tpot_ms"] for r in iso if r.get("tpot_ms") is not None]
    return IsolatedFit(len(iso), float(intercept), max(float(slope), 1e-6), float(median(tpots)),
                       float(median(r["input_tokens"] for r in iso)))


def calibrated_profile(base: Profile, fit: IsolatedFit, *, prefill: bool = True,
                       decode: bool = True) -> tuple[Profile, float]:
    """``base`` with its prefill and/or decode model replaced by ``fit``; returns (profile, overhead_s).

    Decode: every step costs the isolated ITL (beta = gamma = 0). Prefill: the
    fit's slope; the engine's fixed step cost is the ITL, and the rest of the
    intercept is the per-request overhead outside the engine (0 unless both
    parts are calibrated, since it is only separable then).
    """
    p = replace(base, name=f"{base.name}+calibrated", source="estimated",
                citation="fitted from isolated requests of real benchmark runs (llmd_ray.sim.calibrate)")
    if decode:
        p = replace(p, itl_alpha_ms=fit.itl_ms, itl_beta_ms=0.0, itl_gamma_ms=0.0)
    if prefill:
        p = replace(p, prefill_delta_ms=fit.itl_ms if decode else min(fit.prefill_intercept_ms, base.itl_alpha_ms),
                    prefill_epsilon_ms=fit.prefill_ms_per_1k)
    overhead_s = max(0.0, fit.prefill_intercept_ms - fit.itl_ms) / 1000.0 if (prefill and decode) else 0.0
    return p, overhead_s


def ttft_by_inflight(runs: list[list[dict]], cap: int = 4) -> dict[str, dict[int, list[float]]]:
    """Median TTFT (ms) and count by the number of other requests of the same run in flight at send
    (capped at ``cap``), for cold (most of the prompt uncached) and warm requests, pooled over ``runs``:
    {"cold": {n: [median_ms, count]}, "warm": ...}.

    On dedicated hardware a request routed to an idle replica does not slow down
    as others run elsewhere; a rise with ``n`` at n = 1 shows replicas sharing a machine.
    """
    groups: dict[str, dict[int, list[float]]] = {"cold": {}, "warm": {}}
    for records in runs:
        rows = [r for r in records if r.get("ok") and r.get("ttft_ms") is not None and r.get("e2e_ms") is not None]
        spans = [(r["sent_s"], r["sent_s"] + r["e2e_ms"] / 1000.0) for r in rows]
        for i, r in enumerate(rows):
            t = r["sent_s"]
            n = sum(1 for j, (a, b) in enumerate(spans) if j != i and a <= t < b)
            kind = "cold" if r["input_tokens"] - (r.get("cached_tokens") or 0) > r["input_tokens"] / 2 else "warm"
            groups[kind].setdefault(min(n, cap), []).append(r["ttft_ms"])
    return {k: {n: [round(float(median(v)), 1), len(v)] for n, v in sorted(g.items())} for k, g in groups.items()}
