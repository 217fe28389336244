"""Turning optimizer plans into scale actions without flapping.

* Up: at once (after an optional per-variant cooldown): a threatened SLO is
  worse than a few minutes of an extra replica.
* Down: only after a lower count has been wanted for ``stable_s``, one replica
  per variant per decision, and only if the smaller fleet still serves the
  demand inflated by ``margin`` (the caller's ``safe`` check runs the
  optimizer with the counts fixed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class Hysteresis:
    stable_s: float = 60.0
    up_cooldown_s: float = 0.0
    down_since: dict[str, float] = field(default_factory=dict)
    last_up: dict[str, float] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # variant -> why a wanted scale-down was held

    def apply(self, now: float, current: Mapping[str, int], desired: Mapping[str, int],
              safe: Callable[[dict[str, int]], bool]) -> dict[str, int]:
        out = dict(current)
        self.blocked.clear()
        for v, want in desired.items():
            have = current.get(v, 0)
            if want > have:
                self.down_since.pop(v, None)
                if now - self.last_up.get(v, float("-inf")) >= self.up_cooldown_s:
                    out[v] = want
                    self.last_up[v] = now
                else:
                    self.blocked[v] = "upscale cooldown"
            elif want == have:
                self.down_since.pop(v, None)
        for v in sorted(desired, key=lambda name: (desired[name] - current.get(name, 0), name)):
            want, have = desired[v], current.get(v, 0)
            if want >= have:
                continue
            since = self.down_since.setdefault(v, now)
            if now - since < self.stable_s:
                self.blocked[v] = f"waiting for {self.stable_s - (now - since):.0f}s more of lower demand"
                continue
            trial = dict(out)
            trial[v] = have - 1
            if safe(trial):
                out = trial
            else:
                self.blocked[v] = "N-1 replicas would not meet the SLO with margin"
        return out
