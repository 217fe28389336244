"""``prefix-cache``: scorer (affinity). Prefer endpoints that already hold the request's prefix.

Reads the approximate prefix index, which remembers the block hashes the
router sent to each endpoint (recorded by ``Scheduler.on_routed``, bounded per
endpoint by its ``num_blocks``).

Inputs: the request's block hashes; the approximate prefix index.

Score: matched leading blocks / full blocks in the request (0 for a request
shorter than one block).

Parameters: none.

Example:

```yaml
plugins:
- type: prefix-cache
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache
    weight: 3
```
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from llmd_ray.routing.framework import Category, CycleState, Scorer
from llmd_ray.routing.types import Endpoint


class PrefixCacheScorer(Scorer):
    type = "prefix-cache"
    category: ClassVar[Category] = "affinity"

    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        total = cycle.request.num_blocks
        matches = cycle.prefix_matches()
        if total == 0 or not matches:
            return [0.0] * len(endpoints)
        get = matches.get
        return [get(e.id, 0) / total for e in endpoints]

    def score_table(self, cycle: CycleState, cands):
        total = cycle.request.num_blocks
        matches = cycle.prefix_matches()
        if total == 0 or not matches:
            return np.zeros(len(cands))
        return cands.positions(matches) / total
