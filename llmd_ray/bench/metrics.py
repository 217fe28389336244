"""From per-request records to the summary figures.

Definitions (match `vllm bench serve` where it has the figure):
  * percentiles: numpy linear interpolation over successful requests;
    ITL pools every chunk gap of every successful request;
  * TPOT per request = (e2e - ttft) / (output_tokens - 1), requests with
    fewer than 2 output tokens have no TPOT (and pass a TPOT SLO);
  * throughputs divide by the wall time from the run start (t = 0 of the
    arrival schedule, as vLLM's bench) to the last finish; token
    throughputs count successful requests only;
  * goodput = successful requests meeting every configured SLO / duration;
    goodput_fraction divides the same count by all requests (failed = bad);
  * cache_hit_rate = sum cached_tokens / sum input_tokens over the successful
    requests whose server reported cached_tokens;
  * cost per million tokens = replicas * $/hour / (tokens/s * 3600) * 1e6.
"""

from __future__ import annotations

import numpy as np

from .schema import CostSummary, RequestRecord, Stats, Summary


def stats(values: list[float]) -> Stats:
    if not values:
        return Stats()
    a = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return Stats(mean=float(a.mean()), p50=float(p50), p90=float(p90), p99=float(p99), std=float(a.std()),
                 min=float(a.min()), max=float(a.max()), count=int(a.size))


def is_good(r: RequestRecord, slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> bool:
    if not r.ok:
        return False
    if slo_ttft_ms is not None and (r.ttft_ms is None or r.ttft_ms > slo_ttft_ms):
        return False
    if slo_tpot_ms is not None and r.tpot_ms is not None and r.tpot_ms > slo_tpot_ms:
        return False
    return True


def max_concurrency(records: list[RequestRecord]) -> int:
    """Peak number of overlapping requests (from send and finish times)."""
    events = []
    for r in records:
        if r.e2e_ms is not None:
            events += [(r.sent_s, 1), (r.sent_s + r.e2e_ms / 1e3, -1)]
    peak = cur = 0
    for _, d in sorted(events, key=lambda e: (e[0], e[1])):
        cur += d
        peak = max(peak, cur)
    return peak


def summarize(records: list[RequestRecord], duration_s: float | None = None, slo_ttft_ms: float | None = None,
              slo_tpot_ms: float | None = None, cost_per_hour: float | None = None, replicas: int = 1,
              offered_rate: float | None = None) -> Summary:
    ok = [r for r in records if r.ok]
    sent = [r for r in records if r.error != "session aborted"]
    if duration_s is None:  # run start (t = 0) to the last finish
        duration_s = max((r.sent_s + (r.e2e_ms or 0.0) / 1e3 for r in sent), default=0.0)
    dur = max(duration_s, 1e-9)
    n_in = sum(r.input_tokens or 0 for r in ok)
    n_out = sum(r.output_tokens for r in ok)
    reporting = [r for r in ok if r.cached_tokens is not None]
    cached = sum(r.cached_tokens for r in reporting) if reporting else None
    cache_in = sum(r.input_tokens or 0 for r in reporting)
    has_slo = slo_ttft_ms is not None or slo_tpot_ms is not None
    good = sum(is_good(r, slo_ttft_ms, slo_tpot_ms) for r in records) if has_slo else None
    cost = None
    if cost_per_hour is not None:
        usd_s = cost_per_hour * replicas / 3600.0
        out_tps, tot_tps = n_out / dur, (n_in + n_out) / dur
        cost = CostSummary(per_hour=cost_per_hour, replicas=replicas,
                           usd_per_million_output_tokens=usd_s / out_tps * 1e6 if out_tps else None,
                           usd_per_million_total_tokens=usd_s / tot_tps * 1e6 if tot_tps else None)
    mismatches = sum(1 for r in ok if r.usage_reported and r.expected_input_tokens is not None
                     and r.input_tokens != r.expected_input_tokens)
    return Summary(
        completed=len(ok), failed=len(records) - len(ok),
        success_rate=len(ok) / len(records) if records else 0.0, duration_s=duration_s, offered_rate=offered_rate,
        ttft_ms=stats([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        tpot_ms=stats([r.tpot_ms for r in ok if r.tpot_ms is not None]),
        itl_ms=stats([x for r in ok for x in r.itl_ms]),
        e2e_ms=stats([r.e2e_ms for r in ok if r.e2e_ms is not None]),
        request_throughput=len(ok) / dur, output_throughput=n_out / dur, total_token_throughput=(n_in + n_out) / dur,
        total_input_tokens=n_in, total_output_tokens=n_out, total_cached_tokens=cached,
        cache_hit_rate=(cached / cache_in if cache_in else None) if reporting else None,
        slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms,
        goodput=good / dur if has_slo else None,
        goodput_fraction=(good / len(records) if records else None) if has_slo else None,
        cost=cost, input_token_mismatches=mismatches, max_in_flight=max_concurrency(sent),
        dispatch_lag_ms=stats([r.dispatch_lag_ms for r in sent]),
    )


def per_stage(records: list[RequestRecord], stages: list, **kw) -> list[Summary]:
    """One summary per load stage (requests grouped by the stage they arrived in);
    a stage's duration runs from its start to the last end of its requests."""
    out, start = [], 0.0
    for k, st in enumerate(stages):
        recs = [r for r in records if r.stage == k]
        end = max((r.sent_s + (r.e2e_ms or 0.0) / 1e3 for r in recs), default=start + st.duration_s)
        out.append(summarize(recs, duration_s=end - start, offered_rate=st.rate, **kw))
        start += st.duration_s
    return out


HIGHER_IS_BETTER = ("throughput", "goodput", "cache_hit_rate", "success_rate", "completed")


def a_is_better(key: str, ratio: float, tolerance: float = 0.02) -> bool | None:
    """For an A/B ratio of figure `key`: True if A is better, False if worse, None within tolerance."""
    if abs(ratio - 1) < tolerance:
        return None
    return (ratio > 1) == any(h in key for h in HIGHER_IS_BETTER)


def flatten(summary: Summary | dict, prefix: str = "") -> dict[str, float]:
    """`ttft_ms.p50`-style keys for every numeric figure (compare mode, tables)."""
    d = summary.model_dump() if hasattr(summary, "model_dump") else summary
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out
