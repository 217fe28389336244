"""Routing decisions shared between routers: one router per ingress replica, one approximate index each.

Each router remembers only what *it* routed (``index.ApproximatePrefixIndex``), so with several ingress
replicas a prefix routed by one of them is cold for the others and affinity dilutes as ingress replicas are
added. Here the routers pool their decisions, with nothing added to the routing path:

* ``DecisionOutbox`` (router): ``on_request_routed`` appends ``(endpoint, block hashes)``, an O(1)
  append to a bounded deque (the oldest are dropped when full); a sync thread drains it in batches,
  folding repeats of one (endpoint, prefix) into the latest.
* ``DecisionLog`` (the ``RoutingState`` actor): the pooled decisions with sequence numbers; ``exchange``
  takes one router's batch and returns the *other* routers' decisions since that router's last sync
  (a router new to the log, or to this log's epoch, gets the most recent ones: a replaced ingress
  replica starts warm). Endpoints reported gone are purged.
* ``merge`` (router, on its event loop, off the routing path): records the other routers' decisions
  into the router's own index exactly as its own (``record``: same LRU, same capacity), for endpoints
  the router sees as live; decisions for endpoints it does not know are counted and skipped, so a
  removed endpoint is never re-added.

Pure: no Ray. ``router.py`` runs the sync thread (``PeerSync``) with a Serve handle.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Container, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmd_ray.routing.index import ApproximatePrefixIndex

Decision = tuple[str, list]  # (endpoint id, the request's block hashes)

DEFAULT_OUTBOX = 4096  # decisions a router keeps between syncs (about 40 s at 100 req/s and 0.1 s syncs: ample)
DEFAULT_LOG = 50_000  # decisions the RoutingState actor keeps
DEFAULT_REPLY = 5_000  # decisions one exchange returns at most (the newest)


@dataclass(slots=True)
class DecisionOutbox:
    """Decisions a router made since its last sync. ``add`` runs on the event loop, ``drain`` in the sync
    thread; deque appends and pops are atomic, so no lock is taken on the routing path."""

    max_pending: int = DEFAULT_OUTBOX
    dropped: int = 0
    _pending: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.max_pending <= 0:
            raise ValueError("max_pending must be positive")
        self._pending = deque(maxlen=self.max_pending)

    def add(self, endpoint: str, hashes: Sequence[Hashable]) -> None:
        if not hashes:
            return
        if len(self._pending) == self.max_pending:
            self.dropped += 1  # the deque drops the oldest itself
        self._pending.append((endpoint, hashes))

    def __len__(self) -> int:
        return len(self._pending)

    def drain(self, max_n: int | None = None) -> list[Decision]:
        """Up to ``max_n`` decisions, oldest first, repeats folded (``compact``)."""
        out, pop = [], self._pending.popleft
        n = len(self._pending) if max_n is None else min(max_n, len(self._pending))
        for _ in range(n):
            try:
                out.append(pop())
            except IndexError:
                break
        return compact(out)


def compact(decisions: Iterable[Decision]) -> list[Decision]:
    """Fold decisions that name the same endpoint and blocks into the latest one (order: by last occurrence).

    Recording the same blocks twice leaves an LRU as recording them once at the later time."""
    last: dict[tuple, Decision] = {}
    for endpoint, hashes in decisions:
        key = (endpoint, len(hashes), hashes[0], hashes[-1])  # chained hashes: first and last name the prefix
        last.pop(key, None)
        last[key] = (endpoint, list(hashes))
    return list(last.values())


@dataclass(slots=True)
class OriginFeed:
    """What the log knows of one router."""

    since: int = 0  # the last sequence number the router reported as applied
    published: int = 0
    last_seen: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class DecisionLog:
    """The pooled decisions of every router, with a change log (held by the ``RoutingState`` actor)."""

    max_entries: int = DEFAULT_LOG
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    seq: int = 0
    entries: deque = field(default_factory=deque)  # (seq, origin, endpoint, hashes), seq increasing
    origins: dict[str, OriginFeed] = field(default_factory=dict)
    purged: int = 0

    def publish(self, origin: str, decisions: Iterable[Decision]) -> None:
        feed = self.origins.setdefault(origin, OriginFeed())
        for endpoint, hashes in decisions:
            self.seq += 1
            self.entries.append((self.seq, origin, endpoint, list(hashes)))
            feed.published += 1
        while len(self.entries) > self.max_entries:
            self.entries.popleft()

    def changes(self, origin: str, epoch: str | None, since: int, limit: int = DEFAULT_REPLY) -> dict[str, Any]:
        """Other routers' decisions after ``since`` (all kept ones if ``epoch`` is not this log's), newest
        ``limit`` at most, oldest first; ``skipped``: newer-than-``since`` decisions not returned."""
        if epoch != self.epoch:
            since = 0
        out: list[Decision] = []
        skipped = 0
        for s, o, endpoint, hashes in reversed(self.entries):  # newest first: stops at ``since``
            if s <= since:
                break
            if o == origin:
                continue
            if len(out) < limit:
                out.append((endpoint, hashes))
            else:
                skipped += 1
        out.reverse()
        return {"epoch": self.epoch, "seq": self.seq, "ops": out, "skipped": skipped}

    def drop_endpoints(self, endpoints: Container[str]) -> None:
        """Forget the decisions for endpoints that are gone."""
        kept = deque(e for e in self.entries if e[2] not in endpoints)
        self.purged += len(self.entries) - len(kept)
        self.entries = kept

    def exchange(self, origin: str, decisions: Sequence[Decision], epoch: str | None, since: int,
                 gone: Sequence[str] = (), limit: int = DEFAULT_REPLY) -> dict[str, Any]:
        """One router's sync: its report (applied up to ``since``), its decisions, gone endpoints -> changes."""
        feed = self.origins.setdefault(origin, OriginFeed())
        if epoch == self.epoch:
            feed.since = since
        feed.last_seen = time.monotonic()
        if gone:
            self.drop_endpoints(set(gone))
        reply = self.changes(origin, epoch, since, limit)
        self.publish(origin, decisions)  # after reading: the router's own decisions are not sent back
        return reply

    def forget_idle(self, idle_s: float, now: float | None = None) -> list[str]:
        """Drop the bookkeeping of routers not heard from for ``idle_s`` (their decisions stay)."""
        now = time.monotonic() if now is None else now
        idle = [o for o, f in self.origins.items() if now - f.last_seen > idle_s]
        for o in idle:
            del self.origins[o]
        return idle

    def stats(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seq": self.seq, "entries": len(self.entries), "purged": self.purged,
                "origins": {o: {"since": f.since, "published": f.published} for o, f in self.origins.items()}}


@dataclass(slots=True)
class MergeCounts:
    merged: int = 0
    unknown_endpoint: int = 0


def merge(index: ApproximatePrefixIndex, ops: Iterable[Decision], live: Container[str]) -> MergeCounts:
    """Record other routers' decisions in ``index`` as this router's own, for live endpoints only."""
    counts = MergeCounts()
    for endpoint, hashes in ops:
        if endpoint in live:
            index.record(endpoint, hashes)
            counts.merged += 1
        else:
            counts.unknown_endpoint += 1
    return counts


@dataclass(slots=True)
class SyncResult:
    published: int = 0
    merged: int = 0
    unknown_endpoint: int = 0
    skipped: int = 0


@dataclass(slots=True)
class PeerSync:
    """One router's side of the exchange, run from its sync thread.

    ``exchange(origin, decisions, epoch, since, gone) -> changes`` calls the actor; ``on_loop(fn)`` runs
    ``fn()`` on the router's event loop and returns its result (where the index is read), so merges
    never race with routing; they go in chunks of ``chunk`` decisions so no single callback holds the
    loop for long."""

    outbox: DecisionOutbox
    exchange: Callable[..., dict[str, Any]]
    on_loop: Callable[[Callable[[], Any]], Any]
    merge_into: Callable[[list[Decision]], MergeCounts]
    max_batch: int = 2048
    chunk: int = 64
    origin: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    epoch: str | None = None
    since: int = 0
    synced_at: float | None = None
    _gone: set = field(default_factory=set)

    def endpoint_gone(self, endpoint: str) -> None:
        self._gone.add(endpoint)  # reported on the next exchange (set.add is atomic)

    def step(self) -> SyncResult:
        batch = self.outbox.drain(self.max_batch)
        gone, self._gone = self._gone, set()
        try:
            reply = self.exchange(self.origin, batch, self.epoch, self.since, sorted(gone))
        except BaseException:
            self._gone |= gone  # decisions are lost (approximate state), gone endpoints are retried
            raise
        out = SyncResult(published=len(batch), skipped=reply.get("skipped", 0))
        ops = reply["ops"]
        for i in range(0, len(ops), self.chunk):
            part = ops[i:i + self.chunk]
            counts = self.on_loop(lambda part=part: self.merge_into(part))
            out.merged += counts.merged
            out.unknown_endpoint += counts.unknown_endpoint
        self.epoch, self.since = reply["epoch"], reply["seq"]
        self.synced_at = time.monotonic()
        return out

    def staleness_s(self) -> float | None:
        return None if self.synced_at is None else time.monotonic() - self.synced_at
