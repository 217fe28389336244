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

from typing import Literal

from pydantic import Field

from llmd_ray.routing.framework import CycleState, Picker, PluginParameters
from llmd_ray.routing.types import Endpoint


TIE_EPSILON = 1e-9


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

    def _break_tie(self, tied: list[int], endpoints: list[Endpoint]) -> list[int]:
        rnd = self.handle.rng.random
        if self.params.tie_break == "random":
            keys = {k: rnd() for k in tied}
        else:
            keys = {k: (endpoints[k].in_flight, rnd()) for k in tied}
        return sorted(tied, key=keys.__getitem__)
