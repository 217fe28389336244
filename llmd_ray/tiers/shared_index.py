"""``SharedBlockIndex``: the shared tier's bookkeeping, ``(namespace, hash) -> object ref + location`` (pure).

Held by the long-lived ``SharedKVStore`` actor, which owns every object it
indexes (it ``ray.put``s the block itself), so a block outlives the replica
that computed it. The index enforces the tier's byte budget with LRU
eviction (dropping the ref frees the object once no reader borrows it) and
queues the KV-index changes (64-bit event hashes, as vLLM's KV events carry)
for the app's ``KVIndex`` to show the blocks under tier ``object-store``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmd_ray.tiers.lru import LRUBudget

_LOW64 = (1 << 64) - 1


def event_hash(hhex: str) -> int:
    """The low 64 bits of a sha256 block hash, as in vLLM's KV events (``routing.hashing.to_event_hash``)."""
    return int(hhex, 16) & _LOW64


@dataclass(slots=True)
class SharedEntry:
    ref: Any  # ray.ObjectRef (opaque here)
    nbytes: int
    node_id: str
    source: str  # replica that computed the block
    hits: int = 0


@dataclass(slots=True)
class SharedBlockIndex:
    budget_bytes: int
    lru: LRUBudget = field(init=False)
    entries: dict[tuple[str, str], SharedEntry] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    puts: int = 0
    duplicate_puts: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    stored_events: list[int] = field(default_factory=list)
    removed_events: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.lru = LRUBudget(self.budget_bytes)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.entries

    def missing(self, ns: str, hashes: Sequence[str]) -> list[str]:
        return [h for h in hashes if (ns, h) not in self.entries]

    def put(self, ns: str, hhex: str, ref: Any, nbytes: int, node_id: str, source: str) -> tuple[bool, list[SharedEntry]]:
        """Index a block; returns (admitted, evicted entries). A duplicate is touched, not replaced."""
        key = (ns, hhex)
        if key in self.entries:
            self.lru.touch(key)
            self.duplicate_puts += 1
            return True, []
        ok, evicted = self.lru.admit(key, nbytes)
        if not ok:
            return False, []
        self.entries[key] = SharedEntry(ref, nbytes, node_id, source)
        self.puts += 1
        self.bytes_in += nbytes
        self.stored_events.append(event_hash(hhex))
        out = []
        for victim, _ in evicted:
            entry = self.entries.pop(victim)
            self.removed_events.append(event_hash(victim[1]))
            out.append(entry)
        return True, out

    def lookup(self, ns: str, hashes: Sequence[str]) -> list[SharedEntry]:
        """Entries for the leading run of ``hashes`` the tier holds (touched: most recently used)."""
        run = []
        for h in hashes:
            entry = self.entries.get((ns, h))
            if entry is None:
                break
            self.lru.touch((ns, h))
            entry.hits += 1
            run.append(entry)
        self.hits += len(run)
        self.misses += int(len(run) < len(hashes))
        self.bytes_out += sum(e.nbytes for e in run)
        return run

    def clear(self) -> list[SharedEntry]:
        self.removed_events.extend(event_hash(h) for _, h in self.entries)
        out = list(self.entries.values())
        self.entries.clear()
        self.lru.clear()
        return out

    def take_events(self) -> tuple[list[int], list[int]]:
        stored, removed = self.stored_events, self.removed_events
        self.stored_events, self.removed_events = [], []
        return stored, removed

    def all_event_hashes(self) -> list[int]:
        return [event_hash(h) for _, h in self.entries]

    def stats(self) -> dict[str, Any]:
        return {
            **self.lru.stats(), "hits": self.hits, "misses": self.misses, "puts": self.puts,
            "duplicate_puts": self.duplicate_puts, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
        }
