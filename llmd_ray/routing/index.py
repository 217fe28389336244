"""Approximate prefix index: which endpoint was recently sent which blocks.

The router cannot see the engines' caches, so it remembers what it routed:
after each decision the request's block hashes are recorded against the chosen
endpoint, in a per-endpoint LRU bounded by the endpoint's KV capacity
(``num_blocks``). This mirrors llm-d's approximate prefix-cache indexer.

Eviction mimics vLLM's block pool: a request's blocks are freed tail first, so
``record`` touches them last-to-first and the first block of a prefix is the
most recently used; under pressure the tails of old prefixes go before the
shared heads (system prompts) that many requests reuse.

``match`` narrows the endpoints still matching block by block and stops at the
first block nobody holds; holders are a bit mask per hash (one bit per
endpoint slot), so a block costs one AND over the fleet's bits (a few machine
words at 1,000 endpoints) instead of a set comparison per endpoint, and the
index holds one small int per block instead of a set.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

DEFAULT_CAPACITY_BLOCKS = 8192


class ApproximatePrefixIndex:
    """Per-endpoint LRU of block hashes; longest held prefix per endpoint."""

    def __init__(self, default_capacity: int = DEFAULT_CAPACITY_BLOCKS):
        if default_capacity <= 0:
            raise ValueError("default_capacity must be positive")
        self.default_capacity = default_capacity
        self._holders: dict[Hashable, int] = {}  # block -> bit mask of the slots of the endpoints holding it
        self._slot: dict[str, int] = {}  # endpoint -> its bit in the masks
        self._ids: list[str | None] = []  # slot -> endpoint
        self._free: list[int] = []  # slots of removed endpoints, for reuse
        self._lru: dict[str, OrderedDict[Hashable, None]] = {}
        self._capacity: dict[str, int] = {}
        self.version = 0  # bumps on every change (lets a caller reuse a match computed since)

    # -- queries ---------------------------------------------------------
    def match(self, block_hashes: Sequence[Hashable]) -> dict[str, int]:
        """Leading blocks of ``block_hashes`` held by each endpoint (only endpoints with >= 1)."""
        if not block_hashes:
            return {}
        holders = self._holders
        active = holders.get(block_hashes[0], 0)
        if not active:
            return {}
        out: dict[str, int] = {}
        n = len(block_hashes)
        for i in range(1, n):
            held = holders.get(block_hashes[i], 0)
            dropped = active & ~held
            if dropped:
                self._name(dropped, i, out)
                active ^= dropped
                if not active:
                    return out
        self._name(active, n, out)
        return out

    def _name(self, bits: int, blocks: int, out: dict[str, int]) -> None:
        """``out[endpoint] = blocks`` for each endpoint whose slot bit is set in ``bits``."""
        ids = self._ids
        if bits & (bits - 1) == 0:  # one endpoint
            out[ids[bits.bit_length() - 1]] = blocks
            return
        s = bin(bits)
        top = len(s) - 1  # bit 0 is the last character
        i = s.find("1", 2)
        while i >= 0:
            out[ids[top - i]] = blocks
            i = s.find("1", i + 1)

    def endpoints(self) -> list[str]:
        return list(self._lru)

    def num_blocks(self, endpoint_id: str) -> int:
        lru = self._lru.get(endpoint_id)
        return len(lru) if lru is not None else 0

    @property
    def capacities(self) -> dict[str, int]:
        """Capacities set so far (read-only view; endpoints absent use the default)."""
        return self._capacity

    def capacity(self, endpoint_id: str) -> int:
        return self._capacity.get(endpoint_id, self.default_capacity)

    def lru_order(self, endpoint_id: str) -> list[Hashable]:
        """The endpoint's blocks, least recently used first (the eviction order)."""
        return list(self._lru.get(endpoint_id, ()))

    # -- updates ---------------------------------------------------------
    def record(self, endpoint_id: str, block_hashes: Sequence[Hashable]) -> None:
        """Remember that ``endpoint_id`` now holds these blocks (after a routing decision)."""
        self.version += 1
        lru = self._lru.get(endpoint_id)
        if lru is None:
            lru = self._lru[endpoint_id] = OrderedDict()
        bit = 1 << self._slot_of(endpoint_id)
        holders = self._holders
        for h in reversed(block_hashes):  # tail first: the head ends most recent
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                holders[h] = holders.get(h, 0) | bit
        self._evict(endpoint_id, lru)

    def _slot_of(self, endpoint_id: str) -> int:
        slot = self._slot.get(endpoint_id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._ids[slot] = endpoint_id
            else:
                slot = len(self._ids)
                self._ids.append(endpoint_id)
            self._slot[endpoint_id] = slot
        return slot

    def set_capacity(self, endpoint_id: str, num_blocks: int) -> None:
        """Bound the endpoint's LRU (its engine's ``num_blocks``), evicting if over."""
        if num_blocks <= 0:
            raise ValueError(f"capacity of {endpoint_id!r} must be positive, got {num_blocks}")
        if self._capacity.get(endpoint_id) == num_blocks:
            return
        self._capacity[endpoint_id] = num_blocks
        self.version += 1
        lru = self._lru.get(endpoint_id)
        if lru is not None:
            self._evict(endpoint_id, lru)

    def remove_endpoint(self, endpoint_id: str) -> None:
        """Forget an endpoint (replica gone, or its cache was reset)."""
        self.version += 1
        self._capacity.pop(endpoint_id, None)
        lru = self._lru.pop(endpoint_id, None)
        slot = self._slot.pop(endpoint_id, None)
        if slot is None:
            return
        holders, mask = self._holders, ~(1 << slot)
        for h in lru or ():
            self._drop_holder(holders, h, mask)
        self._ids[slot] = None
        self._free.append(slot)

    def _evict(self, endpoint_id: str, lru: OrderedDict) -> None:
        over = len(lru) - self._capacity.get(endpoint_id, self.default_capacity)
        if over <= 0:
            return
        holders, mask = self._holders, ~(1 << self._slot[endpoint_id])
        for _ in range(over):
            h, _v = lru.popitem(last=False)
            self._drop_holder(holders, h, mask)

    @staticmethod
    def _drop_holder(holders: dict, h: Hashable, mask: int) -> None:
        m = holders.get(h)
        if m is not None:
            m &= mask
            if m:
                holders[h] = m
            else:
                del holders[h]
