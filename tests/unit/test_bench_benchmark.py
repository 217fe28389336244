"""A whole run through run_benchmark against the fake server: files, counts, cache, sessions, stages."""

import json

import pytest

from llmd_ray.bench.benchmark import RunRequest, run_benchmark
from llmd_ray.bench.config import validate_config
from llmd_ray.bench.fake_server import FakeOptions, FakeServer
from llmd_ray.bench.report import load_records, load_result
from llmd_ray.bench.schema import SCHEMA_VERSION
from llmd_ray.bench.testing import cached_test_tokenizer


@pytest.fixture(scope="module")
def tok():
    return cached_test_tokenizer("metaspace")


def cfg(tok, **kw):
    return validate_config({"name": "t", "seed": 1, "tokenizer": tok, **kw})


async def test_shared_prefix_run_writes_everything(tok, tmp_path):
    c = cfg(tok, workload={"type": "shared_prefix", "num_groups": 2, "prompts_per_group": 3, "system_prompt_len": 64,
                           "question_len": 16, "output_len": 5},
            load={"rate": 20, "process": "constant"}, slo={"ttft_ms": 1000}, cost={"per_hour": 1.0, "replicas": 2})
    async with FakeServer(FakeOptions(tokenizer=tok, block_size=16, itl_ms=2)) as srv:
        res = await run_benchmark(c.model_copy(update={"metrics_url": srv.url + "/metrics",
                                                       "metrics_interval_s": 0.05}),
                                  RunRequest(srv.url, tmp_path, progress=False))
    s = res.summary
    assert (s.completed, s.failed, s.input_token_mismatches) == (6, 0, 0)
    assert s.total_input_tokens == 6 * 80 and s.total_output_tokens == 30
    # the fake server caches 16-token blocks: 4 of 6 requests reuse 64 prefix tokens
    assert s.cache_hit_rate == pytest.approx(4 * 64 / 480)
    assert s.goodput_fraction == 1.0 and s.cost.replicas == 2
    assert res.server_timeline.t_s and res.client_overhead.run_cpu_utilization > 0
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(data["summary"][key]) >= {"mean", "p50", "p90", "p99"}
    for key in ("request_throughput", "output_throughput", "total_token_throughput", "goodput", "cache_hit_rate",
                "completed", "failed"):
        assert key in data["summary"]
    assert data["config"]["workload"]["type"] == "shared_prefix" and data["environment"]["python"]
    assert len(load_records(tmp_path)) == 6 and load_result(tmp_path).run_id == res.run_id
    assert (tmp_path / "ttft_cdf.png").stat().st_size > 1000 and (tmp_path / "timeline.png").exists()
    load_dependent = ("late", "starved", "client-bound", "host load average")  # what a busy CI host may add
    assert all(any(k in w for k in load_dependent) for w in res.warnings), res.warnings


async def test_multi_turn_counts_chat_template_tokens(tok, tmp_path):
    c = cfg(tok, workload={"type": "multi_turn", "num_sessions": 2, "turns_per_session": 3, "system_prompt_len": 10,
                           "question_len": {"mean": 12}, "output_len": {"mean": 4}, "think_time_s": 0.01})
    async with FakeServer(FakeOptions(tokenizer=tok)) as srv:
        res = await run_benchmark(c, RunRequest(srv.url, tmp_path, progress=False, plots=False))
        sessions = {e["session"] for e in srv.log if e["chat"]}
    recs = load_records(tmp_path)
    assert res.summary.completed == 6 and res.summary.input_token_mismatches == 0
    assert all(r.expected_input_tokens == r.input_tokens for r in recs)
    turns = {r.turn: r.input_tokens for r in recs if r.session_id == recs[0].session_id}
    assert turns[0] < turns[1] < turns[2]  # history grows
    assert {r.session_id for r in recs} <= sessions


async def test_stages_give_per_stage_summaries_and_load_plots(tok, tmp_path):
    c = cfg(tok, workload={"type": "random", "input_len": {"mean": 20}, "output_len": {"mean": 3}},
            load={"process": "constant", "stages": [{"rate": 10, "duration_s": 0.5}, {"rate": 20, "duration_s": 0.5}]})
    async with FakeServer(FakeOptions(tokenizer=tok)) as srv:
        res = await run_benchmark(c, RunRequest(srv.url, tmp_path, progress=False))
    assert [s.completed for s in res.per_stage] == [5, 10]
    assert [s.offered_rate for s in res.per_stage] == [10, 20]
    assert (tmp_path / "latency_vs_load.png").exists() and (tmp_path / "throughput_vs_load.png").exists()


async def test_same_seed_same_prompts(tok, tmp_path):
    c = cfg(tok, workload={"type": "random", "num_requests": 4, "input_len": {"mean": 30, "distribution": "uniform",
                                                                                 "range_ratio": 0.5}})
    seen = []
    for k in range(2):
        async with FakeServer(FakeOptions(tokenizer=tok)) as srv:
            await run_benchmark(c, RunRequest(srv.url, tmp_path / str(k), progress=False, plots=False))
            seen.append([e["prompt_tokens"] for e in srv.log])
    assert seen[0] == seen[1]


async def test_unreachable_endpoint_fails_fast(tok, tmp_path):
    with pytest.raises(ConnectionError, match="cannot reach"):
        await run_benchmark(cfg(tok), RunRequest("http://127.0.0.1:9", tmp_path, progress=False))
