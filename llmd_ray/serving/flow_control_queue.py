"""The flow-control queue (pure): priority bands, fair share between tenants, earliest deadline first.

``pop`` takes from the highest-priority band that has a live waiter. Inside a
band, tenants share by start-time fair queueing: each tenant has a virtual time
that advances by one per request served, and a tenant that becomes active
starts at the band's current virtual time (no credit for being idle), so a
tenant with a thousand queued requests cannot starve one with a single
request. The tenant with the least virtual time goes first (ties: the earlier
head deadline, then arrival). Inside a tenant, the earliest deadline goes first.
Removal is lazy: a removed waiter is skipped when it reaches a heap's top.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Waiter:
    seq: int  # arrival order
    qos: str
    priority: int
    tenant: str
    arrived: float
    deadline: float
    sheddable: bool
    future: asyncio.Future | None = None
    admitted_at: float = 0.0
    live: bool = True


@dataclass(slots=True)
class _Band:
    heaps: dict[str, list[tuple[float, int, Waiter]]] = field(default_factory=dict)
    live: Counter = field(default_factory=Counter)  # tenant -> live waiters
    vtime: dict[str, float] = field(default_factory=dict)  # active tenants only
    clock: float = 0.0  # virtual time of the last request served

    def push(self, w: Waiter) -> None:
        if self.live[w.tenant] == 0:
            self.vtime[w.tenant] = max(self.vtime.get(w.tenant, 0.0), self.clock)
        heapq.heappush(self.heaps.setdefault(w.tenant, []), (w.deadline, w.seq, w))
        self.live[w.tenant] += 1

    def head(self, tenant: str) -> Waiter:
        heap = self.heaps[tenant]
        while not heap[0][2].live:
            heapq.heappop(heap)
        return heap[0][2]

    def pop(self) -> Waiter:
        best = min((t for t, n in self.live.items() if n > 0),
                   key=lambda t: (self.vtime[t], self.head(t).deadline, self.head(t).seq))
        w = heapq.heappop(self.heaps[best])[2]
        while not w.live:
            w = heapq.heappop(self.heaps[best])[2]
        self.clock = self.vtime[best]
        self.vtime[best] += 1.0
        self._drop(w)
        return w

    def _drop(self, w: Waiter) -> None:
        w.live = False
        self.live[w.tenant] -= 1
        if self.live[w.tenant] == 0:  # idle tenants are forgotten: bounded memory, no saved credit
            del self.live[w.tenant]
            del self.heaps[w.tenant]
            self.vtime.pop(w.tenant, None)


class FairQueue:
    """Waiters by priority (higher first), then tenant fair share, then deadline."""

    def __init__(self):
        self._bands: dict[int, _Band] = {}
        self._len = 0
        self._depth: Counter = Counter()  # qos class -> live waiters

    def __len__(self) -> int:
        return self._len

    def push(self, w: Waiter) -> None:
        self._bands.setdefault(w.priority, _Band()).push(w)
        self._len += 1
        self._depth[w.qos] += 1

    def pop(self) -> Waiter:
        for p in sorted(self._bands, reverse=True):
            band = self._bands[p]
            if band.live:
                self._len -= 1
                w = band.pop()
                self._depth[w.qos] -= 1
                if not band.live:
                    del self._bands[p]
                return w
        raise IndexError("pop from an empty FairQueue")

    def remove(self, w: Waiter) -> bool:
        """Take a waiter out (timed out, cancelled); False if it was already gone."""
        band = self._bands.get(w.priority)
        if not w.live or band is None:
            return False
        band._drop(w)
        self._len -= 1
        self._depth[w.qos] -= 1
        if not band.live:
            del self._bands[w.priority]
        return True

    def drain(self, pred: Callable[[Waiter], bool]) -> list[Waiter]:
        """Remove and return every live waiter matching ``pred`` (e.g. the sheddable ones), oldest first."""
        out = sorted((w for w in self if pred(w)), key=lambda w: w.seq)
        for w in out:
            self.remove(w)
        return out

    def __iter__(self) -> Iterator[Waiter]:
        for band in list(self._bands.values()):
            for heap in list(band.heaps.values()):
                yield from (e[2] for e in heap if e[2].live)

    def depth_by_class(self) -> dict[str, int]:
        return {q: n for q, n in self._depth.items() if n > 0}
