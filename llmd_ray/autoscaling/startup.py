"""Measured replica start-up: from the decision that asked for a replica to its first sample.

The planner must look ahead at least as far as a replica takes to start: a
replica asked for now serves from ``now + start-up`` on, so the demand it is
sized for is the forecast at that time (plus one decision interval, until the
next decision's replicas arrive). The configured start-up (the profile's
``startup_s``) is the estimate until a start has been measured.

Per variant the tracker keeps the times of the replicas asked for and not yet
seen (oldest first); a newly seen replica of the variant is matched to the
oldest one. Replicas seen without a pending request (the initial fleet, a
restart the controller did on its own) give no measurement. A scale-down drops
the newest pending requests first (starting replicas are the first removed).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class StartupTracker:
    configured_s: dict[str, float]  # variant -> start-up assumed until measured (the profile's startup_s)
    keep: int = 5  # measurements kept per variant (the estimate is their median)
    pending: dict[str, deque] = field(default_factory=dict)  # variant -> request times of replicas not yet seen
    seen: dict[str, set[str]] = field(default_factory=dict)  # variant -> replica ids seen
    measured: dict[str, deque] = field(default_factory=dict)  # variant -> recent start-up times (s)

    def observe(self, ready: Mapping[str, Mapping[str, float]]) -> None:
        """``ready``: variant -> {replica id: when it was first seen serving}. Matches new replicas to requests."""
        for v, reps in ready.items():
            seen = self.seen.setdefault(v, set())
            queue = self.pending.setdefault(v, deque())
            for rid, born in sorted(((r, b) for r, b in reps.items() if r not in seen), key=lambda rb: rb[1]):
                seen.add(rid)
                if queue:
                    asked = queue.popleft()
                    if born >= asked:
                        self.measured.setdefault(v, deque(maxlen=self.keep)).append(born - asked)
            seen.intersection_update(reps)

    def requested(self, now: float, before: Mapping[str, int], after: Mapping[str, int],
                  ready: Mapping[str, int]) -> None:
        """Record a decision: replicas added are pending from ``now``; at most ``after - ready`` stay pending."""
        for v, n in after.items():
            queue = self.pending.setdefault(v, deque())
            queue.extend([now] * max(0, n - before.get(v, 0)))
            while len(queue) > max(0, n - ready.get(v, 0)):
                queue.pop()

    def startup_s(self, variant: str) -> float:
        m = self.measured.get(variant)
        return statistics.median(m) if m else self.configured_s.get(variant, 0.0)

    def longest_s(self) -> float:
        """The longest start-up among the variants (the horizon one forecast must cover)."""
        return max((self.startup_s(v) for v in self.configured_s), default=0.0)
