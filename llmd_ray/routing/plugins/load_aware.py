"""``load-aware``: scorer (balance). llm-d's load-aware scorer: waiting queue against a threshold.

Inputs: ``Endpoint.num_waiting``.

Score: 0.5 for an empty queue; otherwise ``0.5 * (1 - min(waiting, threshold) / threshold)``,
so 0 at or beyond the threshold. (Scores above 0.5 are reserved, as in llm-d,
for endpoints known to have spare capacity.)

Parameters: ``threshold``.

Example:

```yaml
plugins:
- type: load-aware
  parameters:
    threshold: 64
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: load-aware
    weight: 1
```
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from llmd_ray.routing.framework import Category, CycleState, PluginParameters, Scorer
from llmd_ray.routing.types import Endpoint


class LoadAwareParameters(PluginParameters):
    threshold: int = Field(128, gt=0, description="Waiting requests at which the score reaches 0.")


class LoadAwareScorer(Scorer):
    type = "load-aware"
    category: ClassVar[Category] = "balance"
    Parameters = LoadAwareParameters

    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        t = float(self.params.threshold)
        return [0.5 if e.num_waiting <= 0 else 0.5 * (1.0 - min(e.num_waiting, t) / t) for e in endpoints]

    def score_table(self, cycle: CycleState, cands):
        t = float(self.params.threshold)
        w = cands.col("num_waiting")
        return np.where(w <= 0, 0.5, 0.5 * (1.0 - np.minimum(w, t) / t))
