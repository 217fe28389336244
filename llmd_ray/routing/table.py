"""``EndpointTable``: endpoints with their reported stats as numpy columns, for fleet-scale routing.

``Scheduler.schedule(request, endpoints)`` accepts any sequence of
``Endpoint``; given an ``EndpointTable`` it runs the same plugins on arrays
(filters return masks, scorers arrays, the picker an order) instead of
per-endpoint Python loops, with the same results, bit for bit (same IEEE
operations in the same order, same draws from the seeded RNG). The Scheduler
uses it from 64 endpoints (the discrete-event simulator routes over 1,000).

Contract: the stats columns (``num_waiting``, ``kv_cache_usage``,
``num_blocks``) are a snapshot taken by ``sync()``; call it after changing
those fields on the ``Endpoint`` objects (a router does, when stats refresh).
``in_flight`` and ``max_ongoing`` change per decision and are always read from
the objects, only for the few endpoints that need them (ties, warm sets), unless
the table is built with ``track_in_flight=True``: then the owner changes
``in_flight`` only through ``add_in_flight`` and the picker reads a column.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from llmd_ray.routing.framework import CycleState, SchedulingProfile
from llmd_ray.routing.result import FilterOutcome, SchedulingResult
from llmd_ray.routing.types import Endpoint

_tables = itertools.count(1)


class EndpointTable(Sequence[Endpoint]):
    """A list of endpoints (``len``, index, iterate) plus column snapshots of their stats."""

    __slots__ = ("endpoints", "ids", "index_of", "num_waiting", "kv_cache_usage", "num_blocks", "version",
                 "members", "uid", "in_flight")

    def __init__(self, endpoints: Iterable[Endpoint] = (), *, track_in_flight: bool = False):
        self.endpoints: list[Endpoint] = list(endpoints)
        self.in_flight: np.ndarray | None = np.zeros(0) if track_in_flight else None
        self.uid = next(_tables)
        self.version = 0  # bumps on every sync (stats or membership)
        self.members = 0  # bumps when endpoints come or go
        self._reindex()

    # -- Sequence[Endpoint] -------------------------------------------------
    def __len__(self) -> int:
        return len(self.endpoints)

    def __getitem__(self, i):
        return self.endpoints[i]

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.endpoints)

    # -- membership ---------------------------------------------------------
    def add(self, endpoint: Endpoint) -> None:
        if endpoint.id in self.index_of:
            raise ValueError(f"endpoint {endpoint.id!r} is already in the table")
        self.endpoints.append(endpoint)
        self._reindex()

    def remove(self, endpoint_id: str) -> Endpoint | None:
        pos = self.index_of.get(endpoint_id)
        if pos is None:
            return None
        ep = self.endpoints.pop(pos)
        self._reindex()
        return ep

    def add_in_flight(self, endpoint_id: str, delta: int) -> None:
        """``Endpoint.in_flight += delta``, kept in the column when tracked."""
        pos = self.index_of[endpoint_id]
        self.endpoints[pos].in_flight += delta
        if self.in_flight is not None:
            self.in_flight[pos] += delta

    def get(self, endpoint_id: str) -> Endpoint | None:
        pos = self.index_of.get(endpoint_id)
        return None if pos is None else self.endpoints[pos]

    def _reindex(self) -> None:
        self.ids = [e.id for e in self.endpoints]
        self.index_of = {eid: i for i, eid in enumerate(self.ids)}
        if len(self.index_of) != len(self.ids):
            raise ValueError("endpoint ids must be unique")
        self.members += 1
        self.sync()

    # -- stats ----------------------------------------------------------------
    def sync(self) -> None:
        """Re-read the stats columns from the endpoints (after a stats refresh)."""
        eps = self.endpoints
        n = len(eps)
        self.num_waiting = np.fromiter((e.num_waiting for e in eps), np.float64, n)
        self.kv_cache_usage = np.fromiter((e.kv_cache_usage for e in eps), np.float64, n)
        self.num_blocks = [e.num_blocks for e in eps]
        if self.in_flight is not None:
            self.in_flight = np.fromiter((e.in_flight for e in eps), np.float64, n)
        self.version += 1


class Candidates:
    """The endpoints of a table still in play within one profile run: table positions ``idx``."""

    __slots__ = ("table", "idx", "_cols", "full")

    def __init__(self, table: EndpointTable, idx: np.ndarray | None = None):
        self.table = table
        self.full = idx is None  # every endpoint of the table, in table order: columns need no gather
        self.idx = np.arange(len(table)) if idx is None else idx
        self._cols: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.idx)

    def col(self, name: str) -> np.ndarray:
        """A stats column gathered for these candidates (cached)."""
        c = self._cols.get(name)
        if c is None:
            c = getattr(self.table, name)
            c = self._cols[name] = c if self.full else c[self.idx]
        return c

    def endpoint(self, i: int) -> Endpoint:
        return self.table.endpoints[self.idx[i]]

    def endpoints(self) -> list[Endpoint]:
        eps = self.table.endpoints
        return [eps[i] for i in self.idx.tolist()]

    def ids(self) -> IdList:
        return IdList(self.table.ids, self.idx)

    def keep(self, mask: np.ndarray) -> Candidates:
        out = Candidates(self.table, self.idx[mask])
        for k, v in self._cols.items():
            out._cols[k] = v[mask]
        return out

    def gather(self, column: np.ndarray) -> np.ndarray:
        """A table-aligned array restricted to the candidates."""
        return column if self.full else column[self.idx]

    def positions(self, values_by_id: dict[str, float]) -> np.ndarray:
        """``values_by_id`` as an array aligned with the candidates (absent ids: 0)."""
        full = np.zeros(len(self.table.endpoints))
        index_of = self.table.index_of
        for eid, v in values_by_id.items():
            pos = index_of.get(eid)
            if pos is not None:
                full[pos] = v
        return full if self.full else full[self.idx]


class IdList(Sequence[str]):
    """Endpoint ids picked out of a table by an index array; materialised only when read."""

    __slots__ = ("_ids", "_idx")

    def __init__(self, ids: list[str], idx: np.ndarray):
        self._ids = ids
        self._idx = idx

    def __len__(self) -> int:
        return len(self._idx)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._ids[j] for j in self._idx[i].tolist()]
        return self._ids[self._idx[i]]

    def __iter__(self) -> Iterator[str]:
        ids = self._ids
        return (ids[j] for j in self._idx.tolist())

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def index(self, value, start: int = 0, stop: int | None = None) -> int:
        return list(self).index(value, start, len(self) if stop is None else stop)

    def __repr__(self) -> str:
        return repr(list(self))


class LazyOrder:
    """A picker's ranking whose best entry is known now and the rest computed on first use."""

    __slots__ = ("first", "n", "_compute", "_order")

    def __init__(self, first: int, n: int, compute):
        self.first, self.n, self._compute, self._order = first, n, compute, None

    def array(self) -> np.ndarray:
        if self._order is None:
            self._order = self._compute()
            self._compute = None
        return self._order


class RankedIds(Sequence[str]):
    """Endpoint ids in a ``LazyOrder``: ``[0]`` (the target) is free, the rest materialise on demand."""

    __slots__ = ("_ids", "_idx", "_order", "_full")

    def __init__(self, ids: list[str], idx: np.ndarray, order: LazyOrder):
        self._ids, self._idx, self._order, self._full = ids, idx, order, None

    def _all(self) -> IdList:
        if self._full is None:
            self._full = IdList(self._ids, self._idx[self._order.array()])
        return self._full

    def __len__(self) -> int:
        return self._order.n

    def __getitem__(self, i):
        if isinstance(i, int) and (i == 0 or i == -self._order.n) and self._order.n:
            return self._ids[self._idx[self._order.first]]
        return self._all()[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def index(self, value, start: int = 0, stop: int | None = None) -> int:
        return self._all().index(value, start, stop)

    def __repr__(self) -> str:
        return repr(list(self))


SMALL_CANDIDATES = 48  # run_profile scores fewer candidates with the per-endpoint code (same result)


def run_profile(profile: SchedulingProfile, cycle: CycleState, table: EndpointTable) -> SchedulingResult:
    """``SchedulingProfile.run`` on arrays: the same decision, bit for bit. ``endpoint_ids``, ``ranked`` and
    ``removed`` are lazy ``IdList``s; ``totals`` and the score lists are numpy arrays."""
    cands = Candidates(table)
    outcomes: list[FilterOutcome] = []
    by_load = False
    for f in profile.filters:
        if not len(cands):
            break
        out = f.filter_table(cycle, cands)
        mask = out.kept
        by_load = by_load or (out.affinity is not None and out.affinity.by_load)
        if mask is None:
            outcomes.append(FilterOutcome(f.name, len(cands), [], out.reason, out.affinity))
            continue
        removed = IdList(table.ids, cands.idx[~mask])
        cands = cands.keep(mask)
        outcomes.append(FilterOutcome(f.name, len(cands), removed, out.reason, out.affinity))
    n = len(cands)
    if n < SMALL_CANDIDATES:  # e.g. a warm set: per-endpoint code is cheaper than numpy here
        return profile.score_and_pick(cycle, cands.endpoints(), outcomes, by_load)
    totals = np.zeros(n)
    scores: dict[str, np.ndarray] = {}
    weights: dict[str, float] = {}
    zeros = None
    for scorer, w in profile.scorers:
        if by_load and scorer.category == "affinity" or not n:
            if math.isfinite(w):  # all 0: the totals do not change (inf x 0 would make them NaN)
                zeros = np.zeros(n) if zeros is None else zeros
                scores[scorer.name] = zeros
                weights[scorer.name] = w
                continue
            raw = np.zeros(n)
        else:
            raw = scorer.score_table(cycle, cands)
        if len(raw) != n:
            raise RuntimeError(f"scorer {scorer.name!r} returned {len(raw)} scores for {n} endpoints")
        s = np.minimum(np.fmax(raw, 0.0), 1.0)  # clamp to [0, 1]; fmax turns NaN into 0
        scores[scorer.name] = s
        weights[scorer.name] = w
        totals = totals + w * s
    order = profile.picker.pick_table(cycle, cands, totals) if n else np.zeros(0, np.intp)
    ranked = RankedIds(table.ids, cands.idx, order) if isinstance(order, LazyOrder) else IdList(
        table.ids, cands.idx[order])
    return SchedulingResult(
        request_id=cycle.request.request_id, profile=profile.name, endpoint_ids=cands.ids(), ranked=ranked,
        totals=totals, scores=scores, weights=weights, filters=outcomes,
    )
