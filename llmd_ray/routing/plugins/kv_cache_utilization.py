"""``kv-cache-utilization``: scorer (balance). Prefer endpoints with free KV-cache space.

Inputs: ``Endpoint.kv_cache_usage`` (fraction of KV blocks in use, 0-1).

Score: ``1 - kv_cache_usage``.

Parameters: none.

Example:

```yaml
plugins:
- type: kv-cache-utilization
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: kv-cache-utilization
    weight: 2
```
"""

from __future__ import annotations

from typing import ClassVar

from llmd_ray.routing.framework import Category, CycleState, Scorer
from llmd_ray.routing.types import Endpoint


class KVCacheUtilizationScorer(Scorer):
    type = "kv-cache-utilization"
    category: ClassVar[Category] = "balance"

    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        return [1.0 - e.kv_cache_usage for e in endpoints]

    def score_table(self, cycle: CycleState, cands):
        return 1.0 - cands.col("kv_cache_usage")
