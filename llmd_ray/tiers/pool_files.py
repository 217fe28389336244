"""``FileBlockPool``: a bounded, LRU pool of KV block records in one directory (pure).

The local tier is two of these: a host-memory pool in tmpfs (``/dev/shm``)
spilling, when it is full, into a pool on local disk. Each block is one
record file (``tier_format``) named by its hash, inside a directory named by
the namespace digest, so another model or layout never even finds the file.

Files rather than in-process arrays because three processes see the tier:
the engine's worker (the only writer, which owns the LRU), its scheduler
(``BlockDir.contains``: which blocks exist) and the Serve replica (uploads
blocks to the shared tier, stages blocks fetched from it). tmpfs files are
host memory; reads and writes are a memcpy.

A disk pool rebuilds its LRU from the directory at start (oldest mtime
first), so KV on disk outlives an engine restart.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from llmd_ray.tiers.lru import LRUBudget

SUFFIX = ".kvb"


@dataclass(frozen=True, slots=True)
class BlockDir:
    """The files of one tier for one namespace (read-only view: scheduler, replica)."""

    path: str

    def file(self, hhex: str) -> str:
        return os.path.join(self.path, hhex + SUFFIX)

    def contains(self, hhex: str) -> bool:
        return os.path.exists(self.file(hhex))

    def read(self, hhex: str) -> bytes | None:
        try:
            with open(self.file(hhex), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write(self, hhex: str, record: bytes) -> None:
        """Atomic: a reader sees the whole record or no file."""
        os.makedirs(self.path, exist_ok=True)
        tmp = f"{self.file(hhex)}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(record)
        os.replace(tmp, self.file(hhex))

    def unlink(self, hhex: str) -> None:
        try:
            os.unlink(self.file(hhex))
        except FileNotFoundError:
            pass

    def hashes(self) -> list[str]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return [n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX)]


class FileBlockPool:
    """One tier's blocks under a byte budget; evictions spill to ``spill`` when set."""

    def __init__(self, name: str, directory: str, budget_bytes: int, spill: FileBlockPool | None = None):
        self.name = name
        self.dir = BlockDir(directory)
        self.lru = LRUBudget(budget_bytes)
        self.spill = spill
        self.spilled = 0
        self._lock = threading.Lock()  # a background saver and the loading thread share the pool
        self._recover()

    def _recover(self) -> None:
        entries = []
        for h in self.dir.hashes():
            try:
                st = os.stat(self.dir.file(h))
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, h, st.st_size))
        for _, h, size in sorted(entries):
            ok, evicted = self.lru.admit(h, size)
            for victim, _ in evicted:
                self.dir.unlink(victim)
            if not ok:
                self.dir.unlink(h)
        self.lru.evictions = self.lru.evicted_bytes = self.lru.refused = 0  # start-up trimming is not a run's eviction

    def __contains__(self, hhex: str) -> bool:
        return hhex in self.lru

    def contains(self, hhex: str) -> bool:
        return hhex in self.lru or (self.spill is not None and self.spill.contains(hhex))

    def put(self, hhex: str, record: bytes) -> bool:
        """Store a record (most recently used); evicted blocks move to ``spill``. False if refused."""
        with self._lock:
            if hhex in self.lru:
                self.lru.touch(hhex)
                return True
            ok, evicted = self.lru.admit(hhex, len(record))
            if not ok:
                return self.spill.put(hhex, record) if self.spill is not None else False
            self.dir.write(hhex, record)
            for victim, _ in evicted:
                self._evict(victim)
            return True

    def adopt(self, hhex: str, path: str) -> bool:
        """Move an existing record file (a staged block) into the pool."""
        with self._lock:
            try:
                size = os.path.getsize(path)
            except FileNotFoundError:
                return False
            ok, evicted = self.lru.admit(hhex, size)
            if not ok:
                os.unlink(path)
                return False
            os.makedirs(self.dir.path, exist_ok=True)
            os.replace(path, self.dir.file(hhex))
            for victim, _ in evicted:
                self._evict(victim)
            return True

    def _evict(self, victim: str) -> None:
        if self.spill is not None and victim not in self.spill:
            record = self.dir.read(victim)
            if record is not None and self.spill.put(victim, record):
                self.spilled += 1
        self.dir.unlink(victim)

    def get(self, hhex: str) -> tuple[bytes, str] | None:
        """``(record, tier name)`` from this pool or its spill; a hit is touched."""
        with self._lock:
            if hhex in self.lru:
                record = self.dir.read(hhex)
                if record is not None:
                    self.lru.touch(hhex)
                    return record, self.name
                self.lru.remove(hhex)  # the file went away under us
        if self.spill is not None:
            return self.spill.get(hhex)
        return None

    def discard(self, hhex: str) -> None:
        """Drop a block found to be bad (in this pool and the spill)."""
        with self._lock:
            self.lru.remove(hhex)
            self.dir.unlink(hhex)
        if self.spill is not None:
            self.spill.discard(hhex)

    def clear(self) -> None:
        with self._lock:
            for h in self.lru.clear():
                self.dir.unlink(h)

    def stats(self) -> dict[str, dict[str, int]]:
        out = {self.name: {**self.lru.stats(), "spilled": self.spilled}}
        if self.spill is not None:
            out.update(self.spill.stats())
        return out
