"""RetryingStream: re-issue only while no chunk has reached the client."""

from __future__ import annotations

import pytest

from llmd_ray.errors import EngineDeadError, InvalidRequestError
from llmd_ray.serving import retry
from llmd_ray.serving.retry import RetryingStream


class FakeGen:
    def __init__(self, items):
        self.items = list(items)
        self.cancelled = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self.items:
            raise StopAsyncIteration
        item = self.items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self):
        self.cancelled = True


def starter(*scripts):
    calls = []

    def start():
        gen = FakeGen(scripts[len(calls)])
        calls.append(gen)
        return gen

    return start, calls


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(retry, "RETRY_BACKOFF_S", (0.0,))


@pytest.mark.parametrize(
    "scripts, expected, starts",
    [
        ([["a", "b"]], ["a", "b"], 1),
        ([[EngineDeadError("x")], ["a"]], ["a"], 2),  # died before the first token: retried
        ([[EngineDeadError("x")], [EngineDeadError("y")], ["a", "b"]], ["a", "b"], 3),
    ],
)
async def test_retries_before_first_chunk(scripts, expected, starts):
    start, calls = starter(*scripts)
    stream = RetryingStream(start, "r1")
    assert [c async for c in stream] == expected
    assert len(calls) == starts and stream.retries == starts - 1


async def test_no_retry_after_first_chunk():
    start, calls = starter(["a", EngineDeadError("gone")], ["never"])
    stream = RetryingStream(start, "r1")
    assert await stream.__anext__() == "a"
    with pytest.raises(EngineDeadError):
        await stream.__anext__()
    assert len(calls) == 1


async def test_request_errors_are_not_retried():
    start, calls = starter([InvalidRequestError("bad", param="x")], ["a"])
    with pytest.raises(InvalidRequestError):
        await RetryingStream(start, "r1").__anext__()
    assert len(calls) == 1


async def test_gives_up_after_max_attempts():
    start, calls = starter(*([[EngineDeadError("x")]] * 3))
    with pytest.raises(EngineDeadError):
        await RetryingStream(start, "r1", max_attempts=3).__anext__()
    assert len(calls) == 3


async def test_cancel_reaches_the_current_call():
    start, calls = starter(["a"])
    stream = RetryingStream(start, "r1")
    stream.cancel()
    assert calls[0].cancelled
