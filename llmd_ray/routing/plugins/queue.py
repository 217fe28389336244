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

import numpy as np

from llmd_ray.routing.framework import Category, CycleState, Scorer
from llmd_ray.routing.types import Endpoint


def min_max_fewer_is_better_array(values: np.ndarray) -> np.ndarray:
    """``min_max_fewer_is_better`` on an array (same arithmetic)."""
    if not len(values):
        return values
    lo, hi = values.min(), values.max()
    if hi == lo:
        return np.ones(len(values))
    return (hi - values) / (hi - lo)


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

    def score_table(self, cycle: CycleState, cands) -> np.ndarray:
        return min_max_fewer_is_better_array(cands.col("num_waiting"))
