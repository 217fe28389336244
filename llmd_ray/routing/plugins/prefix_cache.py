"""``prefix-cache``: scorer (affinity). Prefer endpoints that already hold the request's prefix.

Owns the approximate prefix index: after each routing it records the
request's block hashes against the endpoint used, in a per-endpoint LRU
bounded by the endpoint's reported ``num_blocks``. Other plugins that need
prefix matches (``prefix-cache-affinity``, ``no-hit-lru``, the fallback of
``precise-prefix-cache``) read them from this plugin; a config that uses
them without a ``prefix-cache`` plugin gets one that keeps the index
without scoring.

Inputs: the request's block hashes; the index.

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

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from llmd_ray.routing.framework import Category, CycleState, RoutedEvent, Scorer
from llmd_ray.routing.index import ApproximatePrefixIndex
from llmd_ray.routing.table import EndpointTable
from llmd_ray.routing.types import Endpoint, RoutingRequest


class PrefixCacheScorer(Scorer):
    type = "prefix-cache"
    category: ClassVar[Category] = "affinity"

    def __init__(self, name, params, handle):
        super().__init__(name, params, handle)
        self.index = ApproximatePrefixIndex()
        self._key = ("prefix-matches", name)  # this plugin's entry in CycleState.data
        self._last: tuple[RoutingRequest, int, dict[str, int]] | None = None  # (request, index version, matches)
        self._prior: tuple[RoutedEvent, dict[str, int]] | None = None  # matches before the event was recorded
        self._capacities_of: dict[int, int] = {}  # EndpointTable uid -> version whose capacities were applied

    # -- the index, for this plugin and the plugins that read it ---------------------------------
    def matches(self, cycle: CycleState) -> dict[str, int]:
        """Leading blocks of the request each endpoint holds (absent: 0); computed once per decision."""
        m = cycle.data.get(self._key)
        if m is None:
            m = cycle.data[self._key] = self.index.match(cycle.request.block_hashes)
            self._last = (cycle.request, self.index.version, m)
        return m

    def prior_matches(self, event: RoutedEvent) -> dict[str, int]:
        """The matches of ``event.request`` before this routing was recorded (whichever plugin's hook runs first)."""
        prior = self._prior
        if prior is not None and prior[0] is event:
            return prior[1]
        last, index = self._last, self.index
        if last is not None and last[0] is event.request and last[1] == index.version:
            m = last[2]  # computed by schedule(), and the index has not changed since
        else:
            m = index.match(event.request.block_hashes)
        self._last = None
        self._prior = (event, m)
        return m

    def routed_matches(self) -> dict[str, int] | None:
        """The matches the last ``on_routed`` saw, before it recorded that request (None: no routing yet)."""
        return self._prior[1] if self._prior is not None else None

    # -- hooks -------------------------------------------------------------------------------------
    def prepare(self, cycle: CycleState, endpoints: Sequence[Endpoint]) -> None:
        """Bound each endpoint's LRU by its reported ``num_blocks`` (once per table version)."""
        table = endpoints if isinstance(endpoints, EndpointTable) else None
        if table is not None and self._capacities_of.get(table.uid) == table.version:
            return
        index = self.index
        known = index.capacities
        for e in endpoints:
            nb = e.num_blocks
            if nb and known.get(e.id) != nb:
                index.set_capacity(e.id, nb)
        if table is not None:
            self._capacities_of[table.uid] = table.version

    def on_routed(self, event: RoutedEvent) -> None:
        self.prior_matches(event)  # kept for plugins whose hook runs after this one
        hashes = event.request.block_hashes
        if hashes:
            self.index.record(event.endpoint_id, hashes)

    def remove_endpoint(self, endpoint_id: str) -> None:
        self.index.remove_endpoint(endpoint_id)

    # -- scoring -------------------------------------------------------------------------------------
    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        total = cycle.request.num_blocks
        matches = self.matches(cycle)
        if total == 0 or not matches:
            return [0.0] * len(endpoints)
        get = matches.get
        return [get(e.id, 0) / total for e in endpoints]

    def score_table(self, cycle: CycleState, cands):
        total = cycle.request.num_blocks
        matches = self.matches(cycle)
        if total == 0 or not matches:
            return np.zeros(len(cands))
        return cands.positions(matches) / total


class UsesPrefixIndex:
    """Mixin of plugins that read the approximate prefix index of the config's ``prefix-cache`` plugin.

    The scheduler sets ``prefix`` when it builds the plugins (adding an
    unreferenced ``prefix-cache`` plugin when the config has none)."""

    prefix: PrefixCacheScorer | None = None

    def needs_prefix_index(self) -> bool:
        return True
