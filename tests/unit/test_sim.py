"""The simulator against hand-computed timings, cache hits, P/D hand-off and the harness's workloads."""

import pytest

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.perf import Profile
from llmd_ray.bench.config import BenchConfig
from llmd_ray.sim import simulate_bench
from llmd_ray.sim.fleet import Simulator
from llmd_ray.sim.workload import SimJob, SimTurn, SynthText, block_hashes, sim_jobs

PROF = Profile("p", "m", "X", "estimated", itl_alpha_ms=10.0, itl_beta_ms=1.0, itl_gamma_ms=0.0,
               prefill_delta_ms=10.0, prefill_epsilon_ms=100.0, max_num_seqs=8, max_num_batched_tokens=4096,
               kv_cache_tokens=100_000, block_size=16)
QOS = {"classes": {"default": {"priority": 1, "ttft_objective_s": 1000.0, "itl_objective_s": 1000.0}}, "default_class": "default"}


def sim(variants, initial, **kw):
    cfg = AutoscalerConfig.model_validate({"variants": variants, "qos": QOS})
    return Simulator(cfg, {"p": PROF}, initial=initial, **kw)


def job(i, t, tokens, out, uid=None):
    return SimJob(i, t, [SimTurn(SynthText(((uid or 1000 + i, tokens),)), None, out, 0.0)])


AGG = [{"name": "a", "accelerator": "X", "profile": "p", "cost_per_hour": 3.6, "max_replicas": 64}]


def test_one_request_timing_matches_the_profile():
    s = sim(AGG, {"a": 1})
    res = s.run([job(0, 0.0, 1000, 11)], until=10)
    (r,) = res.requests
    # prefill step: decode part alpha + prefill epsilon x 1000 tokens, the fixed cost paid once
    assert r.first_token == pytest.approx((10.0 + 100.0) / 1000)
    # 10 more tokens at batch 1: 10 x (alpha + beta)
    assert r.finished - r.first_token == pytest.approx(10 * 11.0 / 1000)
    assert res.cost == pytest.approx(3.6 / 3600 * 10)  # one replica for the 10 s window


def test_decode_batches_share_steps_and_an_arrival_cuts_a_run():
    s = sim(AGG, {"a": 1})
    res = s.run([job(0, 0.0, 160, 101), job(1, 0.5, 160, 11)], until=20)
    a, b = sorted(res.requests, key=lambda r: r.id)
    # b arrives mid-run: it waits for the step boundary, then prefills in one step with a's decode
    assert b.first_token > 0.5 and b.first_token < 0.5 + 0.011 + 0.027 + 1e-9
    # while both decode, steps cost alpha + 2 beta = 12 ms
    assert (b.finished - b.first_token) == pytest.approx(10 * 12 / 1000, rel=1e-6)
    assert a.finished > b.finished


def test_prefix_cache_hits_skip_prefill():
    s = sim(AGG, {"a": 1})
    res = s.run([job(0, 0.0, 1600, 2, uid=7), job(1, 5.0, 1600, 2, uid=7)], until=10)
    first, second = sorted(res.requests, key=lambda r: r.id)
    assert first.cached == 0 and second.cached == 1599  # all but the last token (as vLLM)
    assert second.first_token - second.arrival < 0.5 * (first.first_token - first.arrival)


def test_pd_handoff_adds_the_transfer_time():
    pd = [{"name": "pre", "role": "prefill", "accelerator": "X", "profile": "p", "cost_per_hour": 1.0, "max_replicas": 64},
          {"name": "dec", "role": "decode", "accelerator": "X", "profile": "p", "cost_per_hour": 1.0,
           "kv_transfer_ms": 50, "max_replicas": 64}]
    s = sim(pd, {"pre": 1, "dec": 1})
    res = s.run([job(0, 0.0, 1000, 11)], until=10)
    (r,) = res.requests
    assert r.prefill_done == pytest.approx(0.110)  # prefill replica: no decode batch in its step
    assert r.first_token == pytest.approx(0.110 + 0.050)
    assert r.finished > r.first_token


def test_scale_down_drains_in_flight_work():
    s = sim(AGG, {"a": 2})
    jobs = [job(i, 0.01 * i, 500, 50) for i in range(10)]
    s.push(0.05, 99, None)  # a no-op marker event is ignored

    class DownAtHalfSecond:
        def tick(self, sim_):
            return {"a": 1} if sim_.now >= 0.5 else {"a": 2}

    s.policy = DownAtHalfSecond()
    s.push(0.5, 2, None)  # TICK
    res = s.run(jobs, until=30)
    assert all(r.finished is not None and r.finished < 30 for r in res.requests)  # nothing lost
    assert len(res.scale_events) == 1


def test_block_hashes_share_prefixes_and_ignore_the_split():
    a = SynthText(((1, 40), (2, 10)))
    b = SynthText(((1, 40), (3, 10)))
    ha, hb = block_hashes(a, 16), block_hashes(b, 16)
    assert ha[:2] == hb[:2] and ha[2] != hb[2]
    assert block_hashes(SynthText(((1, 40),)), 16) == ha[:2]


def test_workloads_are_the_harness_jobs_at_token_level():
    cfg = BenchConfig.model_validate({"seed": 3, "workload": {"type": "shared_prefix", "num_groups": 2,
                                      "prompts_per_group": 3, "system_prompt_len": 100, "question_len": 20},
                                      "load": {"rate": 2.0}})
    jobs = sim_jobs(cfg)
    assert len(jobs) == 6
    assert all(j.turns[0].prompt.tokens == 120 for j in jobs)
    assert len({j.turns[0].prompt[0] for j in jobs}) == 2  # two shared system prompts
    assert jobs[-1].arrival_s == pytest.approx(6 / 2.0)  # vllm-bench-style rescaled arrivals


def test_simulate_bench_reports_ttft_and_throughput():
    out = simulate_bench({"workload": {"type": "random", "num_requests": 20, "input_len": {"mean": 256},
                                       "output_len": {"mean": 16}}, "load": {"rate": 4.0}}, PROF, replicas=2)
    assert out["simulated"] and out["requests"] == 20
    assert 0 < out["ttft_p50_s"] <= out["ttft_p90_s"]
    assert out["output_tokens_per_s"] > 0
