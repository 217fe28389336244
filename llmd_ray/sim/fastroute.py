"""The Scheduler's decisions over a whole ``EndpointTable``, from structures kept between decisions.

``FastRouter(scheduler).schedule(request, table)`` returns the endpoint
``scheduler.schedule(request, table).target`` would (tested decision by
decision against the per-endpoint path, ``tests/unit/test_sim_fastroute.py``),
taking the same draws from the scheduler's RNG and leaving every plugin in the
same state; ``on_routed`` feeds the plugins through ``Scheduler.on_routed``.
It runs the real plugins' state and code where a decision is per-request
(the prefix index's one match per request, the warm set's scoring and
picking, the filter's verdict counters) and replaces the passes over every
endpoint that only repeat work between stats syncs:

* the ``prefix-cache-affinity`` imbalance gate's min/max load: ``LoadBounds``
  (heaps over backlog keys, updated on each ``on_routed``);
* scoring and picking every endpoint when the request is cold or routed by
  load: ``BaseRanking`` (the balance scorers' totals, their order and ties,
  computed by the scorers' own array code once per sync).

Profiles it does not know (other filters or scorers, a weighted-random
picker, infinite weights, a subclassed RNG, a precise match source) make
``supported`` False: the caller uses ``Scheduler.schedule``. Rare cases it
does not shortcut (a cold request with a session or partial prefix hit,
a backlog stamped in the future) run the Scheduler's own table path.
"""

from __future__ import annotations

import math

import numpy as np

from llmd_ray.routing.framework import CycleState
from llmd_ray.routing.plugins.kv_cache_utilization import KVCacheUtilizationScorer
from llmd_ray.routing.plugins.load_aware import LoadAwareScorer
from llmd_ray.routing.plugins.max_score import MaxScorePicker
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.plugins.prefix_cache_affinity import PrefixCacheAffinityFilter
from llmd_ray.routing.plugins.queue import QueueScorer
from llmd_ray.routing.plugins.session_affinity import SessionAffinityScorer
from llmd_ray.routing.result import Affinity
from llmd_ray.routing.scheduler import Scheduler
from llmd_ray.routing.table import SMALL_CANDIDATES, Candidates, EndpointTable, LazyOrder
from llmd_ray.routing.types import RoutingRequest
from llmd_ray.sim.loadbounds import LoadBounds
from llmd_ray.sim.ranking import BaseRanking, plain_rng
from llmd_ray.sim.runindex import RunPrefixIndex
from llmd_ray.sim.runtrie import TargetMatch

BALANCE = (QueueScorer, KVCacheUtilizationScorer, LoadAwareScorer)  # read only the synced stats columns
AFFINITY = (PrefixCacheScorer, SessionAffinityScorer)  # zero on all but a few endpoints per request
ADAPTER_ONLY = ("lora-affinity",)
# the filter's verdict counters (its ``outcomes`` keys: plain strings, cheaper to hash than the enum members)
COLD, WARM, RELEASED, IMBALANCED = (str(a) for a in (Affinity.COLD, Affinity.WARM, Affinity.RELEASED,
                                                     Affinity.IMBALANCED))  # affinity scorers that score 0 everywhere for a request without a LoRA adapter


class FastRouter:
    """Decisions of ``scheduler`` over one ``EndpointTable`` (use one FastRouter per table)."""

    def __init__(self, scheduler: Scheduler):
        self.sched = scheduler
        self.unsupported = self._check(scheduler)
        prof = scheduler.profile
        self.filter: PrefixCacheAffinityFilter | None = prof.filters[0] if prof.filters else None
        self.random_ties = isinstance(prof.picker, MaxScorePicker) and prof.picker.params.tie_break == "random"
        self.adapters = any(s.type in ADAPTER_ONLY for s, _ in prof.scorers)  # LoRA requests: Scheduler.schedule
        self.bounds = None
        if self.filter is not None and self.unsupported is None:
            p = self.filter.params
            self.bounds = LoadBounds(p.prefill_tokens_per_second, p.average_uncached_tokens)
        self._synced: tuple[int, int] | None = None  # (table uid, version) the structures were built for
        self._index_of: dict[str, int] = {}
        self.base: BaseRanking | None = None
        self.fallbacks = 0  # decisions handed to Scheduler.schedule
        self.prefix = scheduler.plugin_of_type(PrefixCacheScorer)

    @property
    def supported(self) -> bool:
        return self.unsupported is None

    @staticmethod
    def _check(sched: Scheduler) -> str | None:
        """Why this profile is not supported (None: it is)."""
        prof = sched.profile
        if not plain_rng(sched.handle.rng):
            return "the RNG is not a plain random.Random on a little-endian host"
        if len(prof.filters) > 1 or any(type(f) is not PrefixCacheAffinityFilter for f in prof.filters):
            return "filters other than one prefix-cache-affinity"
        if prof.filters and (prof.filters[0].params.match_source != "approximate" or prof.filters[0].prefix is None):
            return "prefix-cache-affinity with a precise match source"
        if any(type(s) not in BALANCE + AFFINITY and s.type not in ADAPTER_ONLY for s, _ in prof.scorers):
            return "a scorer other than " + ", ".join([t.type for t in BALANCE + AFFINITY] + list(ADAPTER_ONLY))
        if any(not math.isfinite(w) for _, w in prof.scorers):
            return "an infinite weight"
        if type(prof.picker) is not MaxScorePicker:
            return "a picker other than max-score"
        return None

    # -- decisions -------------------------------------------------------------------------------
    def schedule(self, request: RoutingRequest, table: EndpointTable) -> str | None:
        """The target ``Scheduler.schedule(request, table)`` would choose (None: no endpoint)."""
        sched = self.sched
        if (self.unsupported is not None or (table.in_flight is None and not self.random_ties)
                or self.adapters and getattr(request, "lora", None)):
            return self._reference(request, table)
        if not len(table):
            return None
        handle = sched.handle
        cycle = CycleState(request, handle.clock(), handle)
        for p in sched._preparing:
            p.prepare(cycle, table)
        if self._synced != (table.uid, table.version):
            self._rebuild(table, cycle)
        kept, by_load = None, False
        f = self.filter
        if f is not None:
            b = self.bounds.bounds(cycle.now)
            if b is None:
                return self._reference(request, table)
            kept, by_load = self._filter(f, cycle, table, *b)
        if kept is not None:  # the warm set: scored and picked by the plugins themselves
            if len(kept) < SMALL_CANDIDATES:
                eps = table.endpoints
                return sched.profile.score_and_pick(cycle, [eps[i] for i in kept], [], False).target
            return self._score(cycle, Candidates(table, np.array(kept, np.intp)), False)
        if not by_load and self._affinity_somewhere(cycle, table):
            return self._score(cycle, Candidates(table), False)
        return table.ids[self.base.pick(handle.rng, table.in_flight, self.random_ties)]

    def on_routed(self, request: RoutingRequest, endpoint_id: str) -> None:
        """``Scheduler.on_routed``, then the filter's new backlog for the endpoint into ``LoadBounds``.

        When the decision did not match the request (routed by load) and the index is a ``RunPrefixIndex``,
        the prefix plugin is handed the routed endpoint's match alone (``TargetMatch``): the only one its
        and the filter's hooks read (any other read raises), instead of naming every holder."""
        prefix = self.prefix
        if prefix is not None and isinstance(prefix.index, RunPrefixIndex):
            last, version = prefix._last, prefix.index.version
            if last is None or last[0] is not request or last[1] != version:
                held = prefix.index.match_of(endpoint_id, request.block_hashes)
                prefix._last = (request, version, TargetMatch(endpoint_id, held))
        self.sched.on_routed(request, endpoint_id)
        if self.bounds is not None and self._synced is not None:
            pos = self._index_of.get(endpoint_id)
            entry = self.filter._backlog.get(endpoint_id)
            if pos is not None and entry is not None:
                self.bounds.update(pos, entry[0], entry[1])

    def _reference(self, request: RoutingRequest, table: EndpointTable) -> str | None:
        self.fallbacks += 1
        return self.sched.schedule(request, table).target

    def _rebuild(self, table: EndpointTable, cycle: CycleState) -> None:
        """After a stats sync or a membership change: the load heaps and the load-only ranking."""
        if self.bounds is not None:
            self.bounds.rebuild(table.ids, table.num_waiting.tolist(), self.filter._backlog)
        cands = Candidates(table)
        totals = np.zeros(len(table))
        for scorer, w in self.sched.profile.scorers:  # run_profile's sum, without the affinity scorers' zeros
            if scorer.category == "affinity":
                continue
            totals = totals + w * np.minimum(np.fmax(scorer.score_table(cycle, cands), 0.0), 1.0)
        self.base = BaseRanking(totals)
        self._index_of = dict(table.index_of)
        self._synced = (table.uid, table.version)

    def _filter(self, f: PrefixCacheAffinityFilter, cycle: CycleState, table: EndpointTable,
                lo: float, hi: float) -> tuple[list[int] | None, bool]:
        """``PrefixCacheAffinityFilter.filter`` from the bounds: (warm table positions kept or None: all, by load)."""
        p = f.params
        if hi - lo > p.imbalance_abs_tokens and hi > p.imbalance_ratio * lo:
            f.outcomes[IMBALANCED] += 1
            return None, True
        index_of, best, held = table.index_of, 0, []
        for eid, m in f._matches(cycle).items():
            pos = index_of.get(eid)
            if pos is not None:
                held.append((pos, m))
                if m > best:
                    best = m
        if best < p.min_match_blocks:
            f.outcomes[COLD] += 1
            return None, False
        floor, threshold, now, eps = p.warm_fraction * best, f.threshold_tokens, cycle.now, table.endpoints
        load = self.bounds.load
        kept = [pos for pos in sorted(pos for pos, m in held if m >= floor)
                if load(pos, now) <= threshold and not eps[pos].at_capacity]
        if kept:
            f.outcomes[WARM] += 1
            return kept, False
        f.outcomes[RELEASED] += 1
        return None, True

    def _affinity_somewhere(self, cycle: CycleState, table: EndpointTable) -> bool:
        """Would an affinity scorer give any endpoint of ``table`` a non-zero score?"""
        index_of, req = table.index_of, cycle.request
        for scorer, _ in self.sched.profile.scorers:
            if isinstance(scorer, PrefixCacheScorer):
                if req.num_blocks and any(eid in index_of for eid in scorer.matches(cycle)):
                    return True
            elif isinstance(scorer, SessionAffinityScorer):
                target = scorer.endpoint_of(req.session_id) if req.session_id else None
                if target is not None and target in index_of:
                    return True
        return False

    def _score(self, cycle: CycleState, cands: Candidates, by_load: bool) -> str | None:
        """``run_profile``'s scoring and picking over ``cands`` (the plugins' array code)."""
        n = len(cands)
        if n < SMALL_CANDIDATES:
            return self.sched.profile.score_and_pick(cycle, cands.endpoints(), [], by_load).target
        totals = np.zeros(n)
        for scorer, w in self.sched.profile.scorers:
            if by_load and scorer.category == "affinity":
                continue
            totals = totals + w * np.minimum(np.fmax(scorer.score_table(cycle, cands), 0.0), 1.0)
        order = self.sched.profile.picker.pick_table(cycle, cands, totals)
        first = order.first if isinstance(order, LazyOrder) else int(order[0])
        return cands.table.ids[cands.idx[first]]
