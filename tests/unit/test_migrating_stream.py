"""``MigratingStream`` (``frontdoor/migrating.py``) over a fake backend whose replicas die on cue (no Ray, no
vLLM): mid-stream failures are re-sent with the streamed tokens, at most K times; refused requests, other
failures, failures before the first chunk and cancelled streams are not migrated."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmd_ray.errors import EngineDeadError, EngineError
from llmd_ray.frontdoor.migrating import MigratingStream
from tests.unit.test_stream_migration import request


def token_at(p: int) -> int:
    return 100 + p


class FakeStream:
    def __init__(self, req, die_after, end_quietly):
        self.req, self.die_after, self.end_quietly = req, die_after, end_quietly
        self.i, self.cancelled = 0, False

    async def __anext__(self):
        p = self.req.sampling.vllm.params
        if self.die_after is not None and self.i >= self.die_after:
            if self.end_quietly:
                raise StopAsyncIteration
            raise EngineDeadError("replica gone")
        if self.i >= p.max_tokens:
            raise StopAsyncIteration
        pos = len(self.req.prompt_token_ids) + self.i
        self.i += 1
        last = self.i == p.max_tokens
        o = SimpleNamespace(index=0, token_ids=[token_at(pos)], text=f" t{pos}", cumulative_logprob=None,
                            finish_reason="length" if last else None, stop_reason=None)
        out = SimpleNamespace(request_id=self.req.request_id, outputs=[o] * p.n, finished=last,
                              num_cached_tokens=2 if not self.req.request_id.count("-m") else 9)
        return SimpleNamespace(output=out, replica="r")

    def cancel(self):
        self.cancelled = True


class FakeBackend:
    """The i-th stream dies after ``deaths[i]`` chunks (None: never); ``quiet``: it just ends instead."""

    def __init__(self, *deaths, quiet=False):
        self.deaths, self.quiet, self.requests, self.streams = list(deaths), quiet, [], []

    def stream(self, req):
        self.requests.append(req)
        die = self.deaths[len(self.streams)] if len(self.streams) < len(self.deaths) else None
        self.streams.append(FakeStream(req, die, self.quiet))
        return self.streams[-1]


async def drain(stream):
    outs = []
    async for chunk in stream:
        outs.append(chunk.output)
    return outs


@pytest.mark.parametrize("deaths,quiet", [((4,), False), ((4, 3, 5), False), ((1,), True)])
async def test_mid_stream_deaths_are_migrated_into_one_stream(deaths, quiet):
    backend = FakeBackend(*deaths, quiet=quiet)
    s = MigratingStream(backend, request(max_tokens=20), max_migrations=3)
    outs = await drain(s)
    text = "".join(o.outputs[0].text for o in outs)
    assert text == "".join(f" t{3 + i}" for i in range(20))  # prompt of 3, then 20 positions, each once
    assert s.migrations == len(deaths) and len(s.migration_s) == len(deaths)
    assert {o.request_id for o in outs} == {"req-1"} and {o.num_cached_tokens for o in outs} == {2}
    assert outs[-1].finished and sum(len(o.outputs[0].token_ids) for o in outs) == 20
    done = 0
    for i, (req, d) in enumerate(zip(backend.requests, deaths + (None,))):
        assert req.prompt_token_ids == [1, 2, 3] + [token_at(3 + k) for k in range(done)]
        assert req.sampling.vllm.params.max_tokens == 20 - done
        done += d or 0
    assert all(st.cancelled for st in backend.streams[:-1])


async def test_after_k_migrations_the_stream_ends_with_an_error_naming_the_cause():
    backend = FakeBackend(2, 2, 2)
    s = MigratingStream(backend, request(max_tokens=20), max_migrations=2)
    with pytest.raises(EngineError, match=r"failed mid-stream \(EngineDeadError: replica gone\).*2 migrations"):
        await drain(s)
    assert len(backend.requests) == 3 and s.migrations == 2


async def test_zero_migrations_allowed_is_todays_error():
    with pytest.raises(EngineError, match="0 migrations"):
        await drain(MigratingStream(FakeBackend(2), request(max_tokens=20), max_migrations=0))


async def test_n_above_one_is_refused():
    backend = FakeBackend(2)
    with pytest.raises(EngineError, match="n > 1"):
        await drain(MigratingStream(backend, request(max_tokens=20, n=2), max_migrations=3))
    assert len(backend.requests) == 1


async def test_a_death_before_the_first_chunk_is_the_backends_to_retry():
    backend = FakeBackend(0)
    with pytest.raises(EngineDeadError):
        await drain(MigratingStream(backend, request(max_tokens=20), max_migrations=3))
    assert len(backend.requests) == 1


async def test_a_request_failure_is_not_migrated():
    backend = FakeBackend()
    s = MigratingStream(backend, request(max_tokens=20), max_migrations=3)
    await s.__anext__()
    backend.streams[0].__class__ = type("Bad", (FakeStream,), {"__anext__": _raise_value_error})
    with pytest.raises(ValueError):
        await s.__anext__()
    assert len(backend.requests) == 1


async def _raise_value_error(self):
    raise ValueError("bad request")


async def test_a_cancelled_stream_is_not_migrated():
    backend = FakeBackend(2, quiet=True)
    s = MigratingStream(backend, request(max_tokens=20), max_migrations=3)
    await s.__anext__()
    await s.__anext__()
    s.cancel()
    with pytest.raises(StopAsyncIteration):
        await s.__anext__()
    assert len(backend.requests) == 1 and backend.streams[0].cancelled
