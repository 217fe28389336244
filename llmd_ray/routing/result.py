"""What a decision produced: the filters' affinity verdicts and the ranked, explained result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Affinity(StrEnum):
    """A filter's verdict on cache affinity for one request."""

    WARM = "warm"  # kept the endpoints holding the prefix
    COLD = "cold"  # no useful match anywhere: kept all
    RELEASED = "released"  # every warm endpoint saturated: kept all, routed by load
    IMBALANCED = "imbalanced"  # the fleet is skewed: kept all, routed by load

    @property
    def by_load(self) -> bool:
        """The profile's affinity scorers score 0 for this request, so load decides."""
        return self is Affinity.RELEASED or self is Affinity.IMBALANCED


@dataclass(slots=True)
class FilterOutcome:
    """One filter's effect on one decision, as recorded in the result."""

    plugin: str
    kept: int
    removed: Sequence[str]
    reason: str
    affinity: Affinity | None = None


@dataclass(slots=True)
class SchedulingResult:
    """One decision; score lists are aligned with ``endpoint_ids``."""

    request_id: str
    profile: str
    endpoint_ids: Sequence[str]  # the endpoints that passed the filters
    ranked: Sequence[str]  # best first (empty: nothing eligible)
    totals: Sequence[float]
    scores: dict[str, Sequence[float]]  # scorer name -> clamped, unweighted scores
    weights: dict[str, float]
    filters: list[FilterOutcome]

    @property
    def target(self) -> str | None:
        return self.ranked[0] if self.ranked else None

    @property
    def affinity(self) -> Affinity | None:
        """The first affinity verdict a filter gave (None: no filter judged affinity)."""
        return next((f.affinity for f in self.filters if f.affinity is not None), None)

    @property
    def affinity_off(self) -> str | None:
        """Which filter switched the affinity scorers off, and why (None: they scored)."""
        return next((f"{f.plugin}: {f.affinity}" for f in self.filters if f.affinity is not None and f.affinity.by_load),
                    None)

    def total_of(self) -> dict[str, float]:
        return {ep: float(t) for ep, t in zip(self.endpoint_ids, self.totals)}

    def scores_of(self, endpoint_id: str) -> dict[str, float]:
        i = self.endpoint_ids.index(endpoint_id)
        return {name: float(s[i]) for name, s in self.scores.items()}

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: for logs and debugging endpoints."""
        return {
            "request_id": self.request_id, "profile": self.profile, "ranked": list(self.ranked),
            "totals": self.total_of(), "weights": self.weights,
            "scores": {ep: self.scores_of(ep) for ep in self.endpoint_ids},
            "filters": [{"plugin": f.plugin, "kept": f.kept, "removed": list(f.removed), "reason": f.reason,
                         "affinity": None if f.affinity is None else str(f.affinity)} for f in self.filters],
            "affinity_off": self.affinity_off,
        }

    def explain(self, top: int = 5) -> str:
        lines = [f"request {self.request_id}: profile {self.profile!r} -> {self.target}"]
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
