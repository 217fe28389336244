"""``weighted-random``: picker. Draw endpoints with probability proportional to total score.

Produces a full ranking by weighted sampling without replacement
(Efraimidis-Spirakis: key ``u ** (1 / total)``, ``u`` uniform from the
scheduler's seeded RNG), so the first endpoint is drawn in proportion to its
score and the rest follow as fallbacks. Endpoints scoring 0 come last, in
random order. Spreads load where ``max-score`` would herd onto one endpoint.

Inputs: the profile's weighted totals.

Output: all candidates, in draw order.

Parameters: none.

Example:

```yaml
plugins:
- type: queue
- type: weighted-random
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue
  - pluginRef: weighted-random
```
"""

from __future__ import annotations

from llmd_ray.routing.framework import CycleState, Picker
from llmd_ray.routing.types import Endpoint


class WeightedRandomPicker(Picker):
    type = "weighted-random"

    def pick(self, cycle: CycleState, endpoints: list[Endpoint], totals: list[float]) -> list[int]:
        rnd = self.handle.rng.random
        keys = []
        for t in totals:
            u = rnd()
            keys.append((1, u ** (1.0 / t)) if t > 0 else (0, u))
        return sorted(range(len(endpoints)), key=keys.__getitem__, reverse=True)
