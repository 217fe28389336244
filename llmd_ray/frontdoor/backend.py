"""The front door's backend: where a prepared request goes.

In the app it is the ingress's ``VariantDispatcher`` (``serving/dispatch.py``):
one engine deployment, or a pick among variants, through the deployment's
request router, re-sent until the first chunk if a replica dies. Anything
with the same ``stream(request)`` works; :class:`LocalBackend` runs requests
on an in-process ``Engine`` (no Ray), for tests and tools.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from llmd_ray.engine.types import GenerateChunk, GenerateRequest


class Stream(Protocol):
    """One engine request's chunks; ``cancel`` aborts it downstream."""

    def __anext__(self) -> Any: ...

    def cancel(self) -> None: ...


class Backend(Protocol):
    def stream(self, request: GenerateRequest) -> Stream: ...


class LocalStream:
    """A stream over an async iterator of chunks in this process."""

    def __init__(self, chunks: AsyncIterator[GenerateChunk], replica: str):
        self._chunks = chunks
        self._replica = replica
        self._task: asyncio.Task | None = None

    def __aiter__(self) -> "LocalStream":
        return self

    async def __anext__(self) -> GenerateChunk:
        self._task = asyncio.ensure_future(self._chunks.__anext__())
        chunk = await self._task
        chunk.replica = chunk.replica or self._replica
        return chunk

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # raises CancelledError inside the generator, which closes it
        else:
            asyncio.ensure_future(self._chunks.aclose())


class LocalBackend:
    """Runs each request on ``engine.generate`` (an ``llmd_ray.engine.Engine`` or any look-alike)."""

    def __init__(self, engine: Any, replica: str = "local"):
        self.engine = engine
        self.replica = replica

    def stream(self, request: GenerateRequest) -> LocalStream:
        return LocalStream(self.engine.generate(request), self.replica)
