"""Approximate prefix index: which endpoint was recently sent which blocks.

The router cannot see the engines' caches, so it remembers what it routed:
after each decision the request's block hashes are recorded against the chosen
endpoint, in a per-endpoint LRU bounded by the endpoint's KV capacity
(``num_blocks``). This mirrors llm-d's approximate prefix-cache indexer.

Eviction mimics vLLM's block pool: a request's blocks are freed tail first, so
``record`` touches them last-to-first and the first block of a prefix is the
most recently used; under pressure the tails of old prefixes go before the
shared heads (system prompts) that many requests reuse.

``match`` costs O(matched blocks x endpoints holding them): a hash -> holders
map narrows the set of endpoints block by block and stops at the first block
nobody holds.
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
        self._holders: dict[Hashable, set[str]] = {}
        self._lru: dict[str, OrderedDict[Hashable, None]] = {}
        self._capacity: dict[str, int] = {}
        self.version = 0  # bumps on every change (lets a caller reuse a match computed since)

    # -- queries ---------------------------------------------------------
    def match(self, block_hashes: Sequence[Hashable]) -> dict[str, int]:
        """Leading blocks of ``block_hashes`` held by each endpoint (only endpoints with >= 1)."""
        if not block_hashes:
            return {}
        holders = self._holders
        first = holders.get(block_hashes[0])
        if not first:
            return {}
        active = set(first)
        out: dict[str, int] = {}
        n = len(block_hashes)
        for i in range(1, n):
            held = holders.get(block_hashes[i])
            if held is None:
                for ep in active:
                    out[ep] = i
                return out
            if not active <= held:
                dropped = active - held
                for ep in dropped:
                    out[ep] = i
                active -= dropped
                if not active:
                    return out
        for ep in active:
            out[ep] = n
        return out

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
        holders = self._holders
        for h in reversed(block_hashes):  # tail first: the head ends most recent
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                s = holders.get(h)
                if s is None:
                    holders[h] = {endpoint_id}
                else:
                    s.add(endpoint_id)
        self._evict(endpoint_id, lru)

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
        if not lru:
            return
        holders = self._holders
        for h in lru:
            self._drop_holder(holders, h, endpoint_id)

    def _evict(self, endpoint_id: str, lru: OrderedDict) -> None:
        over = len(lru) - self._capacity.get(endpoint_id, self.default_capacity)
        holders = self._holders
        for _ in range(over):
            h, _v = lru.popitem(last=False)
            self._drop_holder(holders, h, endpoint_id)

    @staticmethod
    def _drop_holder(holders: dict, h: Hashable, endpoint_id: str) -> None:
        s = holders.get(h)
        if s is not None:
            s.discard(endpoint_id)
            if not s:
                del holders[h]
