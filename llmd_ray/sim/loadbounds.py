"""The lowest and highest ``prefix-cache-affinity`` load over a table's endpoints, kept incrementally.

The filter's imbalance gate needs ``min`` and ``max`` over every endpoint of
``load(e) = max(left(e), queued(e))``, where ``queued = num_waiting x
averageUncachedTokens`` (fixed between stats syncs) and ``left`` is the
router's prefill backlog draining at ``prefillTokensPerSecond``:
``tokens - rate x (now - at)`` (``tokens`` while ``now <= at``). Every backlog
drains at the same rate, so ``left(e) ~ K(e) - rate x now`` with the constant
key ``K = tokens + rate x at``: heaps ordered by ``K`` keep the endpoints in
``left`` order. Answers are EXACT, the same floats the filter computes: the
heaps only narrow the search to the endpoints whose key is within a rounding
tolerance of the extreme one, and those are evaluated with the filter's own
formula.

``max(load) = max(max left, max queued)``; ``min(load)`` is taken per group of
endpoints with the same ``queued``: ``min over g of max(min left in g, queued_g)``,
groups in ascending ``queued`` (stopping once ``queued_g`` cannot win).
Endpoints without a backlog entry count as ``queued`` alone (so does the filter).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Group:
    """The endpoints whose queued load is ``q``: a min-heap of (K, position, version) for those with a backlog."""

    q: float
    heap: list = field(default_factory=list)
    without_backlog: int = 0


class LoadBounds:
    """``bounds(now) -> (lo, hi)`` as the filter's ``min(loads)``, ``max(loads)``; None when it cannot be exact."""

    __slots__ = ("rate", "per_waiting", "tokens", "at", "has", "ver", "group_of", "groups", "qmax", "maxheap",
                 "max_at", "n")

    def __init__(self, rate: float, per_waiting: float):
        self.rate, self.per_waiting = rate, per_waiting
        self.n = 0

    def rebuild(self, ids: list[str], num_waiting: list[float], backlog: dict[str, tuple[float, float]]) -> None:
        """From the table's ids and ``num_waiting`` column (table order) and the filter's backlog entries."""
        n = self.n = len(ids)
        self.tokens, self.at, self.has, self.ver = [0.0] * n, [0.0] * n, [False] * n, [0] * n
        groups: dict[float, _Group] = {}
        self.group_of = []
        self.maxheap, self.max_at = [], float("-inf")
        pw, rate = self.per_waiting, self.rate
        qs = [w * pw for w in num_waiting]
        for pos, eid in enumerate(ids):
            q = qs[pos]
            g = groups.get(q)
            if g is None:
                g = groups[q] = _Group(q)
            self.group_of.append(g)
            entry = backlog.get(eid)
            if entry is None:
                g.without_backlog += 1
                continue
            tok, at = entry
            self.tokens[pos], self.at[pos], self.has[pos] = tok, at, True
            k = tok + rate * at
            g.heap.append((k, pos, 0))
            self.maxheap.append((-k, pos, 0))
            self.max_at = max(self.max_at, at)
        for g in groups.values():
            heapq.heapify(g.heap)
        heapq.heapify(self.maxheap)
        self.groups = sorted(groups.values(), key=lambda g: g.q)
        self.qmax = max(qs) if qs else 0.0

    def update(self, pos: int, tokens: float, at: float) -> None:
        """The filter's backlog entry of the endpoint at ``pos`` is now (tokens, at)."""
        g = self.group_of[pos]
        if not self.has[pos]:
            self.has[pos] = True
            g.without_backlog -= 1
        v = self.ver[pos] = self.ver[pos] + 1
        self.tokens[pos], self.at[pos] = tokens, at
        if at > self.max_at:
            self.max_at = at
        k = tokens + self.rate * at
        heapq.heappush(g.heap, (k, pos, v))
        heapq.heappush(self.maxheap, (-k, pos, v))
        if len(self.maxheap) > 4 * self.n + 64:
            self._compact()

    def _compact(self) -> None:
        ver = self.ver
        self.maxheap = [e for e in self.maxheap if e[2] == ver[e[1]]]
        heapq.heapify(self.maxheap)
        for g in self.groups:
            g.heap = [e for e in g.heap if e[2] == ver[e[1]]]
            heapq.heapify(g.heap)

    def left(self, pos: int, now: float) -> float:
        """The filter's backlog still to drain at ``pos`` (its formula, its float operations)."""
        tok, at = self.tokens[pos], self.at[pos]
        return tok - self.rate * (now - at) if now > at else tok

    def load(self, pos: int, now: float) -> float:
        q = self.group_of[pos].q
        if not self.has[pos]:
            return q
        left = self.left(pos, now)
        return left if left > q else q

    def _top(self, heap: list) -> tuple | None:
        ver = self.ver
        while heap and heap[0][2] != ver[heap[0][1]]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _window(self, heap: list, bound: float) -> list[int]:
        """Positions of the current entries with key <= bound (a heap's such entries form a subtree at its root)."""
        ver, out, stack, n = self.ver, [], [0], len(heap)
        while stack:
            i = stack.pop()
            if i < n and heap[i][0] <= bound:
                _, pos, v = heap[i]
                if v == ver[pos]:
                    out.append(pos)
                stack.append(2 * i + 1)
                stack.append(2 * i + 2)
        return out

    def bounds(self, now: float) -> tuple[float, float] | None:
        if not self.n or now < self.max_at:  # a backlog stamped in the future: K order is not left order
            return None
        rate = self.rate
        tol = 1e-9 * (rate * abs(now) + 1.0)
        hi = self.qmax
        top = self._top(self.maxheap)
        if top is not None:
            k = -top[0]
            t = tol + 1e-9 * abs(k)
            if k - rate * now >= hi - t:
                lmax = max(self.left(p, now) for p in self._window(self.maxheap, top[0] + 2 * t))
                if lmax > hi:
                    hi = lmax
        lo = float("inf")
        for g in self.groups:
            q = g.q
            if q >= lo:
                break
            if g.without_backlog:
                lo = q
                continue
            top = self._top(g.heap)
            k = top[0]
            t = tol + 1e-9 * abs(k)
            if k - rate * now <= q - t:  # some member has drained below q: its load is q
                lo = q
                continue
            lmin = min(self.left(p, now) for p in self._window(g.heap, k + 2 * t))
            cand = lmin if lmin > q else q
            if cand < lo:
                lo = cand
        return lo, hi
