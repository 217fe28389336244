"""The ``max-score`` picker's choice over a table's load-only totals, from a ranking kept per stats sync.

When a decision scores every endpoint and no affinity score is non-zero (the
request is cold, or the filter routes by load), each endpoint's total is the
weighted sum of the balance scorers (queue, kv-cache-utilization, load-aware),
which read only the synced stats: the totals, their order and their runs of
ties are fixed until the next sync. ``BaseRanking`` computes them once; a
decision then only needs the picker's RNG draws and the in-flight counts.

The picker's semantics (``MaxScorePicker.pick``, which the array path copies):
endpoints sorted by total, highest first (ties in table order); runs of totals
within ``TIE_EPSILON`` of the run's first, from the top; every endpoint in a run
of two or more takes one RNG draw, in ranking order; the best is the top run's
endpoint with the fewest in flight (``least-in-flight``), then the lowest draw.
So a decision takes ``m`` draws (the endpoints in runs of two or more) and
only the top run's draws decide.
"""

from __future__ import annotations

import random
import sys

import numpy as np

from llmd_ray.routing.plugins.max_score import TIE_EPSILON, draws_53


def greedy_draws(values: list[float]) -> tuple[int, int]:
    """(draws taken, size of the first run) for totals sorted highest first, run by run as the picker does."""
    i, n, taken, first = 0, len(values), 0, 0
    while i < n:
        j = i + 1
        while j < n and values[i] - values[j] <= TIE_EPSILON:
            j += 1
        if i == 0:
            first = j
        if j - i > 1:
            taken += j - i
        i = j
    return taken, first


class BaseRanking:
    """The picker's fixed part for one set of totals (table order): draws per decision and the top run."""

    __slots__ = ("m", "top", "top_list")

    def __init__(self, totals: np.ndarray):
        order = np.argsort(-totals, kind="stable")
        ts = totals[order]
        gaps = ts[:-1] - ts[1:]
        chained = gaps <= TIE_EPSILON
        if not chained.any():
            self.m, first = 0, 1
        elif not gaps[chained].any():  # only exact ties: each chain of equal totals is one run
            tied = np.zeros(len(ts), bool)
            tied[:-1] = chained
            tied[1:] |= chained
            self.m = int(np.count_nonzero(tied))
            first = int(np.count_nonzero(ts == ts[0]))
        else:  # near ties: the picker's greedy runs
            self.m, first = greedy_draws(ts.tolist())
        self.top = order[:first]  # the top run, in ranking order (its draws are the first ones)
        self.top_list = self.top.tolist()

    def pick(self, rng: random.Random, in_flight: np.ndarray | None, random_ties: bool) -> int:
        """The table position of the best endpoint; takes the decision's draws from ``rng``."""
        m, top = self.m, self.top
        if len(top) == 1:
            if m:
                rng.getrandbits(64 * m)  # the draws the picker takes for the other runs
            return self.top_list[0]
        if random_ties:
            low = None
        else:
            f = in_flight[top]
            low = np.flatnonzero(f == f.min())
            if len(low) == 1:  # the fewest in flight decides: the draws are taken, not read
                rng.getrandbits(64 * m)
                return self.top_list[int(low[0])]
        k = len(top) if low is None else int(low[-1]) + 1  # the draws read: the top run's, up to the last tied
        r = draws_53(rng, k)
        if m > k:
            rng.getrandbits(64 * (m - k))
        return self.top_list[int(np.argmin(r))] if low is None else self.top_list[int(low[np.argmin(r[low])])]


def plain_rng(rng) -> bool:
    """Draws can be taken in bulk (``draws_53``) only from a plain ``random.Random`` on a little-endian host."""
    return type(rng) is random.Random and sys.byteorder == "little"
