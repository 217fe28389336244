"""Summary figures from per-request records."""

import numpy as np
import pytest

from llmd_ray.workloads.spec import Stage
from llmd_ray.bench.metrics import flatten, max_concurrency, per_stage, stats, summarize
from llmd_ray.bench.schema import RequestRecord


def rec(i, ttft, e2e, out=10, inp=100, cached=None, ok=True, sent=0.0, stage=0, expected=None, itl=None):
    return RequestRecord(id=i, job=i, stage=stage, api="completions", scheduled_s=sent, sent_s=sent, ok=ok,
                         status_code=200 if ok else 500, error=None if ok else "boom", ttft_ms=ttft if ok else None,
                         e2e_ms=e2e, tpot_ms=(e2e - ttft) / (out - 1) if ok and out > 1 else None,
                         itl_ms=itl if itl is not None else ([(e2e - ttft) / (out - 1)] * (out - 1) if ok and out > 1 else []),
                         input_tokens=inp, expected_input_tokens=expected if expected is not None else inp,
                         output_tokens=out if ok else 0, max_tokens=out, cached_tokens=cached,
                         chunks=out, usage_reported=True)


def test_stats_match_numpy():
    x = list(np.random.default_rng(0).exponential(100, 501))
    s = stats(x)
    assert s.p50 == pytest.approx(np.percentile(x, 50)) and s.p99 == pytest.approx(np.percentile(x, 99))
    assert s.mean == pytest.approx(np.mean(x)) and s.count == 501
    assert stats([]).p50 is None


def test_summary_figures():
    records = [rec(0, 100, 1000, out=10, inp=100, cached=0, sent=0.0),
               rec(1, 200, 2000, out=10, inp=300, cached=200, sent=1.0),
               rec(2, 300, 3000, out=10, inp=100, cached=50, sent=2.0),
               rec(3, 0, 50, ok=False, sent=2.5)]
    s = summarize(records, duration_s=10.0, slo_ttft_ms=250, slo_tpot_ms=250, cost_per_hour=3.6, replicas=2)
    assert (s.completed, s.failed, s.success_rate) == (3, 1, 0.75)
    assert s.ttft_ms.p50 == 200 and s.ttft_ms.mean == 200
    assert s.tpot_ms.mean == pytest.approx((100 + 200 + 300) / 3)  # (e2e - ttft) / (out - 1)
    assert s.request_throughput == 0.3 and s.output_throughput == 3.0 and s.total_token_throughput == 53.0
    assert s.cache_hit_rate == pytest.approx(250 / 500)
    assert s.goodput == pytest.approx(0.2) and s.goodput_fraction == pytest.approx(0.5)  # reqs 0, 1 of 4
    assert s.cost.usd_per_million_output_tokens == pytest.approx(2 * 3.6 / 3600 / 3.0 * 1e6)
    assert s.itl_ms.count == 27


def test_cache_hit_rate_none_when_not_reported():
    s = summarize([rec(0, 10, 100), rec(1, 10, 100)], duration_s=1)
    assert s.cache_hit_rate is None and s.total_cached_tokens is None and s.goodput is None


def test_duration_defaults_to_run_start_to_last_finish():
    s = summarize([rec(0, 10, 1000, sent=1.0), rec(1, 10, 500, sent=3.0)])
    assert s.duration_s == pytest.approx(3.5)


def test_single_token_requests_have_no_tpot_and_pass_tpot_slo():
    r = rec(0, 10, 10, out=1)
    assert r.tpot_ms is None
    s = summarize([r], duration_s=1, slo_tpot_ms=1)
    assert s.tpot_ms.count == 0 and s.goodput_fraction == 1.0


def test_input_token_mismatch_counted():
    s = summarize([rec(0, 1, 2, inp=101, expected=100), rec(1, 1, 2)], duration_s=1)
    assert s.input_token_mismatches == 1


def test_max_concurrency_and_stages():
    recs = [rec(0, 1, 1000, sent=0.0), rec(1, 1, 1000, sent=0.5, stage=1), rec(2, 1, 100, sent=1.2, stage=1)]
    assert max_concurrency(recs) == 2
    st = per_stage(recs, [Stage(rate=1.0, duration_s=0.5), Stage(rate=2.0, duration_s=1.0)])
    assert [x.completed for x in st] == [1, 2] and [x.offered_rate for x in st] == [1.0, 2.0]
    assert [x.duration_s for x in st] == pytest.approx([1.0, 1.0])  # stage start -> last end of its requests


def test_flatten_keys():
    f = flatten(summarize([rec(0, 10, 100)], duration_s=1))
    assert f["ttft_ms.p50"] == 10 and f["completed"] == 1 and "request_throughput" in f
