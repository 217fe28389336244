"""The scheduling framework: filters -> weighted scorers -> one picker, per profile.

Modelled on llm-d's inference scheduler (Gateway API Inference Extension EPP):

* a ``Filter`` narrows the candidate endpoints (and says why);
* each ``Scorer`` scores every remaining endpoint in [0, 1] (the framework
  clamps; NaN counts as 0); a profile sums ``weight * score``;
* one ``Picker`` ranks the endpoints from those totals, best first;
* a ``ProfileHandler`` decides which profiles run for a request (one, or e.g.
  ``decode`` then ``prefill`` for P/D), and which result is primary.

Plugins share per-decision state through ``CycleState`` (the request, the
prefix matches computed once) and long-lived resources through
``PluginHandle`` (the approximate prefix index, the precise index view, the
clock, a seeded RNG). ``schedule`` does not change router state: the caller
reports the replica actually used with ``Scheduler.on_routed`` (Ray may try
several, in rank order), which feeds ``Plugin.on_routed``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from llmd_ray.routing.index import ApproximatePrefixIndex
from llmd_ray.routing.types import Endpoint, RoutingRequest

if TYPE_CHECKING:
    from llmd_ray.routing.table import Candidates, LazyOrder
    from llmd_ray.routing.plugins.precise_prefix_cache import PreciseIndexView

Category = Literal["affinity", "distribution", "balance"]


class PluginParameters(BaseModel):
    """Base of every plugin's parameters: camelCase keys in YAML, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


@dataclass(slots=True)
class PluginHandle:
    """Long-lived resources the scheduler lends its plugins."""

    index: ApproximatePrefixIndex
    clock: Callable[[], float]
    rng: random.Random
    precise_view: PreciseIndexView | None = None


@dataclass(slots=True)
class CycleState:
    """Per-decision scratch space: the request, the time, lazily computed matches."""

    request: RoutingRequest
    now: float
    handle: PluginHandle
    profile: str | None = None  # the profile now running
    affinity_off: str | None = None  # set by a filter: this profile's affinity scorers score 0 (why)
    data: dict[str, Any] = field(default_factory=dict)
    _matches: dict[str, int] | None = None

    def prefix_matches(self) -> dict[str, int]:
        """Approximate index: leading blocks each endpoint holds (absent: 0). Computed once."""
        if self._matches is None:
            self._matches = self.handle.index.match(self.request.block_hashes)
        return self._matches


@dataclass(slots=True)
class RoutedEvent:
    """A request was sent to ``endpoint_id``; ``prior_matches`` is the index before recording it."""

    request: RoutingRequest
    endpoint_id: str
    profile: str | None
    prior_matches: dict[str, int]
    now: float


class Plugin:
    """Base of every plugin: a type name, a pydantic ``Parameters`` model, hooks."""

    type: ClassVar[str]
    Parameters: ClassVar[type[PluginParameters]] = PluginParameters

    def __init__(self, name: str, params: PluginParameters, handle: PluginHandle):
        self.name = name
        self.params = params
        self.handle = handle

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
    def filter(self, cycle: CycleState, endpoints: list[Endpoint]) -> tuple[list[Endpoint], str]:
        """Return the endpoints to keep and a short reason."""
        raise NotImplementedError

    def filter_table(self, cycle: CycleState, cands: Candidates) -> tuple[np.ndarray | None, str]:
        """``filter`` over an ``EndpointTable``: a keep-mask over ``cands`` (None: keep all) and the reason.

        This default runs ``filter`` on the candidates' objects; plugins override it with array code.
        """
        eps = cands.endpoints()
        kept, reason = self.filter(cycle, eps)
        if len(kept) == len(eps):
            return None, reason
        kept_ids = {e.id for e in kept}
        return np.fromiter((e.id in kept_ids for e in eps), bool, len(eps)), reason


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


class ProfileHandler(Plugin):
    """Chooses the profiles to run, possibly in rounds, and the primary result.

    ``pick_profiles`` is called repeatedly with the results so far until it
    returns no names (llm-d's ProfilePicker), so a P/D handler can run
    ``decode`` first and then decide whether ``prefill`` is worth running.
    """

    def pick_profiles(
        self, cycle: CycleState, profiles: Mapping[str, SchedulingProfile], results: Mapping[str, ProfileResult]
    ) -> list[str]:
        raise NotImplementedError

    def primary(self, cycle: CycleState, results: Mapping[str, ProfileResult]) -> str:
        raise NotImplementedError

    def validate_profiles(self, profile_names: Sequence[str]) -> str | None:
        """An error message if these profiles cannot work with this handler."""
        return None


@dataclass(slots=True)
class FilterOutcome:
    plugin: str
    kept: int
    removed: list[str]
    reason: str


@dataclass(slots=True)
class ProfileResult:
    """One profile's decision; score lists are aligned with ``endpoint_ids``."""

    profile: str
    endpoint_ids: list[str]  # the endpoints that passed the filters
    ranked: list[str]  # best first
    totals: list[float]
    scores: dict[str, list[float]]  # scorer name -> clamped, unweighted scores
    weights: dict[str, float]
    filters: list[FilterOutcome]
    affinity_off: str | None = None  # why affinity scorers were switched off, if they were

    @property
    def target(self) -> str | None:
        return self.ranked[0] if self.ranked else None

    def total_of(self) -> dict[str, float]:
        return dict(zip(self.endpoint_ids, self.totals))

    def scores_of(self, endpoint_id: str) -> dict[str, float]:
        i = self.endpoint_ids.index(endpoint_id)
        return {name: s[i] for name, s in self.scores.items()}

    def explain(self, top: int = 5) -> str:
        lines = [f"profile {self.profile!r}:"]
        for f in self.filters:
            lines.append(f"  filter {f.plugin}: kept {f.kept}, removed {len(f.removed)} ({f.reason})")
        if self.affinity_off:
            lines.append(f"  affinity scorers off ({self.affinity_off})")
        totals = self.total_of()
        for ep in self.ranked[:top]:
            parts = ", ".join(f"{n}={s:.3f}x{self.weights[n]:g}" for n, s in self.scores_of(ep).items())
            lines.append(f"  {ep}: total {totals[ep]:.3f} [{parts}]")
        if len(self.ranked) > top:
            lines.append(f"  ... {len(self.ranked) - top} more")
        return "\n".join(lines)


@dataclass(slots=True)
class SchedulingResult:
    request_id: str
    primary_profile: str
    profiles: dict[str, ProfileResult]

    @property
    def ranked(self) -> list[str]:
        """The primary profile's endpoint ids, best first (empty: nothing eligible)."""
        p = self.profiles.get(self.primary_profile)
        return p.ranked if p is not None else []

    @property
    def target(self) -> str | None:
        r = self.ranked
        return r[0] if r else None

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: for logs and debugging endpoints."""
        return {
            "request_id": self.request_id, "primary_profile": self.primary_profile, "ranked": self.ranked,
            "profiles": {
                name: {
                    "ranked": p.ranked, "totals": p.total_of(), "weights": p.weights,
                    "scores": {ep: p.scores_of(ep) for ep in p.endpoint_ids},
                    "filters": [{"plugin": f.plugin, "kept": f.kept, "removed": f.removed, "reason": f.reason}
                                for f in p.filters],
                    "affinity_off": p.affinity_off,
                }
                for name, p in self.profiles.items()
            },
        }

    def explain(self, top: int = 5) -> str:
        head = f"request {self.request_id}: primary {self.primary_profile!r} -> {self.target}"
        return "\n".join([head] + [p.explain(top) for p in self.profiles.values()])


class SchedulingProfile:
    """filters -> weighted scorers -> picker."""

    def __init__(self, name: str, filters: Sequence[Filter], scorers: Sequence[tuple[Scorer, float]], picker: Picker):
        self.name = name
        self.filters = list(filters)
        self.scorers = list(scorers)
        self.picker = picker

    def run(self, cycle: CycleState, endpoints: list[Endpoint]) -> ProfileResult:
        cycle.profile = self.name
        cycle.affinity_off = None
        outcomes: list[FilterOutcome] = []
        for f in self.filters:
            if not endpoints:
                break
            kept, reason = f.filter(cycle, endpoints)
            if len(kept) != len(endpoints):
                kept_ids = {e.id for e in kept}
                removed = [e.id for e in endpoints if e.id not in kept_ids]
            else:
                removed = []
            outcomes.append(FilterOutcome(f.name, len(kept), removed, reason))
            endpoints = kept
        return self._score_and_pick(cycle, endpoints, outcomes)

    def _score_and_pick(self, cycle: CycleState, endpoints: list[Endpoint], outcomes: list[FilterOutcome]):
        n = len(endpoints)
        totals = [0.0] * n
        scores: dict[str, list[float]] = {}
        weights: dict[str, float] = {}
        for scorer, w in self.scorers:
            if not n:
                raw = []
            elif cycle.affinity_off is not None and scorer.category == "affinity":
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
        return ProfileResult(
            profile=self.name, endpoint_ids=[e.id for e in endpoints], ranked=[endpoints[i].id for i in order],
            totals=totals, scores=scores, weights=weights, filters=outcomes, affinity_off=cycle.affinity_off,
        )
