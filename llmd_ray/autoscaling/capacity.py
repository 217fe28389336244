"""Per-replica capacity within SLO: how many requests/s of one shape one replica serves.

Vectorised over shape buckets (numpy arrays of equal length):
``inp`` mean prompt tokens, ``out`` mean output tokens, ``unc`` uncached prompt
tokens (cache hits removed), and per-bucket ``ttft_ms`` / ``itl_ms`` targets.
A capacity of 0 means the variant cannot meet that bucket's SLO at any load.

Models (``u`` is the queueing headroom, ``utilization_cap``):

* decode-only: the largest batch b with ITL(b, context) <= target and b x
  (input + output) within the KV cache; Little's law gives b / (out x ITL).
* prefill-only: a prefill of s ms queued M/D/1: TTFT = s (1 + rho / (2 (1 -
  rho))) must fit the TTFT target less the KV hand-off, so rho <= 2a/(1+2a)
  with a = (target - s) / s.
* aggregated: prefill steals a fraction rho_p = lambda x unc x c of the time
  from decode, so ITL_eff = ITL(b) / (1 - rho_p) and b = lambda x out x ITL_eff;
  TTFT is the prefill plus its M/D/1 wait. The largest lambda meeting both is
  found by bisection (all buckets at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmd_ray.autoscaling.perf import Profile

_PROFILE_FIELDS = ("itl_alpha_ms", "itl_beta_ms", "itl_gamma_ms", "prefill_delta_ms", "prefill_epsilon_ms",
                   "max_num_seqs", "max_num_batched_tokens", "kv_cache_tokens")


@dataclass(slots=True)
class StackedProfiles:
    """Several profiles' numbers as (n, 1) columns: the capacity formulas broadcast over them."""

    itl_alpha_ms: np.ndarray
    itl_beta_ms: np.ndarray
    itl_gamma_ms: np.ndarray
    prefill_delta_ms: np.ndarray
    prefill_epsilon_ms: np.ndarray
    max_num_seqs: np.ndarray
    max_num_batched_tokens: np.ndarray
    kv_cache_tokens: np.ndarray


def stack_profiles(profiles: Sequence[Profile]) -> StackedProfiles:
    """Several profiles as one: ``aggregated_capacity`` on (n, K) inputs then sizes n variants at once."""
    return StackedProfiles(*(np.array([[getattr(p, f)] for p in profiles], dtype=float) for f in _PROFILE_FIELDS))


def _kv_batch(p: Profile, inp, out):
    return np.minimum(p.max_num_seqs, np.floor(p.kv_cache_tokens / np.maximum(inp + out, 1.0)))


def prefill_service_ms(p: Profile, unc):
    chunks = np.maximum(1.0, np.ceil(unc / p.max_num_batched_tokens))
    return chunks * p.prefill_delta_ms + p.prefill_epsilon_ms * unc / 1000.0


def decode_capacity(p: Profile, inp, out, itl_ms, u: float):
    """Requests/s a decode-only replica sustains with ITL <= target."""
    ctx = inp + out / 2.0
    per_seq = p.itl_beta_ms + p.itl_gamma_ms * ctx / 1000.0
    b_itl = np.floor((itl_ms - p.itl_alpha_ms) / np.maximum(per_seq, 1e-12))
    b = np.minimum(b_itl, _kv_batch(p, inp, out))
    b = np.where(b >= 1, b, 0.0)
    itl = p.itl_ms(np.maximum(b, 1), ctx)
    return u * b / (np.maximum(out, 1.0) * itl / 1000.0)


def prefill_capacity(p: Profile, unc, ttft_ms, u: float):
    """Requests/s a prefill-only replica sustains with TTFT <= target (target already net of hand-off)."""
    s = prefill_service_ms(p, unc)
    a = (ttft_ms - s) / s
    rho = np.where(a > 0, 2 * a / (1 + 2 * a), 0.0)
    return np.minimum(rho, u) / (s / 1000.0)


def aggregated_capacity(p: Profile, inp, out, unc, ttft_ms, itl_ms, u: float, iters: int = 40):
    """Requests/s an aggregated replica sustains meeting both TTFT and ITL targets."""
    inp, out, unc = (np.asarray(x, dtype=float) for x in (inp, out, unc))
    ttft_ms = np.broadcast_to(np.asarray(ttft_ms, dtype=float), inp.shape)
    itl_ms = np.broadcast_to(np.asarray(itl_ms, dtype=float), inp.shape)
    ctx = inp + out / 2.0
    per_seq = (p.itl_beta_ms + p.itl_gamma_ms * ctx / 1000.0) / 1000.0  # s
    alpha = p.itl_alpha_ms / 1000.0
    c = p.prefill_epsilon_ms / 1e6  # s per token
    s = prefill_service_ms(p, unc) / 1000.0
    bmax = _kv_batch(p, inp, out)
    o = np.maximum(out, 1.0)

    def ok(lam):
        rho = lam * unc * c
        denom = 1.0 - rho - lam * o * per_seq
        good = (rho < 1) & (denom > 0)
        b = np.where(good, lam * o * alpha / np.where(good, denom, 1.0), np.inf)
        itl = np.where(good, (alpha + per_seq * b) / np.where(rho < 1, 1 - rho, 1.0), np.inf)
        ttft = np.where(rho < 1, (s + itl) * (1 + rho / (2 * np.where(rho < 1, 1 - rho, 1.0))), np.inf)
        return good & (b <= bmax) & (itl * 1000 <= itl_ms) & (ttft * 1000 <= ttft_ms)

    lo = np.zeros_like(inp)
    hi = np.minimum(1.0 / np.maximum(unc * c, 1e-12), 1.0 / (o * per_seq + 1e-12))
    hi = np.minimum(hi, bmax / (o * alpha + 1e-12))
    for _ in range(iters):
        mid = (lo + hi) / 2
        good = ok(mid)
        lo = np.where(good, mid, lo)
        hi = np.where(good, hi, mid)
    feasible = ok(np.full_like(inp, 1e-9))
    return np.where(feasible, u * lo, 0.0)
