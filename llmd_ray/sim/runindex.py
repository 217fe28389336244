"""The approximate prefix index kept per run of blocks instead of per block (same answers, for the simulator).

``RunPrefixIndex`` has the API of ``llmd_ray.routing.index.ApproximatePrefixIndex``
and gives the SAME results, dict order, slots and versions included (tested
against it operation by operation: ``tests/unit/test_sim_runindex.py``). The
simulator's requests share long runs of blocks (a group's 50-block system
prompt), so it stores:

* a trie of ``Run`` s (``runtrie.py``): a run is a tuple of consecutive
  blocks of recorded paths, following its parent run; ``_where`` maps each
  block to its run. A run is split where a recorded path ends or leaves it;
* per endpoint, its LRU as an ordered dict ``run -> k``: the endpoint holds
  the run's first ``k`` blocks, and the per-block LRU of the reference is the
  concatenation of ``reversed(run.blocks[:k])`` over the entries, in order
  (a record touches whole runs tail first; eviction takes blocks from the
  front entry, i.e. its run's last held blocks);
* per run, the endpoints holding all of it (a bit mask, the reference's slot
  bits) and those holding only a leading part (``part``: slot -> k).

A request costs a few runs instead of 62 blocks. Exact when every block's
hash names its predecessor (chained hashes, as vLLM's and the simulator's); a
request that breaks that (a block after another predecessor, a repeated block)
turns it into the per-block reference, built from the runs (``per_block``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from itertools import repeat

import numpy as np

from llmd_ray.routing.index import DEFAULT_CAPACITY_BLOCKS, ApproximatePrefixIndex
from llmd_ray.sim.runtrie import Run, held_blocks, walk_runs


class RunPrefixIndex:
    """``ApproximatePrefixIndex`` over runs of blocks; ``per_block`` is the reference it became, if it had to."""

    # the reference's own slot bookkeeping and naming (same attributes): the same slot bits, the same dict order
    _slot_of = ApproximatePrefixIndex._slot_of

    def __init__(self, default_capacity: int = DEFAULT_CAPACITY_BLOCKS):
        if default_capacity <= 0:
            raise ValueError("default_capacity must be positive")
        self.default_capacity = default_capacity
        self._where: dict[Hashable, Run] = {}  # block -> its run
        self._names: dict[int, list[str]] = {}  # slot mask -> endpoint ids, highest slot first
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._free: list[int] = []
        self._lru: dict[str, OrderedDict[Run, int]] = {}
        self._held: dict[str, int] = {}  # endpoint -> blocks held
        self._capacity: dict[str, int] = {}
        self.version = 0
        self.per_block: ApproximatePrefixIndex | None = None

    def _name(self, bits: int, blocks: int, out: dict[str, int]) -> None:
        """The reference's ``_name``, with the ids of a mask of several slots kept until a slot is freed."""
        if bits & (bits - 1) == 0:
            out[self._ids[bits.bit_length() - 1]] = blocks
            return
        names = self._names.get(bits)
        if names is None:
            if len(self._names) >= 4096:
                self._names.clear()
            if bits.bit_count() < 8:
                ApproximatePrefixIndex._name(self, bits, 0, named := {})
                names = list(named)
            else:  # the set bits in C: highest slot first, as the reference's scan of bin(bits)
                raw = np.frombuffer(bits.to_bytes((bits.bit_length() + 7) // 8, "little"), np.uint8)
                ids = self._ids
                names = [ids[s] for s in np.flatnonzero(np.unpackbits(raw, bitorder="little"))[::-1].tolist()]
            self._names[bits] = names
        out.update(zip(names, repeat(blocks)))

    # -- queries ---------------------------------------------------------
    def match(self, block_hashes: Sequence[Hashable]) -> dict[str, int]:
        """Leading blocks of ``block_hashes`` held by each endpoint (only endpoints with >= 1)."""
        if self.per_block is not None:
            return self.per_block.match(block_hashes)
        if not block_hashes:
            return {}
        h = block_hashes if type(block_hashes) is tuple else tuple(block_hashes)
        walk = walk_runs(self._where, h)
        if walk is None:
            return self._to_per_block().match(h)
        runs, last, j, _ = walk
        segments = [(r, len(r.blocks)) for r in runs]
        if last is not None:
            segments.append((last, j))
        out: dict[str, int] = {}
        ids, act, b = self._ids, None, 0  # act: mask of the endpoints holding every block so far (None: all)
        for r, c in segments:
            keep, partial = r.full, []
            for slot, k in r.part.items():
                if act is None or act >> slot & 1:
                    if k >= c:
                        keep |= 1 << slot
                    else:
                        partial.append((k, -slot))
            if act is not None:
                keep &= act
                dropped = act & ~keep
                for _, s in partial:
                    dropped &= ~(1 << -s)
                if dropped:
                    self._name(dropped, b, out)
            for k, s in sorted(partial):
                out[ids[-s]] = b + k
            act, b = keep, b + c
            if not act:
                return out
        if act:
            self._name(act, b, out)
        return out

    def match_of(self, endpoint_id: str, block_hashes: Sequence[Hashable]) -> int:
        """``match(block_hashes).get(endpoint_id, 0)``, without naming the other holders."""
        h = block_hashes if type(block_hashes) is tuple else tuple(block_hashes)
        walk = walk_runs(self._where, h) if self.per_block is None and h else None
        if walk is None:
            return self.match(h).get(endpoint_id, 0)
        slot = self._slot.get(endpoint_id)
        return 0 if slot is None else held_blocks(walk[0], walk[1], walk[2], slot)

    def endpoints(self) -> list[str]:
        return self.per_block.endpoints() if self.per_block is not None else list(self._lru)

    def num_blocks(self, endpoint_id: str) -> int:
        return self.per_block.num_blocks(endpoint_id) if self.per_block is not None else self._held.get(endpoint_id, 0)

    @property
    def capacities(self) -> dict[str, int]:
        return self.per_block.capacities if self.per_block is not None else self._capacity

    def capacity(self, endpoint_id: str) -> int:
        return self.capacities.get(endpoint_id, self.default_capacity)

    def lru_order(self, endpoint_id: str) -> list[Hashable]:
        if self.per_block is not None:
            return self.per_block.lru_order(endpoint_id)
        return [x for r, k in self._lru.get(endpoint_id, {}).items() for x in reversed(r.blocks[:k])]

    # -- updates ---------------------------------------------------------
    def record(self, endpoint_id: str, block_hashes: Sequence[Hashable]) -> None:
        """Remember that ``endpoint_id`` now holds these blocks (after a routing decision)."""
        if self.per_block is None:
            h = block_hashes if type(block_hashes) is tuple else tuple(block_hashes)
            walk = walk_runs(self._where, h) if h else ([], None, 0, 0)
            if walk is None or walk[3] < len(h) and not self._new_blocks(h[walk[3]:]):
                self._to_per_block()
        if self.per_block is not None:
            self.per_block.record(endpoint_id, block_hashes)
            self.version = self.per_block.version
            return
        self.version += 1
        slot = self._slot_of(endpoint_id)
        bit, (runs, last, j, p) = 1 << slot, walk
        if last is not None:
            runs.append(self._split(last, j))
        if p < len(h):
            self._add_run(h[p:], runs[-1] if runs else None)
            runs.append(self._where[h[p]])
        lru = self._lru.get(endpoint_id)  # after the split, which rebuilds its holders' LRUs
        lru = self._lru[endpoint_id] = OrderedDict() if lru is None else lru
        pop, held = lru.pop, self._held.get(endpoint_id, 0)
        for r in runs:
            held -= pop(r, 0)
        for r in reversed(runs):  # tail first: the head ends most recent
            n = len(r.blocks)
            lru[r] = n
            held += n
            r.full |= bit
            if r.part:
                r.part.pop(slot, None)
        self._held[endpoint_id] = held
        self._evict(endpoint_id, lru)

    def _new_blocks(self, blocks: tuple) -> bool:  # no run has them, none repeated (else the chain is broken)
        return self._where.keys().isdisjoint(blocks) and len(set(blocks)) == len(blocks)

    def _add_run(self, blocks: tuple, parent: Run | None) -> None:
        self._where.update(zip(blocks, repeat(Run(blocks, parent))))

    def _split(self, run: Run, j: int) -> Run:
        """Cut ``run`` after its ``j``-th block: a new run takes the head, ``run`` keeps the tail (so its
        children's ``parent`` stays right: no child lists, no reference cycles); returns the head."""
        blocks = run.blocks
        if j == len(blocks):
            return run
        head = Run(blocks[:j], run.parent, run.full)
        run.blocks, run.parent = blocks[j:], head
        self._where.update(zip(head.blocks, repeat(head)))
        # the endpoints holding any of it: their entry becomes (run, k - j), (head, j) or (head, k)
        slots = list(run.part) + [i for i in range(run.full.bit_length()) if run.full >> i & 1]
        part, run.part = run.part, {}
        for s, k in part.items():
            if k >= j:
                head.full |= 1 << s
                if k > j:
                    run.part[s] = k - j
            else:
                head.part[s] = k
        for s in slots:
            eid = self._ids[s]
            new = OrderedDict()
            for r, k in self._lru[eid].items():
                if r is not run:
                    new[r] = k
                elif k > j:
                    new[run] = k - j
                    new[head] = j
                else:
                    new[head] = k
            self._lru[eid] = new
        return head

    def set_capacity(self, endpoint_id: str, num_blocks: int) -> None:
        """Bound the endpoint's LRU (its engine's ``num_blocks``), evicting if over."""
        if self.per_block is not None:
            self.per_block.set_capacity(endpoint_id, num_blocks)
            self.version = self.per_block.version
            return
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
        if self.per_block is not None:
            self.per_block.remove_endpoint(endpoint_id)
            self.version = self.per_block.version
            return
        self.version += 1
        self._capacity.pop(endpoint_id, None)
        self._held.pop(endpoint_id, None)
        lru = self._lru.pop(endpoint_id, None)
        slot = self._slot.pop(endpoint_id, None)
        if slot is None:
            return
        for r, k in (lru or {}).items():
            self._drop(r, k, slot)
        self._ids[slot] = None
        self._names.clear()
        self._free.append(slot)

    @staticmethod
    def _drop(run: Run, k: int, slot: int) -> None:
        if k == len(run.blocks):
            run.full &= ~(1 << slot)
        else:
            del run.part[slot]

    def _evict(self, endpoint_id: str, lru: OrderedDict) -> None:
        held = self._held.get(endpoint_id, 0)
        over = held - self._capacity.get(endpoint_id, self.default_capacity)
        if over <= 0:
            return
        slot = self._slot[endpoint_id]
        while over > 0:
            r, k = lru.popitem(last=False)
            self._drop(r, k, slot)
            held -= min(k, over)
            if k <= over:
                over -= k
                continue
            k, over = k - over, 0  # the run's last held blocks go first
            lru[r] = k
            lru.move_to_end(r, last=False)
            r.part[slot] = k
        self._held[endpoint_id] = held

    def _to_per_block(self) -> ApproximatePrefixIndex:
        """Become the per-block reference: the same LRUs, holders and slots, built from the runs."""
        ref = ApproximatePrefixIndex(self.default_capacity)
        ref._capacity = dict(self._capacity)
        ref._slot, ref._ids, ref._free = dict(self._slot), list(self._ids), list(self._free)
        holders = ref._holders
        for eid, lru in self._lru.items():
            bit = 1 << self._slot[eid]
            blocks = ref._lru[eid] = OrderedDict((x, None) for r, k in lru.items() for x in reversed(r.blocks[:k]))
            for x in blocks:
                holders[x] = holders.get(x, 0) | bit
        ref.version = self.version
        self.per_block = ref
        self._where, self._lru = {}, {}
        return ref
