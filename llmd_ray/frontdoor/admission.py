"""Admission: API keys and rate limits, the QoS class, and the flow-control gate.

One object per ingress replica. ``authenticate`` checks the bearer key (and
its rate) of an HTTP request; ``acquire`` waits for a flow-control permit of
the request's class (or refuses: 429 shed / 503 timed out); ``finished``
releases the permit once the request's stream is over and records its
per-class latency. The gate's replica stats come from a background poller of
the engine replicas' ``stats``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from llmd_ray.errors import ConfigError, RateLimitError
from llmd_ray.frontdoor.config import IngressConfig
from llmd_ray.serving.auth import KeyStore, Principal
from llmd_ray.serving.flow_control import FlowController, Permit, StatsPoller
from llmd_ray.serving.qos_metrics import QoSMetrics, Timing


class Admission:
    def __init__(self, config: IngressConfig, qos: Any, model_name: str, stats: Callable[[], Awaitable[dict]],
                 blind_per_replica: int):
        self.qos = qos
        self.keys = KeyStore.from_config(config.auth)
        unknown = (self.keys.classes if self.keys else set()) - set(qos.classes)
        if unknown:
            raise ConfigError(f"auth: qos_class {sorted(unknown)} not among the QoS classes {sorted(qos.classes)}")
        self.metrics = QoSMetrics(qos.classes, model_name)
        self.flow = FlowController(config.flow_control, qos.classes, self.metrics)
        if self.flow.blind_per_replica is None:  # stale stats: never more in flight than the engines batch
            self.flow.blind_per_replica = blind_per_replica
        self.poller = StatsPoller(stats, self.flow)
        if config.flow_control.enabled:
            self.poller.start()

    def authenticate(self, authorization: str | None, rate_limited: bool = True) -> Principal | None:
        """The caller's key (None when keys are off); 401 without a valid one, 429 over its rate."""
        if self.keys is None:
            return None
        principal = self.keys.authenticate(authorization)
        if rate_limited:
            try:
                self.keys.check_rate(principal)
            except RateLimitError:
                self.metrics.rejected(principal.qos_class or self.qos.default_class, "rate_limited")
                raise
        return principal

    async def acquire(self, qos: str, tenant: str) -> Permit:
        return await self.flow.acquire(qos, tenant)

    def finished(self, permit: Permit | None, timing: Timing, ok: bool) -> None:
        """Release ``permit`` (once; later calls do nothing) and record the request's latency if it succeeded."""
        if permit is None or permit._controller is None:
            return
        permit.release()
        if ok:
            self.metrics.finished(permit.qos, time.monotonic() - timing.arrived, *timing.ttft_itl())

    def status(self) -> dict:
        replicas = {k: (r.num_waiting, r.kv_cache_usage) for k, r in self.poller.loads.items()}
        return {**self.flow.status(), "replicas": replicas}
