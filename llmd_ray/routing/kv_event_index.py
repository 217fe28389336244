"""The precise prefix index: block -> replicas, built from vLLM KV cache events.

Two halves, both pure (no Ray, no ZMQ, no vLLM):

* ``KVEventIndex`` lives in the KV-index actor. It applies decoded event
  batches per replica (``BlockStored`` / ``BlockRemoved`` / ``AllBlocksCleared``),
  keeps ``event hash -> {replica: tier}``, and records every change in a bounded
  log with a sequence number, so routers can pull *deltas* since their last
  sync. An ``epoch`` (random per actor incarnation) tells a router that its
  sequence numbers belong to a dead actor and it must take a snapshot.
* ``IndexMirror`` lives in each router. It applies those deltas/snapshots and
  answers ``lookup(event_hashes)`` locally in microseconds, so the routing hot
  path never waits on the actor (``PreciseIndexView`` protocol). Events arrive
  only after a request's prefill, so the router also records each routing
  decision as *speculative* blocks of the chosen replica (``speculate``), which
  count as held (tier ``gpu``) until the events confirm them or ``ttl_s``
  passes: requests of a new prefix that arrive while its first prefill runs
  then follow it, as with the approximate index.

Hashes are the 64-bit values vLLM puts in events (the low 64 bits of its
sha256 block hash, ``routing.hashing.to_event_hash``); the router computes the
same values from the token ids it already holds.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIER = "gpu"  # vLLM's medium "GPU": the engine's own KV memory (also on CPU engines)
_LOW64 = (1 << 64) - 1

# Ops in the change log: (seq, kind, replica, hashes, tier)
STORED, REMOVED, CLEARED, DROPPED = "stored", "removed", "cleared", "dropped"


def event_hash(value: int | bytes) -> int:
    """Normalise an event's block hash (int, or bytes in some vLLM builds) to 64 bits."""
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value, "big") & _LOW64
    return int(value) & _LOW64


def tier_of(medium: str | None) -> str:
    return (medium or DEFAULT_TIER).lower()


@dataclass(slots=True)
class ReplicaFeed:
    """Per-replica bookkeeping: last event sequence number seen and gaps."""

    last_seq: int | None = None
    batches: int = 0
    gaps: int = 0
    blocks: int = 0


@dataclass(slots=True)
class KVEventIndex:
    """Block -> replicas index with a change log (held by the KV-index actor)."""

    max_log: int = 200_000
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    seq: int = 0
    blocks: dict[int, dict[str, str]] = field(default_factory=dict)  # hash -> {replica: tier}
    feeds: dict[str, ReplicaFeed] = field(default_factory=dict)
    log: deque = field(default_factory=deque)

    # ------------------------------------------------------------ events
    def apply_batch(self, replica: str, seq: int | None, batch: Sequence[Any]) -> None:
        """Apply one decoded ``KVEventBatch`` (``[ts, [event, ...], dp_rank]``) from ``replica``."""
        feed = self.feeds.setdefault(replica, ReplicaFeed())
        if seq is not None:
            if feed.last_seq is not None and seq <= feed.last_seq:
                return  # duplicate (replay overlapping the live stream)
            if feed.last_seq is not None and seq != feed.last_seq + 1:
                feed.gaps += 1
            feed.last_seq = seq
        feed.batches += 1
        events = batch[1] if len(batch) > 1 else []
        for ev in events:
            kind = ev.get("type") if isinstance(ev, Mapping) else None
            if kind == "BlockStored":
                self.store(replica, [event_hash(h) for h in ev.get("block_hashes") or []], tier_of(ev.get("medium")))
            elif kind == "BlockRemoved":
                self.remove(replica, [event_hash(h) for h in ev.get("block_hashes") or []], tier_of(ev.get("medium")))
            elif kind == "AllBlocksCleared":
                self.clear(replica)

    def store(self, replica: str, hashes: list[int], tier: str) -> None:
        feed = self.feeds.setdefault(replica, ReplicaFeed())
        for h in hashes:
            holders = self.blocks.setdefault(h, {})
            if replica not in holders:
                feed.blocks += 1
            holders[replica] = tier
        self._log(STORED, replica, hashes, tier)

    def remove(self, replica: str, hashes: list[int], tier: str) -> None:
        feed = self.feeds.setdefault(replica, ReplicaFeed())
        for h in hashes:
            holders = self.blocks.get(h)
            if holders is not None and holders.get(replica) == tier:
                del holders[replica]
                feed.blocks -= 1
                if not holders:
                    del self.blocks[h]
        self._log(REMOVED, replica, hashes, tier)

    def clear(self, replica: str) -> None:
        self._drop_blocks(replica)
        self._log(CLEARED, replica, [], "")

    def drop_replica(self, replica: str) -> None:
        """Forget a replica that is gone (its feed, and every block it held)."""
        if replica not in self.feeds:
            return
        self._drop_blocks(replica)
        del self.feeds[replica]
        self._log(DROPPED, replica, [], "")

    def _drop_blocks(self, replica: str) -> None:
        for h in [h for h, holders in self.blocks.items() if replica in holders]:
            holders = self.blocks[h]
            del holders[replica]
            if not holders:
                del self.blocks[h]
        if replica in self.feeds:
            self.feeds[replica].blocks = 0

    def _log(self, kind: str, replica: str, hashes: list[int], tier: str) -> None:
        self.seq += 1
        self.log.append((self.seq, kind, replica, hashes, tier))
        while len(self.log) > self.max_log:
            self.log.popleft()

    # ------------------------------------------------------------- reads
    def match(self, hashes: Sequence[int]) -> dict[str, tuple[int, str]]:
        """Leading blocks of ``hashes`` held per replica, and the tier of its last matched block."""
        return _leading_matches(self.blocks, hashes)

    def changes(self, epoch: str | None, since: int) -> dict[str, Any]:
        """What a router needs to catch up from ``(epoch, since)``: deltas, or a snapshot."""
        oldest = self.log[0][0] if self.log else self.seq + 1
        if epoch == self.epoch and since >= oldest - 1:
            ops = [op for op in self.log if op[0] > since] if since < self.seq else []
            return {"epoch": self.epoch, "seq": self.seq, "ops": ops}
        return {"epoch": self.epoch, "seq": self.seq, "snapshot": self.snapshot()}

    def snapshot(self) -> dict[str, dict[str, list[int]]]:
        out: dict[str, dict[str, list[int]]] = {r: {} for r in self.feeds}
        for h, holders in self.blocks.items():
            for replica, tier in holders.items():
                out.setdefault(replica, {}).setdefault(tier, []).append(h)
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "seq": self.seq, "blocks": len(self.blocks),
            "replicas": {r: {"blocks": f.blocks, "batches": f.batches, "gaps": f.gaps} for r, f in self.feeds.items()},
        }


def _leading_matches(blocks: Mapping[int, Mapping[str, str]], hashes: Sequence[int]) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    alive: dict[str, str] | None = None
    for i, h in enumerate(hashes):
        holders = blocks.get(h)
        if not holders:
            break
        alive = dict(holders) if alive is None else {r: holders[r] for r in alive if r in holders}
        if not alive:
            break
        for r, tier in alive.items():
            out[r] = (i + 1, tier)
    return out


@dataclass(slots=True)
class IndexMirror:
    """A router-local copy of the KV-index, kept current by ``apply`` (a ``PreciseIndexView``)."""

    epoch: str | None = None
    seq: int = 0
    blocks: dict[int, dict[str, str]] = field(default_factory=dict)
    synced_at: float | None = None
    recovering: bool = False  # the index restarted and has not replayed the engines yet
    snapshots: int = 0
    deltas: int = 0
    speculative: dict[str, dict[int, float]] = field(default_factory=dict)  # replica -> hash -> expiry
    _speculated: int = 0

    def apply(self, changes: Mapping[str, Any], now: float | None = None) -> None:
        if "snapshot" in changes:
            self.blocks = {}
            for replica, tiers in changes["snapshot"].items():
                for tier, hashes in tiers.items():
                    for h in hashes:
                        self.blocks.setdefault(h, {})[replica] = tier
            self.snapshots += 1
        else:
            for _, kind, replica, hashes, tier in changes.get("ops", ()):
                self._apply_op(kind, replica, hashes, tier)
            self.deltas += 1
        self.epoch = changes["epoch"]
        self.seq = changes["seq"]
        self.recovering = bool(changes.get("recovering", False))
        self.synced_at = time.monotonic() if now is None else now

    def _apply_op(self, kind: str, replica: str, hashes: Iterable[int], tier: str) -> None:
        if kind == STORED:
            for h in hashes:
                self.blocks.setdefault(h, {})[replica] = tier
        elif kind == REMOVED:
            for h in hashes:
                holders = self.blocks.get(h)
                if holders is not None and holders.get(replica) == tier:
                    del holders[replica]
                    if not holders:
                        del self.blocks[h]
        else:  # CLEARED / DROPPED
            for h in [h for h, holders in self.blocks.items() if replica in holders]:
                del self.blocks[h][replica]
                if not self.blocks[h]:
                    del self.blocks[h]

    def speculate(self, replica: str, hashes: Sequence[int], ttl_s: float, now: float | None = None) -> None:
        """The router sent a request with these blocks to ``replica``: count them as held for ``ttl_s``."""
        if ttl_s <= 0 or not hashes:
            return
        now = time.monotonic() if now is None else now
        held = self.speculative.setdefault(replica, {})
        until = now + ttl_s
        for h in hashes:
            held[h] = until
        self._speculated += 1
        if self._speculated % 256 == 0:  # drop expired entries now and then
            for r in list(self.speculative):
                live = {h: t for h, t in self.speculative[r].items() if t > now}
                if live:
                    self.speculative[r] = live
                else:
                    del self.speculative[r]

    # PreciseIndexView
    def lookup(self, block_hashes: Sequence[int], now: float | None = None) -> dict[str, tuple[int, str]]:
        out = _leading_matches(self.blocks, block_hashes)
        if not self.speculative:
            return out
        now = time.monotonic() if now is None else now
        for replica, held in self.speculative.items():
            n = 0
            for h in block_hashes:  # a block counts if the events confirm it or it is a live speculation
                if replica in self.blocks.get(h, ()) or held.get(h, 0.0) > now:
                    n += 1
                else:
                    break
            if n > out.get(replica, (0, ""))[0]:
                out[replica] = (n, DEFAULT_TIER)
        return out

    def staleness_s(self) -> float:
        return float("inf") if self.synced_at is None else time.monotonic() - self.synced_at

    def is_recovering(self) -> bool:
        return self.recovering
