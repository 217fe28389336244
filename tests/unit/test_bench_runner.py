"""The load loop against a local fake SSE server: timing, pacing, concurrency, sessions, failures."""

import numpy as np
import pytest

from llmd_ray.bench.fake_server import FakeOptions, FakeServer
from llmd_ray.bench.metrics import summarize
from llmd_ray.bench.runner import Runner, RunOptions
from llmd_ray.workloads.jobs import Job, Turn


def jobs(n, tokens=8, gap=0.0):
    return [Job(i, [Turn(max_tokens=tokens, prompt="a b c", expected_input_tokens=3)], arrival_s=i * gap)
            for i in range(n)]


def session(i, turns, think):
    return Job(i, [Turn(max_tokens=4, user_content=f"question {k}", think_after_s=think if k < turns - 1 else 0)
                   for k in range(turns)], session_id=f"s{i}")


async def run(srv, js, **kw):
    opts = RunOptions(base_url=srv.url, model="tiny-llama", progress=False, **kw)
    return await Runner(opts).run(js)


async def test_measured_latencies_match_server_delays():
    async with FakeServer(FakeOptions(ttft_ms=80, itl_ms=20)) as srv:
        await run(srv, jobs(2, 2))  # warm the connection
        out = await run(srv, jobs(6, 8, gap=0.05))
    s = summarize(out.records, out.duration_s)
    assert s.completed == 6 and s.total_output_tokens == 48 and s.total_input_tokens == 18
    assert 78 <= s.ttft_ms.p50 <= 130
    assert 19 <= s.itl_ms.p50 <= 35
    assert 19 <= s.tpot_ms.p50 <= 35
    assert s.e2e_ms.p50 == pytest.approx(s.ttft_ms.p50 + 7 * s.tpot_ms.p50, rel=0.01)
    for r in out.records:
        assert len(r.itl_ms) == 7 and r.output_tokens == 8 and r.chunks == 8 and r.usage_reported


async def test_arrivals_are_paced():
    async with FakeServer() as srv:
        out = await run(srv, jobs(5, 2, gap=0.15))
    sent = [r.sent_s for r in sorted(out.records, key=lambda r: r.job)]
    assert np.allclose(sent, [0, 0.15, 0.3, 0.45, 0.6], atol=0.04)
    assert max(r.dispatch_lag_ms for r in out.records) < 40


async def test_max_concurrency_is_enforced():
    async with FakeServer(FakeOptions(ttft_ms=40)) as srv:
        out = await run(srv, jobs(12, 4), max_concurrency=3)
        assert srv.max_in_flight == 3
    assert max(r.queue_ms for r in out.records) > 60
    assert summarize(out.records, out.duration_s).max_in_flight == 3


async def test_multi_turn_history_headers_and_think_time():
    async with FakeServer(FakeOptions(ttft_ms=10)) as srv:
        out = await run(srv, [session(0, 3, 0.1), session(1, 3, 0.1)])
        log = srv.log
    assert all(r.ok and r.api == "chat" for r in out.records)
    for sid in ("s0", "s1"):
        assert [e["n_messages"] for e in log if e["session"] == sid] == [1, 3, 5]  # user, +assistant+user ...
        turns = sorted((r for r in out.records if r.session_id == sid), key=lambda r: r.turn)
        for prev, nxt in zip(turns, turns[1:]):
            assert nxt.sent_s >= prev.sent_s + prev.e2e_ms / 1e3 + 0.1 - 0.005
    msgs = out.chat_messages[max(out.chat_messages)]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == "tok " * 4  # the answer actually streamed back


async def test_failures_are_recorded():
    async with FakeServer(FakeOptions(fail_every=3)) as srv:
        out = await run(srv, jobs(9, 2))
    failed = [r for r in out.records if not r.ok]
    assert len(failed) == 3 and all(r.status_code == 500 and "injected failure" in r.error for r in failed)
    s = summarize(out.records, out.duration_s)
    assert (s.completed, s.failed) == (6, 3)


async def test_failed_turn_aborts_its_session():
    async with FakeServer(FakeOptions(fail_every=2)) as srv:
        out = await run(srv, [session(0, 4, 0.0)])
    assert [r.ok for r in sorted(out.records, key=lambda r: r.turn)] == [True, False, False, False]
    assert [r.error for r in out.records if r.turn >= 2] == ["session aborted"] * 2
    assert sorted(r.id for r in out.records) == [0, 1, 2, 3]
