"""The scheduling framework: filters -> weighted scorers -> one picker, in one profile.

Modelled on llm-d's inference scheduler (Gateway API Inference Extension EPP):

* a ``Filter`` narrows the candidate endpoints and returns a typed
  ``FilterResult`` (what it kept, why, and its cache-affinity verdict);
* each ``Scorer`` scores every remaining endpoint in [0, 1] (the framework
  clamps; NaN counts as 0); the profile sums ``weight * score``;
* one ``Picker`` ranks the endpoints from those totals, best first;
  the ``SchedulingResult`` (``result.py``) records all of it.

A scheduler runs exactly one profile: under P/D each role is its own
deployment with its own router.

Plugins own their state (the ``prefix-cache`` plugin owns the approximate
prefix index) and share per-decision data through ``CycleState``; the
scheduler lends them long-lived resources through ``PluginHandle`` (the
clock, a seeded RNG, the precise index view). ``schedule`` does not change
router state: the caller reports the replica actually used with
``Scheduler.on_routed`` (Ray may try several, in rank order), which feeds
``Plugin.on_routed``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from llmd_ray.routing.result import Affinity, FilterOutcome, SchedulingResult
from llmd_ray.routing.types import Endpoint, RoutingRequest

if TYPE_CHECKING:
    from llmd_ray.routing.table import Candidates, LazyOrder

Category = Literal["affinity", "distribution", "balance"]


class PluginParameters(BaseModel):
    """Base of every plugin's parameters: camelCase keys in YAML, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


@runtime_checkable
class PreciseIndexView(Protocol):
    """A local, fast view of the KV-event index (no blocking remote call per lookup)."""

    def lookup(self, block_hashes: Sequence[int]) -> Mapping[str, tuple[int, str]]:
        """Leading blocks held per endpoint and the tier they are in (only endpoints with >= 1)."""
        ...

    def staleness_s(self) -> float:
        """Seconds since the view last synced with the index (a heartbeat counts)."""
        ...

    def is_recovering(self) -> bool:
        """The index restarted and has not yet replayed the engines' events: its answers are incomplete."""
        ...


@dataclass(slots=True)
class PluginHandle:
    """Long-lived resources the scheduler lends its plugins."""

    clock: Callable[[], float]
    rng: random.Random
    precise_view: PreciseIndexView | None = None


@dataclass(slots=True)
class CycleState:
    """Per-decision scratch space: the request, the time, data plugins compute once (keyed by plugin)."""

    request: RoutingRequest
    now: float
    handle: PluginHandle
    data: dict[Any, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RoutedEvent:
    """A request was sent to ``endpoint_id`` at ``now``."""

    request: RoutingRequest
    endpoint_id: str
    now: float


@dataclass(slots=True)
class FilterResult:
    """What a filter decided.

    ``kept``: from ``Filter.filter``, the endpoints kept (a list); from
    ``Filter.filter_table``, a keep-mask over the candidates, or None for all.
    """

    kept: list[Endpoint] | np.ndarray | None
    reason: str  # human-readable, for explain() and logs
    affinity: Affinity | None = None  # set by filters that judge cache affinity


class Plugin:
    """Base of every plugin: a type name, a pydantic ``Parameters`` model, hooks."""

    type: ClassVar[str]
    Parameters: ClassVar[type[PluginParameters]] = PluginParameters

    def __init__(self, name: str, params: PluginParameters, handle: PluginHandle):
        self.name = name
        self.params = params
        self.handle = handle

    def prepare(self, cycle: CycleState, endpoints: Sequence[Endpoint]) -> None:
        """Before the profile runs, with every endpoint (llm-d's PrepareData): e.g. sync state from their stats."""

    def on_routed(self, event: RoutedEvent) -> None:
        """The request was sent to ``event.endpoint_id`` (llm-d's PreRequest)."""

    def on_completed(self, request_id: str, endpoint_id: str) -> None:
        """The request finished on ``endpoint_id`` (llm-d's ResponseComplete)."""

    def remove_endpoint(self, endpoint_id: str) -> None:
        """The endpoint is gone: drop per-endpoint state."""

    def stats(self) -> dict[str, Any]:
        """Counters worth exporting (e.g. fallbacks)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Filter(Plugin):
    def filter(self, cycle: CycleState, endpoints: list[Endpoint]) -> FilterResult:
        """The endpoints to keep (``FilterResult.kept``, a list), why, and any affinity verdict."""
        raise NotImplementedError

    def filter_table(self, cycle: CycleState, cands: Candidates) -> FilterResult:
        """``filter`` over an ``EndpointTable``: ``kept`` is a keep-mask over ``cands`` (None: keep all).

        This default runs ``filter`` on the candidates' objects; plugins override it with array code.
        """
        eps = cands.endpoints()
        out = self.filter(cycle, eps)
        kept = out.kept
        if len(kept) == len(eps):
            out.kept = None
        else:
            kept_ids = {e.id for e in kept}
            out.kept = np.fromiter((e.id in kept_ids for e in eps), bool, len(eps))
        return out


class Scorer(Plugin):
    category: ClassVar[Category]

    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> Sequence[float]:
        """One score per endpoint, aligned with ``endpoints``, in [0, 1]."""
        raise NotImplementedError

    def score_table(self, cycle: CycleState, cands: Candidates) -> np.ndarray:
        """``score`` over an ``EndpointTable``'s candidates (default: ``score`` on their objects)."""
        return np.asarray(self.score(cycle, cands.endpoints()), dtype=np.float64)


class Picker(Plugin):
    def pick(self, cycle: CycleState, endpoints: list[Endpoint], totals: list[float]) -> list[int]:
        """Indices into ``endpoints``, best first (a full ranking)."""
        raise NotImplementedError

    def pick_table(self, cycle: CycleState, cands: Candidates, totals: np.ndarray) -> np.ndarray | LazyOrder:
        """``pick`` over an ``EndpointTable``'s candidates (default: ``pick`` on their objects).

        May return a ``LazyOrder``: the best index now, the full order when read (any RNG draws the
        ranking needs must still be taken now, so later decisions see the same RNG state)."""
        return np.asarray(self.pick(cycle, cands.endpoints(), totals.tolist()), dtype=np.intp)


class SchedulingProfile:
    """filters -> weighted scorers -> picker."""

    def __init__(self, name: str, filters: Sequence[Filter], scorers: Sequence[tuple[Scorer, float]], picker: Picker):
        self.name = name
        self.filters = list(filters)
        self.scorers = list(scorers)
        self.picker = picker

    def run(self, cycle: CycleState, endpoints: list[Endpoint]) -> SchedulingResult:
        outcomes: list[FilterOutcome] = []
        by_load = False
        for f in self.filters:
            if not endpoints:
                break
            out = f.filter(cycle, endpoints)
            kept = out.kept
            if len(kept) != len(endpoints):
                kept_ids = {e.id for e in kept}
                removed = [e.id for e in endpoints if e.id not in kept_ids]
            else:
                removed = []
            outcomes.append(FilterOutcome(f.name, len(kept), removed, out.reason, out.affinity))
            by_load = by_load or (out.affinity is not None and out.affinity.by_load)
            endpoints = kept
        return self.score_and_pick(cycle, endpoints, outcomes, by_load)

    def score_and_pick(
        self, cycle: CycleState, endpoints: list[Endpoint], outcomes: list[FilterOutcome], by_load: bool
    ) -> SchedulingResult:
        """The scorers and the picker over the filtered ``endpoints`` (``by_load``: affinity scorers score 0)."""
        n = len(endpoints)
        totals = [0.0] * n
        scores: dict[str, list[float]] = {}
        weights: dict[str, float] = {}
        for scorer, w in self.scorers:
            if not n:
                raw = []
            elif by_load and scorer.category == "affinity":
                raw = [0.0] * n
            else:
                raw = scorer.score(cycle, endpoints)
            if len(raw) != n:
                raise RuntimeError(f"scorer {scorer.name!r} returned {len(raw)} scores for {n} endpoints")
            # clamp to [0, 1]; NaN fails ``x >= 0`` and becomes 0
            s = [(x if x <= 1.0 else 1.0) if x >= 0.0 else 0.0 for x in raw]
            scores[scorer.name] = s
            weights[scorer.name] = w
            totals = [t + w * x for t, x in zip(totals, s)]
        order = self.picker.pick(cycle, endpoints, totals) if n else []
        return SchedulingResult(
            request_id=cycle.request.request_id, profile=self.name, endpoint_ids=[e.id for e in endpoints],
            ranked=[endpoints[i].id for i in order], totals=totals, scores=scores, weights=weights, filters=outcomes,
        )
