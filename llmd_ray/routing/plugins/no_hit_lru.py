"""``no-hit-lru``: scorer (distribution). Spread cold prefixes over the endpoints.

A request with no prefix hit anywhere ("cold") will create new KV blocks
wherever it goes. This scorer sends cold requests to the endpoint least
recently given one, so new prefixes (and the cache growth they bring) spread
evenly instead of piling onto whichever endpoint a load score ties to.

Inputs: the ``prefix-cache`` plugin's approximate index (cold = no endpoint
holds the first block); its own record of which endpoint received each cold request.

Score: for a cold request, endpoints never given a cold request score 1.0; the
others ``1 - rank / (n - 1)`` where ``rank`` counts from the least recently
used (after the never-used ones). For a warm request: 0.5 for all (neutral).

Parameters: none.

Example:

```yaml
plugins:
- type: no-hit-lru
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: no-hit-lru
    weight: 1
```
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

from llmd_ray.routing.framework import Category, CycleState, RoutedEvent, Scorer
from llmd_ray.routing.plugins.prefix_cache import UsesPrefixIndex
from llmd_ray.routing.types import Endpoint


class NoHitLRUScorer(UsesPrefixIndex, Scorer):
    type = "no-hit-lru"
    category: ClassVar[Category] = "distribution"

    def __init__(self, name, params, handle):
        super().__init__(name, params, handle)
        self._lru: OrderedDict[str, None] = OrderedDict()  # least recently given a cold request first

    def lru_order(self) -> list[str]:
        return list(self._lru)

    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        n = len(endpoints)
        if self.prefix.matches(cycle):
            return [0.5] * n
        if n == 1:
            return [1.0]
        lru = self._lru
        position = {ep: i for i, ep in enumerate(lru)} if lru else {}
        used = sorted((position[e.id], i) for i, e in enumerate(endpoints) if e.id in position)
        never = n - len(used)
        out = [1.0] * n
        for rank, (_pos, i) in enumerate(used, start=never):
            out[i] = 1.0 - rank / (n - 1)
        return out

    def on_routed(self, event: RoutedEvent) -> None:
        if self.prefix.prior_matches(event):
            return
        self._lru[event.endpoint_id] = None
        self._lru.move_to_end(event.endpoint_id)

    def remove_endpoint(self, endpoint_id: str) -> None:
        self._lru.pop(endpoint_id, None)
