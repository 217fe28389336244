"""``max-score``: picker. Rank endpoints by total score, highest first.

Ties (totals within 1e-9) are broken by fewer requests in flight
(``Endpoint.in_flight``), then at random with the scheduler's seeded RNG, so
equal endpoints share load instead of the first one taking it all. With
``tieBreak: random`` the in-flight step is skipped.

Inputs: the profile's weighted totals; ``Endpoint.in_flight``.

Output: all candidates, best first.

Parameters: ``tieBreak``.

Example:

```yaml
plugins:
- type: queue
- type: max-score
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue
  - pluginRef: max-score
```
"""

from __future__ import annotations

import random
import sys
from itertools import repeat
from operator import attrgetter
from typing import Literal

import numpy as np
from pydantic import Field

from llmd_ray.routing.framework import CycleState, Picker, PluginParameters
from llmd_ray.routing.table import LazyOrder
from llmd_ray.routing.types import Endpoint


TIE_EPSILON = 1e-9
_IN_FLIGHT = attrgetter("in_flight")


def draws(rng: random.Random, m: int) -> np.ndarray:
    """``[rng.random() for _ in range(m)]`` as an array, leaving ``rng`` in the same state.

    For a plain ``random.Random`` it takes the same Mersenne Twister words in one
    ``getrandbits`` call (words least significant first) and combines each pair as
    CPython's ``random()`` does: ``((w0 >> 5) * 2**26 + (w1 >> 6)) / 2**53``.
    """
    if type(rng) is not random.Random or sys.byteorder != "little":
        rnd = rng.random
        return np.array([rnd() for _ in repeat(None, m)], dtype=np.float64)
    return draws_53(rng, m) * (1.0 / 9007199254740992.0)


def draws_53(rng: random.Random, m: int) -> np.ndarray:
    """``draws(rng, m) * 2**53`` as exact int64s (same order, cheaper to sort); a plain ``random.Random`` only."""
    if m == 0:
        return np.zeros(0, np.int64)
    w = np.frombuffer(rng.getrandbits(64 * m).to_bytes(8 * m, "little"), "<u4").astype(np.int64)
    return ((w[0::2] >> 5) << 26) | (w[1::2] >> 6)


class MaxScoreParameters(PluginParameters):
    tie_break: Literal["least-in-flight", "random"] = Field(
        "least-in-flight", description="Between equal totals: fewer in flight first, then random; or random only."
    )


class MaxScorePicker(Picker):
    type = "max-score"
    Parameters = MaxScoreParameters

    def pick(self, cycle: CycleState, endpoints: list[Endpoint], totals: list[float]) -> list[int]:
        order = sorted(range(len(endpoints)), key=totals.__getitem__, reverse=True)
        # re-order each run of tied totals; runs are rare with live stats, so this is cheap
        i, n = 0, len(order)
        while i < n:
            j = i + 1
            while j < n and totals[order[i]] - totals[order[j]] <= TIE_EPSILON:
                j += 1
            if j - i > 1:
                order[i:j] = self._break_tie(order[i:j], endpoints)
            i = j
        return order

    def pick_table(self, cycle: CycleState, cands, totals: np.ndarray) -> np.ndarray | LazyOrder:
        """``pick`` on arrays: the same order and the same RNG draws, paying only for tied endpoints.

        Usually lazy: the best endpoint now, the full ranking when read (with the draws taken now)."""
        n = len(totals)
        ts = np.sort(totals)[::-1]  # the totals in ranking order
        gaps = ts[:-1] - ts[1:]
        chained = gaps <= TIE_EPSILON
        if not chained.any():  # no ties: the first maximum is the best
            return LazyOrder(int(np.argmax(totals)), n, lambda: np.argsort(-totals, kind="stable"))
        rng, table = self.handle.rng, cands.table
        random_ties = self.params.tie_break == "random"
        if (gaps[chained].any() or type(rng) is not random.Random or sys.byteorder != "little"
                or not random_ties and table.in_flight is None):
            return self._pick_eager(cands, totals)
        # Runs of equal totals, in ranking order; the draws for every tied endpoint are taken now.
        tied = np.zeros(n, bool)
        tied[:-1] = chained
        tied[1:] |= chained
        r_tied = draws_53(rng, int(np.count_nonzero(tied)))
        inflight = None if random_ties else table.in_flight[cands.idx]  # a copy: in_flight changes later
        top = np.flatnonzero(totals == ts[0])  # the first run, in ranking (= index) order
        if len(top) == 1:
            first = int(top[0])
        else:  # its draws are the first ones
            keys = (r_tied[: len(top)],) if random_ties else (r_tied[: len(top)], inflight[top])
            first = int(top[np.lexsort(keys)[0]])

        def full() -> np.ndarray:
            order = np.argsort(-totals, kind="stable")
            run_id = np.empty(n, np.int64)
            run_id[0] = 0
            np.cumsum(~chained, out=run_id[1:])
            r = np.zeros(n, np.int64)
            r[tied] = r_tied
            by_draw = np.argsort(r, kind="stable")
            if random_ties:
                key = run_id
            else:
                f = inflight[order].astype(np.int64)
                key = run_id * (int(f.max()) + 1) + f  # (run, in flight) as one int
            return order[by_draw[np.argsort(key[by_draw], kind="stable")]]  # lexsort((draw, in flight, run))

        return LazyOrder(first, n, full)

    def _pick_eager(self, cands, totals: np.ndarray) -> np.ndarray:
        order = np.argsort(-totals, kind="stable")  # stable, like sorted(..., reverse=True)
        ts = totals[order]
        gaps = ts[:-1] - ts[1:]
        chained = gaps <= TIE_EPSILON
        if not chained.any():
            return order
        if not gaps[chained].any():  # the usual case: tied totals are equal, each chain is one run
            return self._break_equal_ties(cands, order, chained)
        # A run never spans an adjacent gap > epsilon: each chain of small gaps (positions a..b) is
        # one run when its whole span is within epsilon, else split as ``pick`` splits it.
        edges = np.flatnonzero(np.diff(np.concatenate(([False], chained, [False])).astype(np.int8)))
        starts, ends = edges[0::2], edges[1::2]
        if (ts[starts] - ts[ends] <= TIE_EPSILON).all():
            n = len(ts)
            delta = np.zeros(n + 1, np.int64)
            delta[starts] += 1
            delta[ends + 1] -= 1  # a chain may start right after another ends
            pos = np.flatnonzero(np.cumsum(delta)[:n])
            first = np.zeros(n, np.int64)
            first[starts] = 1
            run_id = np.cumsum(first)[pos]
        else:
            runs: list[tuple[int, int]] = []  # [i, j) of tied positions, in order
            tsl = ts.tolist()
            for a, b in zip(starts.tolist(), ends.tolist()):
                i = a
                while i <= b:
                    j = i + 1
                    while j <= b and tsl[i] - tsl[j] <= TIE_EPSILON:
                        j += 1
                    if j - i > 1:
                        runs.append((i, j))
                    i = j
            if not runs:
                return order
            pos = np.concatenate([np.arange(i, j) for i, j in runs])
            run_id = np.repeat(np.arange(len(runs)), [j - i for i, j in runs])
        tied = order[pos]
        m = len(pos)
        r = draws(self.handle.rng, m)  # the same draws, in the same order, as ``pick``
        if self.params.tie_break == "random":
            perm = np.lexsort((r, run_id))
        else:
            table = cands.table
            if table.in_flight is not None:
                inflight = table.in_flight[cands.idx[tied]]
            else:
                eps = table.endpoints
                inflight = np.fromiter(map(_IN_FLIGHT, map(eps.__getitem__, cands.idx[tied].tolist())), np.float64, m)
            perm = np.lexsort((r, inflight, run_id))
        order[pos] = tied[perm]
        return order

    def _break_equal_ties(self, cands, order: np.ndarray, chained: np.ndarray) -> np.ndarray:
        """Runs of equal totals: one lexsort by (run, in flight, draw); the draws in ``pick``'s order."""
        n = len(order)
        run_id = np.empty(n, np.int64)
        run_id[0] = 0
        np.cumsum(~chained, out=run_id[1:])
        tied = np.zeros(n, bool)
        tied[:-1] = chained
        tied[1:] |= chained
        rng = self.handle.rng
        if type(rng) is not random.Random or sys.byteorder != "little":
            return order[self._lexsort_ties(cands, order, tied, run_id)]
        r = np.zeros(n, np.int64)
        r[tied] = draws_53(rng, int(np.count_nonzero(tied)))  # exact: orders as the floats do
        by_draw = np.argsort(r, kind="stable")
        if self.params.tie_break == "random":
            key = run_id
        else:
            table = cands.table
            if table.in_flight is not None:
                inflight = table.in_flight[order if cands.full else cands.idx[order]].astype(np.int64)
            else:
                eps, at = table.endpoints, cands.idx[order[tied]].tolist()
                inflight = np.zeros(n, np.int64)
                inflight[tied] = np.fromiter(map(_IN_FLIGHT, map(eps.__getitem__, at)), np.int64, len(at))
            key = run_id * (int(inflight.max()) + 1) + inflight  # (run, in flight) as one int
        # lexsort((draw, in flight, run)) as two stable argsorts of ints
        return order[by_draw[np.argsort(key[by_draw], kind="stable")]]

    def _lexsort_ties(self, cands, order: np.ndarray, tied: np.ndarray, run_id: np.ndarray) -> np.ndarray:
        r = np.zeros(len(order))
        r[tied] = draws(self.handle.rng, int(np.count_nonzero(tied)))
        if self.params.tie_break == "random":
            return np.lexsort((r, run_id))
        eps = cands.table.endpoints
        inflight = np.fromiter((eps[i].in_flight for i in cands.idx[order].tolist()), np.float64, len(order))
        return np.lexsort((r, inflight, run_id))

    def _break_tie(self, tied: list[int], endpoints: list[Endpoint]) -> list[int]:
        rnd = self.handle.rng.random
        if self.params.tie_break == "random":
            keys = {k: rnd() for k in tied}
        else:
            keys = {k: (endpoints[k].in_flight, rnd()) for k in tied}
        return sorted(tied, key=keys.__getitem__)
