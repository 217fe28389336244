"""``KVIndex``: the application's KV-index actor (a one-replica Serve deployment).

Every ``LLMServer`` replica with ``engine.kv_events: true`` has its vLLM engine
publish KV cache events on a ZMQ PUB socket of its own (topic = replica id,
plus a replay ROUTER socket). This deployment subscribes to each of them and
keeps ``KVEventIndex`` (block hash -> replicas, tier).

Replicas come and go: a replica registers its endpoints when its engine is
up, and every router's periodic ``sync`` carries the endpoints of the replicas
*it* sees as live (from ``record_routing_stats``). A replica that a router saw
and no longer sees is dropped with all its blocks; a restarted KVIndex (new
epoch, empty) re-learns every endpoint from the next sync and replays each
engine's buffered events, so the index recovers without restarting engines.
Until it has heard a router's live set and replayed every engine in it, its
answers carry ``recovering: true`` and routers use their approximate index.

Routers never call this on their hot path: ``sync`` returns deltas since the
router's ``(epoch, seq)`` (or a snapshot), which the router applies to its
local ``IndexMirror`` off the routing path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from llmd_ray.routing.hashing import block_hashes, to_event_hashes
from llmd_ray.routing.kv_event_index import KVEventIndex
from llmd_ray.routing.types import SHARED_TIER

logger = logging.getLogger("ray.serve")

END_SEQ = (-1).to_bytes(8, "big", signed=True)
REPLAY_TIMEOUT_S = 5.0
FORGET_AFTER_S = 5.0  # a replica absent from routers' live sets this long is dropped


@dataclass(slots=True)
class _Feed:
    endpoint: str
    replay_endpoint: str | None
    task: asyncio.Task | None = None
    last_live: float = field(default_factory=time.monotonic)
    seen_by_router: bool = False
    replayed: bool = False  # the first replay of the engine's buffer was attempted


class KVIndex:
    """Follows every replica's KV events; serves deltas to routers."""

    def __init__(self, max_log: int = 200_000):
        self.index = KVEventIndex(max_log=max_log)
        self._ctx = zmq.asyncio.Context()
        self._feeds: dict[str, _Feed] = {}
        self._decode = msgspec.msgpack.Decoder()
        self._started = time.time()
        self._recovered = False  # heard a router's live set and replayed every engine in it
        logger.info("KVIndex up: epoch %s", self.index.epoch)

    # ------------------------------------------------------------ membership
    async def register(self, replica: str, endpoints: dict[str, str]) -> str:
        """A replica announces ``{"events": tcp://ip:port, "replay": tcp://ip:port}``."""
        self._follow(replica, endpoints)
        return self.index.epoch

    def _follow(self, replica: str, endpoints: dict[str, str]) -> None:
        feed = self._feeds.get(replica)
        if feed is not None and feed.endpoint == endpoints.get("events"):
            feed.last_live = time.monotonic()
            return
        if feed is not None:
            self._unfollow(replica)
        feed = _Feed(endpoints["events"], endpoints.get("replay"))
        feed.task = asyncio.get_running_loop().create_task(self._consume(replica, feed))
        self._feeds[replica] = feed
        logger.info("KVIndex: following %s at %s", replica, feed.endpoint)

    def _unfollow(self, replica: str) -> None:
        feed = self._feeds.pop(replica, None)
        if feed is not None and feed.task is not None:
            feed.task.cancel()
        self.index.drop_replica(replica)
        logger.info("KVIndex: dropped %s", replica)

    def _reconcile(self, live: dict[str, dict[str, str]]) -> None:
        now = time.monotonic()
        for replica, endpoints in live.items():
            if endpoints and endpoints.get("events"):
                self._follow(replica, endpoints)
                self._feeds[replica].seen_by_router = True
        for replica, feed in list(self._feeds.items()):
            if replica in live:
                feed.last_live = now
            elif feed.seen_by_router and now - feed.last_live > FORGET_AFTER_S:
                self._unfollow(replica)

    # ---------------------------------------------------------------- events
    async def _consume(self, replica: str, feed: _Feed) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(feed.endpoint)
        try:
            try:
                await self._replay(replica, feed, 0)
            finally:
                feed.replayed = True
            while True:
                frames = await sub.recv_multipart()
                if len(frames) != 3:
                    continue
                seq = int.from_bytes(frames[1], "big")
                last = self.index.feeds[replica].last_seq if replica in self.index.feeds else None
                if last is not None and seq > last + 1:  # missed batches: fetch them from the replay buffer
                    await self._replay(replica, feed, last + 1)
                self._apply(replica, seq, frames[2])
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("KVIndex: event feed of %s failed", replica)
        finally:
            sub.close(0)

    async def _replay(self, replica: str, feed: _Feed, start_seq: int) -> None:
        if not feed.replay_endpoint:
            return
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(feed.replay_endpoint)
        try:
            await dealer.send_multipart([b"", start_seq.to_bytes(8, "big")])
            while True:
                frames = await asyncio.wait_for(dealer.recv_multipart(), REPLAY_TIMEOUT_S)
                if len(frames) < 4 or frames[2] == END_SEQ:
                    break
                self._apply(replica, int.from_bytes(frames[2], "big"), frames[3])
        except asyncio.TimeoutError:
            logger.warning("KVIndex: replay from %s timed out", replica)
        finally:
            dealer.close(0)

    def _apply(self, replica: str, seq: int, payload: bytes) -> None:
        try:
            batch = self._decode.decode(payload)
        except Exception:
            logger.warning("KVIndex: undecodable event batch from %s", replica)
            return
        self.index.apply_batch(replica, seq, batch)

    # ----------------------------------------------------------------- reads
    async def sync(self, live: dict[str, dict[str, str]] | None, epoch: str | None, since: int) -> dict[str, Any]:
        """Called by routers: reconcile the live replica set, return changes since ``(epoch, since)``."""
        if live is not None:
            self._reconcile(live)
            if not self._recovered:
                self._recovered = all(f.replayed for f in self._feeds.values())
        return {**self.index.changes(epoch, since), "recovering": not self._recovered}

    async def lookup(self, token_ids: Sequence[int], block_size: int, hash_seed: str | None = None) -> dict[str, int]:
        """Cached prompt tokens per replica for ``token_ids`` (tests, debugging)."""
        hashes = to_event_hashes(block_hashes(token_ids, block_size, seed=hash_seed))
        return {r: n * block_size for r, (n, _tier) in self.index.match(hashes).items()}

    def stats(self) -> dict[str, Any]:
        return {**self.index.stats(), "following": sorted(self._feeds), "recovering": not self._recovered,
                "uptime_s": time.time() - self._started}

    # ----------------------------------------- the shared KV tier (llmd_ray.tiers.shared_store, issue 9)
    async def shared_update(self, stored: list[int], removed: list[int], full: bool = False) -> str:
        """The object-store tier's blocks (64-bit event hashes), held by ``SHARED_TIER``; returns the epoch.

        ``full``: ``stored`` is the whole set (first contact, or this index restarted).
        """
        if full:
            self.index.clear(SHARED_TIER)
        if removed:
            self.index.remove(SHARED_TIER, list(removed), SHARED_TIER)
        if stored:
            self.index.store(SHARED_TIER, list(stored), SHARED_TIER)
        return self.index.epoch

    def __del__(self):
        try:
            self._ctx.destroy(0)
        except Exception:
            pass
