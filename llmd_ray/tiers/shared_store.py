"""``SharedKVStore``: the cluster-wide KV tier in the Ray object store (a one-replica Serve deployment).

Replicas upload block records (``tier_format``, as ``uint8`` numpy arrays);
the store ``ray.put``s each one itself, so the object is owned by this
long-lived actor, not by the replica that computed it, and survives that
replica's death. ``SharedBlockIndex`` keeps ``(namespace, hash) -> ref, node,
size`` under a byte budget with LRU eviction: an evicted ref is dropped and
Ray frees the object once no reader still borrows it.

Readers get refs back (``lookup``) and fetch the bytes themselves, zero-copy
on the same node, so block data never passes through this actor's method
calls on the way out. The index is mirrored in the app's ``KVIndex`` (holder
and tier ``object-store``) when one runs.

The EngineCore process is not a Ray worker: replicas move records between
the store and their engine through tmpfs files (``tiered_server``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray

from llmd_ray.tiers.shared_index import SharedBlockIndex

logger = logging.getLogger("ray.serve")
INDEX_SYNC_S = 0.5


class SharedKVStore:
    async def __init__(self, budget_bytes: int, kv_index: Any = None):
        self.index = SharedBlockIndex(budget_bytes)
        self.node_id = ray.get_runtime_context().get_node_id()
        self._kv_index = kv_index
        self._kv_epoch: str | None = None
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop()) if kv_index is not None else None
        logger.info("SharedKVStore up: budget %d bytes on node %s", budget_bytes, self.node_id[:12])

    async def put(self, ns: str, hhex: str, record: np.ndarray, source: str = "") -> bool:
        """Keep one block record (a duplicate is only touched). False when it is larger than the budget."""
        key = (ns, hhex)
        if key in self.index:
            self.index.put(ns, hhex, None, 0, self.node_id, source)  # touch
            return True
        if not self.index.lru.fits(int(record.nbytes)):
            self.index.lru.refused += 1
            return False
        ref = ray.put(np.asarray(record, dtype=np.uint8))  # owned by this actor
        ok, evicted = self.index.put(ns, hhex, ref, int(record.nbytes), self.node_id, source)
        for entry in evicted:
            entry.ref = None  # the last owner reference: Ray frees the object once readers let go
        return ok

    async def missing(self, ns: str, hashes: Sequence[str]) -> list[str]:
        return self.index.missing(ns, hashes)

    async def lookup(self, ns: str, hashes: Sequence[str]) -> list[tuple[str, list[Any], str]]:
        """``(hash, [ref], node)`` for the leading run of ``hashes`` held (refs nested: not resolved here)."""
        run = self.index.lookup(ns, hashes)
        return [(h, [e.ref], e.node_id) for h, e in zip(hashes, run)]

    async def clear(self) -> int:
        entries = self.index.clear()
        for e in entries:
            e.ref = None
        return len(entries)

    async def stats(self) -> dict[str, Any]:
        return {**self.index.stats(), "node_id": self.node_id, "kv_index_epoch": self._kv_epoch}

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(INDEX_SYNC_S)
            stored, removed = self.index.take_events()
            try:
                if self._kv_epoch is None:  # first contact or a restarted KVIndex: send everything
                    epoch = await self._kv_index.shared_update.remote(self.index.all_event_hashes(), [], True)
                elif stored or removed:
                    epoch = await self._kv_index.shared_update.remote(stored, removed, False)
                else:
                    continue
                if self._kv_epoch is not None and epoch != self._kv_epoch:
                    epoch = await self._kv_index.shared_update.remote(self.index.all_event_hashes(), [], True)
                self._kv_epoch = epoch
            except Exception as e:  # the index is advisory; resend everything once it is back
                logger.warning("SharedKVStore: KVIndex update failed (%s)", e)
                self._kv_epoch = None

    def __del__(self):
        if self._sync_task is not None:
            self._sync_task.cancel()
