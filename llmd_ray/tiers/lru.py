"""``LRUBudget``: least-recently-used bookkeeping under an explicit byte budget (pure).

The one eviction policy of every KV tier (host-memory pool, disk spill, the
shared object-store tier): keys are block hashes, each with its size in
bytes. ``admit`` makes room by evicting the least recently used keys and
returns them, so the caller frees (or spills) exactly those. A block larger
than the whole budget is refused, never admitted over budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class LRUBudget:
    budget_bytes: int
    used_bytes: int = 0
    evictions: int = 0
    evicted_bytes: int = 0
    refused: int = 0
    _entries: OrderedDict = field(default_factory=OrderedDict)  # key -> nbytes, oldest first

    def __post_init__(self):
        if self.budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {self.budget_bytes}")

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Hashable]:
        """Keys, least recently used first."""
        return iter(list(self._entries))

    def nbytes(self, key: Hashable) -> int | None:
        return self._entries.get(key)

    def touch(self, key: Hashable) -> bool:
        """Mark ``key`` most recently used; False when absent."""
        if key not in self._entries:
            return False
        self._entries.move_to_end(key)
        return True

    def fits(self, nbytes: int) -> bool:
        return 0 <= nbytes <= self.budget_bytes

    def admit(self, key: Hashable, nbytes: int) -> tuple[bool, list[tuple[Hashable, int]]]:
        """Add (or refresh) ``key``; returns (admitted, [(evicted key, nbytes), ...]).

        Eviction never removes ``key`` itself. A refused block evicts nothing.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if not self.fits(nbytes):
            self.refused += 1
            return False, []
        old = self._entries.pop(key, None)
        if old is not None:
            self.used_bytes -= old
        evicted: list[tuple[Hashable, int]] = []
        while self.used_bytes + nbytes > self.budget_bytes and self._entries:
            victim, size = self._entries.popitem(last=False)
            self.used_bytes -= size
            self.evictions += 1
            self.evicted_bytes += size
            evicted.append((victim, size))
        self._entries[key] = nbytes
        self.used_bytes += nbytes
        return True, evicted

    def remove(self, key: Hashable) -> int | None:
        """Forget ``key`` (not counted as an eviction); its size, or None when absent."""
        size = self._entries.pop(key, None)
        if size is not None:
            self.used_bytes -= size
        return size

    def clear(self) -> list[Hashable]:
        keys = list(self._entries)
        self._entries.clear()
        self.used_bytes = 0
        return keys

    def stats(self) -> dict[str, int]:
        return {
            "blocks": len(self._entries), "used_bytes": self.used_bytes, "budget_bytes": self.budget_bytes,
            "evictions": self.evictions, "evicted_bytes": self.evicted_bytes, "refused": self.refused,
        }
