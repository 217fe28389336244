"""Per-request latencies an engine replica observed, for the router's latency models (pure; no Ray).

The replica times each request from the moment its ``generate`` starts (so the
engine's queue is included) to the first chunk carrying tokens (TTFT) and to
the last one (TPOT = decode time / (tokens - 1)). The most recent samples ride
along in ``record_routing_stats`` as ``latency_samples``:
``[seq, request_id, ttft_s, tpot_s | None]`` with a per-replica increasing
``seq``, so the router (``predicted-latency`` plugin) learns from the ones it
has not seen without any call of its own on the routing path.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

DEFAULT_KEEP = 64  # samples exported; at the routers' stats period (0.5 s) that covers 128 completions/s


@dataclass(slots=True)
class RequestTimer:
    """One request in progress: when it started and when its first token came out."""

    request_id: str
    started: float
    first: float | None = None
    tokens: int = 0
    chunks: int = 0  # chunks that carried tokens


class LatencyLog:
    """Bounded log of the latest completed requests' TTFT and TPOT."""

    def __init__(self, keep: int = DEFAULT_KEEP, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.seq = 0
        self.samples: deque[list] = deque(maxlen=keep)

    def start(self, request_id: str) -> RequestTimer:
        return RequestTimer(request_id, self.clock())

    def tokens(self, timer: RequestTimer, n: int) -> None:
        """``n`` new output tokens arrived."""
        if n > 0:
            if timer.first is None:
                timer.first = self.clock()
            timer.tokens += n
            timer.chunks += 1

    def finish(self, timer: RequestTimer) -> None:
        """The request completed (not aborted): record its sample (none for an answer sent in one chunk
        of several tokens, i.e. not streamed: its first token's time is unknown)."""
        if timer.first is None or (timer.chunks == 1 and timer.tokens > 1):
            return
        end = self.clock()
        tpot = (end - timer.first) / (timer.tokens - 1) if timer.tokens > 1 else None
        self.seq += 1
        self.samples.append([self.seq, timer.request_id, timer.first - timer.started, tpot])

    def export(self) -> dict:
        """The ``record_routing_stats`` entries (empty before the first sample)."""
        return {"latency_samples": [list(s) for s in self.samples]} if self.samples else {}


async def timed(log: LatencyLog, request_id: str, chunks: AsyncIterator) -> AsyncIterator:
    """Pass ``chunks`` (``GenerateChunk``s) through, timing them into ``log``; closing it closes ``chunks``."""
    timer = log.start(request_id)
    try:
        async for chunk in chunks:
            log.tokens(timer, len(chunk.token_ids))
            if chunk.finish_reason is not None and chunk.finish_reason not in ("abort", "error"):
                log.finish(timer)
            yield chunk
    finally:
        await chunks.aclose()
