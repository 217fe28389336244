"""``queue``: scorer (balance). Prefer endpoints with fewer waiting requests.

Inputs: ``Endpoint.num_waiting`` (the engine's waiting queue, as last reported).

Score: min-max normalised over the candidates, fewer is better:
``(max - waiting) / (max - min)``; 1.0 for all when they are equal.

Parameters: none.

Example:

```yaml
plugins:
- type: queue
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue
    weight: 2
```
"""

from __future__ import annotations

from typing import ClassVar

from llmd_ray.routing.framework import Category, CycleState, Scorer
from llmd_ray.routing.types import Endpoint


def min_max_fewer_is_better(values: list[float]) -> list[float]:
    """(max - v) / (max - min); all 1.0 when every value is equal."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1.0] * len(values)
    span = hi - lo
    return [(hi - v) / span for v in values]


class QueueScorer(Scorer):
    type = "queue"
    category: ClassVar[Category] = "balance"

    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        return min_max_fewer_is_better([e.num_waiting for e in endpoints])
