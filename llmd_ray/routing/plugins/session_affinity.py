"""``session-affinity``: scorer (affinity). Keep a session on the endpoint that served it last.

Sessions are named by the ``x-session-id`` header (``RoutingRequest.session_id``).
After each routed request the scorer remembers session -> endpoint (bounded
LRU of ``maxSessions``). This helps where the prefix index cannot: prompts
shorter than a block, or history rewritten at its start (truncation).

Inputs: ``RoutingRequest.session_id``; the endpoint last given the session.

Score: 1.0 for the session's last endpoint if it is still a candidate, 0 for
the others (all 0 without a session id or history).

Parameters: ``maxSessions``.

Example:

```yaml
plugins:
- type: session-affinity
  parameters:
    maxSessions: 50000
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: session-affinity
    weight: 1
```
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import numpy as np
from pydantic import Field

from llmd_ray.routing.framework import Category, CycleState, PluginParameters, RoutedEvent, Scorer
from llmd_ray.routing.types import Endpoint


class SessionAffinityParameters(PluginParameters):
    max_sessions: int = Field(100_000, gt=0, description="Sessions remembered (least recently routed forgotten first).")


class SessionAffinityScorer(Scorer):
    type = "session-affinity"
    category: ClassVar[Category] = "affinity"
    Parameters = SessionAffinityParameters

    def __init__(self, name, params, handle):
        super().__init__(name, params, handle)
        self._sessions: OrderedDict[str, str] = OrderedDict()

    def endpoint_of(self, session_id: str) -> str | None:
        return self._sessions.get(session_id)

    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        sid = cycle.request.session_id
        target = self._sessions.get(sid) if sid else None
        if target is None:
            return [0.0] * len(endpoints)
        return [1.0 if e.id == target else 0.0 for e in endpoints]

    def score_table(self, cycle: CycleState, cands):
        sid = cycle.request.session_id
        target = self._sessions.get(sid) if sid else None
        out = np.zeros(len(cands))
        pos = cands.table.index_of.get(target) if target is not None else None
        if pos is not None:
            out[cands.idx == pos] = 1.0
        return out

    def on_routed(self, event: RoutedEvent) -> None:
        sid = event.request.session_id
        if not sid:
            return
        self._sessions[sid] = event.endpoint_id
        self._sessions.move_to_end(sid)
        while len(self._sessions) > self.params.max_sessions:
            self._sessions.popitem(last=False)

    def remove_endpoint(self, endpoint_id: str) -> None:
        for sid in [s for s, ep in self._sessions.items() if ep == endpoint_id]:
            del self._sessions[sid]

    def stats(self) -> dict:
        return {"sessions": len(self._sessions)}
