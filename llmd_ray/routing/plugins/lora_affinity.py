"""``lora-affinity``: scorer (affinity). Prefer endpoints that have the request's LoRA adapter, or room for it.

llm-d's LoRA affinity: a vLLM engine runs at most ``max_loras`` adapters in a
batch (its slots, kept by an LRU: a new adapter evicts the least recently used
one and is loaded, from host memory or disk). Sending an adapter's requests
where it is already running or loaded saves the load; sending them where all
slots are busy with other adapters makes them wait until one drains.

Inputs: what each endpoint has, approximately, as the ``prefix-cache`` index is:

* **running**: adapters with requests in flight on the endpoint, from this
  router's own decisions (``on_routed`` / ``on_completed``);
* **loaded**: the endpoint's slots, an LRU of ``max_loras`` adapters fed by
  this router's decisions and, when the replica reports them
  (``record_routing_stats``: ``lora_adapters``, least recently used first,
  and ``max_loras``), re-based on the report at each new report, with the
  decisions made since replayed on top (several routers each see part of the
  traffic; the report covers all of it).

Score, for a request naming an adapter:

* 1.0: the adapter is running on the endpoint (it joins the batch);
* 0.8: loaded, and fewer than ``max_loras`` adapters running (it can start now);
* 0.5: not loaded, fewer than ``max_loras`` running (a free slot: it loads now);
* 0.0: ``max_loras`` other adapters running (it waits for a slot).

An adapter no endpoint has loaded thus ties at 0.5 on every endpoint with a
free slot, and the load scorers send it to the least loaded one. A request
without an adapter scores 0.0 everywhere: adding this scorer changes nothing
for base-model traffic (the totals are unchanged, bit for bit).

Parameters: ``maxLoras``: slots per endpoint when the endpoints do not report
theirs (default 1, vLLM's default).

Example:

```yaml
plugins:
- type: lora-affinity
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: lora-affinity
    weight: 3
```
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import ClassVar

from pydantic import Field

from llmd_ray.routing.framework import Category, CycleState, PluginParameters, RoutedEvent, Scorer
from llmd_ray.routing.types import Endpoint

RUNNING, LOADED, FREE_SLOT, FULL = 1.0, 0.8, 0.5, 0.0
_LOG = 64  # decisions kept per endpoint, to replay over a replica's report


class LoraAffinityParameters(PluginParameters):
    max_loras: int = Field(1, ge=1, description="LoRA slots per endpoint when the endpoint does not report its own.")


class LoraAffinityScorer(Scorer):
    type = "lora-affinity"
    category: ClassVar[Category] = "affinity"
    Parameters = LoraAffinityParameters

    def __init__(self, name, params, handle):
        super().__init__(name, params, handle)
        self._loaded: dict[str, OrderedDict[str, None]] = {}  # endpoint -> its slots, least recently used first
        self._running: dict[str, dict[str, int]] = {}  # endpoint -> adapter -> requests in flight
        self._requests: dict[tuple[str, str], str] = {}  # (request id, endpoint) -> adapter
        self._log: dict[str, deque[tuple[float, str]]] = {}  # endpoint -> (time, adapter) of recent decisions
        self._report_at: dict[str, float] = {}  # endpoint -> time of the report the slots are based on
        self._caps: dict[str, int] = {}  # endpoint -> its slots, as last seen

    # -- state ---------------------------------------------------------------------------------------
    def capacity(self, endpoint: Endpoint) -> int:
        cap = self._caps[endpoint.id] = endpoint.max_loras or self.params.max_loras
        return cap

    def loaded(self, endpoint: Endpoint) -> list[str]:
        """The endpoint's slots as this router believes them, least recently used first."""
        self._sync(endpoint)
        return list(self._loaded.get(endpoint.id, ()))

    def running(self, endpoint_id: str) -> dict[str, int]:
        return dict(self._running.get(endpoint_id, {}))

    def _sync(self, e: Endpoint) -> None:
        """Re-base the slots on the replica's newer report, replaying this router's decisions since."""
        at = e.updated_at
        if at is None or e.max_loras is None or self._report_at.get(e.id, float("-inf")) >= at:
            return
        self._report_at[e.id] = at
        slots: OrderedDict[str, None] = OrderedDict((a, None) for a in e.lora_adapters)
        for t, adapter in self._log.get(e.id, ()):
            if t > at:
                slots[adapter] = None
                slots.move_to_end(adapter)
        self._loaded[e.id] = slots
        self._trim(slots, self.capacity(e))

    @staticmethod
    def _trim(slots: OrderedDict[str, None], cap: int) -> None:
        while len(slots) > cap:
            slots.popitem(last=False)

    # -- scoring -------------------------------------------------------------------------------------
    def score(self, cycle: CycleState, endpoints: list[Endpoint]) -> list[float]:
        adapter = cycle.request.adapter
        if adapter is None:
            return [0.0] * len(endpoints)
        out = []
        for e in endpoints:
            self._sync(e)
            running = self._running.get(e.id, {})
            if adapter in running:
                out.append(RUNNING)
            elif len(running) >= self.capacity(e):
                out.append(FULL)
            elif adapter in self._loaded.get(e.id, ()):
                out.append(LOADED)
            else:
                out.append(FREE_SLOT)
        return out

    # -- hooks ---------------------------------------------------------------------------------------
    def on_routed(self, event: RoutedEvent) -> None:
        adapter = event.request.adapter
        if adapter is None:
            return
        eid = event.endpoint_id
        running = self._running.setdefault(eid, {})
        running[adapter] = running.get(adapter, 0) + 1
        self._requests[(event.request.request_id, eid)] = adapter
        slots = self._loaded.setdefault(eid, OrderedDict())
        slots[adapter] = None
        slots.move_to_end(adapter)
        self._trim(slots, self._caps.get(eid, self.params.max_loras))
        self._log.setdefault(eid, deque(maxlen=_LOG)).append((event.now, adapter))

    def on_completed(self, request_id: str, endpoint_id: str) -> None:
        adapter = self._requests.pop((request_id, endpoint_id), None)
        running = self._running.get(endpoint_id)
        if adapter is None or running is None or adapter not in running:
            return
        running[adapter] -= 1
        if running[adapter] <= 0:
            del running[adapter]

    def remove_endpoint(self, endpoint_id: str) -> None:
        for d in (self._loaded, self._running, self._log, self._report_at, self._caps):
            d.pop(endpoint_id, None)
        for key in [k for k in self._requests if k[1] == endpoint_id]:
            del self._requests[key]

    def stats(self) -> dict:
        running = {e: len(r) for e, r in self._running.items() if r}
        return {"running_adapters": running} if running else {}
