"""A/B ratio statistics, and the client-overhead measurement."""

import pytest

from llmd_ray.bench.compare import compare_results, ratio_stats
from llmd_ray.bench.fake_server import FakeServer
from llmd_ray.bench.metrics import summarize
from llmd_ray.bench.overhead import format_overhead, measure_async
from llmd_ray.bench.schema import BenchResult, RequestRecord


def test_ratio_stats():
    r = ratio_stats([2.0, 3.0, None], [1.0, 2.0, 5.0])
    assert r.ratio == pytest.approx(1.75) and r.min == 1.5 and r.max == 2.0 and r.std == pytest.approx(0.3535, rel=1e-3)
    assert ratio_stats([1.0], [0.0]).ratio is None  # division by zero is no ratio
    assert ratio_stats([None], [None]).ratio is None


def _result(ttft):
    recs = [RequestRecord(id=0, job=0, api="completions", scheduled_s=0, sent_s=0, ok=True, status_code=200,
                          ttft_ms=ttft, e2e_ms=ttft + 90, tpot_ms=10, itl_ms=[10] * 9, input_tokens=5,
                          output_tokens=10, max_tokens=10, chunks=10, usage_reported=True)]
    return BenchResult(name="x", run_id="r", started_at="t", base_url="u", model="m", config={}, environment={},
                       summary=summarize(recs, duration_s=1.0))


def test_compare_results_pairs_phases():
    m = compare_results([_result(100), _result(300)], [_result(50), _result(100)])
    assert m["ttft_ms.p50"].ratio == pytest.approx(2.5) and m["ttft_ms.p50"].a == [100, 300]
    assert m["completed"].ratio == 1.0


async def test_overhead_measurement_is_small_and_sane():
    async with FakeServer() as srv:
        o = await measure_async(srv.url, n=20, tokens=8, concurrency=8)
    assert 0 < o.ttft_floor_ms < 50 and 0 < o.per_request_ms < 50 and 0 <= o.per_token_ms < 5
    assert o.max_requests_per_s > 5 and o.max_chunks_per_s > 50
    assert "ms CPU/request" in format_overhead(o)


def test_which_side_is_better():
    from llmd_ray.bench.metrics import a_is_better

    assert a_is_better("ttft_ms.p50", 0.5) is True and a_is_better("e2e_ms.p99", 1.3) is False
    assert a_is_better("output_throughput", 1.2) is True and a_is_better("cache_hit_rate", 0.5) is False
    assert a_is_better("tpot_ms.p50", 1.01) is None
