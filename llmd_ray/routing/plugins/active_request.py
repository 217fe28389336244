"""``active-request``: scorer (balance). Prefer endpoints with fewer requests in flight.

Unlike ``queue`` this uses the router's own count, which is current (engine
stats lag by a reporting interval) but covers only this router's traffic.

Inputs: ``Endpoint.in_flight`` (router-side: sent, not yet finished).

Score: min-max normalised over the candidates, fewer is better; 1.0 for all
when they are equal.

Parameters: none.

Example:

```yaml
plugins:
- type: active-request
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: active-request
    weight: 1
```
"""

from __future__ import annotations

from typing import ClassVar

from llmd_ray.routing.framework import Category, CycleState, Scorer
from llmd_ray.routing.plugins.queue import min_max_fewer_is_better
from llmd_ray.routing.types import Endpoint


class ActiveRequestScorer(Scorer):
    type = "active-request"
    category: ClassVar[Category] = "balance"

    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        return min_max_fewer_is_better([e.in_flight for e in endpoints])
