"""Per-request TTFT/TPOT an engine replica records for the routers (``llmd_ray.engine.latency``)."""

import asyncio
from types import SimpleNamespace

import pytest

from llmd_ray.engine.latency import LatencyLog, timed
from llmd_ray.routing.types import Endpoint


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def chunk(n, finish=None):
    return SimpleNamespace(token_ids=[7] * n, finish_reason=finish)


def test_ttft_and_tpot_from_a_stream():
    clock = Clock()
    log = LatencyLog(clock=clock)
    timer = log.start("a")
    clock.t += 0.3
    log.tokens(timer, 0)  # an empty chunk is not the first token
    clock.t += 0.2
    log.tokens(timer, 1)
    for _ in range(4):
        clock.t += 0.05
        log.tokens(timer, 1)
    log.finish(timer)
    [(seq, rid, ttft, tpot)] = log.export()["latency_samples"]
    assert (seq, rid) == (1, "a") and ttft == pytest.approx(0.5) and tpot == pytest.approx(0.05)


@pytest.mark.parametrize("chunks, expect", [
    ([5], None),          # not streamed: several tokens in one chunk, first-token time unknown
    ([1], (0.0, None)),   # one token: TTFT only
    ([], None),           # nothing came out
])
def test_what_is_not_recorded(chunks, expect):
    log = LatencyLog(clock=Clock())
    timer = log.start("a")
    for n in chunks:
        log.tokens(timer, n)
    log.finish(timer)
    samples = log.export().get("latency_samples")
    assert (samples is None) if expect is None else (tuple(samples[0][2:]) == expect)


def test_bounded_and_sequenced():
    log = LatencyLog(keep=3, clock=Clock())
    for i in range(5):
        t = log.start(f"r{i}")
        log.tokens(t, 1)
        log.finish(t)
    assert [s[0] for s in log.export()["latency_samples"]] == [3, 4, 5]


def test_timed_passes_chunks_through_and_records_only_finished_requests():
    log = LatencyLog()

    async def gen(finish):
        yield chunk(1)
        yield chunk(1)
        yield chunk(1, finish)

    async def drain(finish):
        return [c async for c in timed(log, f"id-{finish}", gen(finish))]

    assert len(asyncio.run(drain("stop"))) == 3
    asyncio.run(drain("abort"))
    assert [s[1] for s in log.export()["latency_samples"]] == ["id-stop"]


def test_the_router_sees_them_on_the_endpoint():
    e = Endpoint.from_stats("x", {"num_waiting": 1, "latency_samples": [[1, "a", 0.1, 0.02]]})
    assert e.latency_samples == [[1, "a", 0.1, 0.02]]
    assert Endpoint.from_stats("y", {"num_waiting": 1}).latency_samples is None
