"""Per-QoS-class metrics of the ingress, exported through ``ray.serve.metrics``.

Exported (Ray prefixes ``ray_``), each with a ``qos_class`` tag:

* ``llmd_qos_requests_queued_total``: requests that entered the flow-control queue;
* ``llmd_qos_requests_admitted_total``: requests released to LLMServer;
* ``llmd_qos_requests_rejected_total`` (``reason``: ``saturated``, ``queue_timeout``,
  ``queue_full``, ``rate_limited``, ``unauthenticated``): shed (429), timed out (503) or refused;
* ``llmd_qos_queue_depth`` (gauge), ``llmd_qos_queue_wait_seconds`` (histogram);
* ``llmd_qos_ttft_seconds``, ``llmd_qos_itl_seconds``, ``llmd_qos_e2e_seconds`` (histograms, from
  arrival at the ingress; TTFT and ITL for streamed requests only);
* ``llmd_qos_objective_total`` (``objective``: ``ttft``/``itl``, ``met``: ``true``/``false``): latency
  against the class's objective;
* ``llmd_flow_inflight``, ``llmd_flow_saturated`` (gauges, untagged by class).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from llmd_ray.engine.types import GenerateChunk
from llmd_ray.observability.zero import declare

from llmd_ray.serving.flow_control import FlowObserver
from llmd_ray.topology.qos import QoSClass

REJECT_REASONS = ("saturated", "queue_timeout", "queue_full", "rate_limited")
_WAIT = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0]
_LAT = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0]
_ITL = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1.0, 2.5]


class QoSMetrics(FlowObserver):
    def __init__(self, classes: Mapping[str, QoSClass], model_name: str):
        from ray.serve import metrics

        self.classes = dict(classes)
        tags = ("model_name", "qos_class")

        def mk(kind, name, desc, extra=(), buckets=None):
            kw = {"boundaries": buckets} if buckets else {}
            m = kind(name, description=desc, tag_keys=tags + tuple(extra), **kw)
            m.set_default_tags({"model_name": model_name})
            return m

        self.queued_total = mk(metrics.Counter, "llmd_qos_requests_queued_total", "Requests that entered the queue.")
        self.admitted_total = mk(metrics.Counter, "llmd_qos_requests_admitted_total", "Requests released to LLMServer.")
        self.rejected_total = mk(metrics.Counter, "llmd_qos_requests_rejected_total", "Requests shed or refused.", ("reason",))
        self.depth = mk(metrics.Gauge, "llmd_qos_queue_depth", "Requests waiting at the ingress.")
        self.wait = mk(metrics.Histogram, "llmd_qos_queue_wait_seconds", "Wait for admission.", buckets=_WAIT)
        self.ttft = mk(metrics.Histogram, "llmd_qos_ttft_seconds", "Time to first token from arrival.", buckets=_LAT)
        self.itl = mk(metrics.Histogram, "llmd_qos_itl_seconds", "Mean inter-token latency per request.", buckets=_ITL)
        self.e2e = mk(metrics.Histogram, "llmd_qos_e2e_seconds", "End-to-end latency from arrival.", buckets=_LAT)
        self.objective = mk(metrics.Counter, "llmd_qos_objective_total", "Requests against objective.", ("objective", "met"))
        self.inflight = metrics.Gauge("llmd_flow_inflight", description="Requests released and not finished.", tag_keys=("model_name",))
        self.saturated = metrics.Gauge("llmd_flow_saturated", description="1 when no replica has headroom.", tag_keys=("model_name",))
        for g in (self.inflight, self.saturated):
            g.set_default_tags({"model_name": model_name})
        # Rare events are exported at 0 from the start, per class.
        declare(self.rejected_total, [{"qos_class": q, "reason": r} for q in self.classes for r in REJECT_REASONS])
        declare(self.objective, [{"qos_class": q, "objective": o, "met": m} for q, c in self.classes.items()
                                 for o, goal in (("ttft", c.ttft_objective_s), ("itl", c.itl_objective_s))
                                 if goal is not None for m in ("true", "false")])

    # FlowObserver
    def queued(self, qos: str) -> None:
        self.queued_total.inc(tags={"qos_class": qos})

    def admitted(self, qos: str, wait_s: float) -> None:
        self.admitted_total.inc(tags={"qos_class": qos})
        self.wait.observe(wait_s, tags={"qos_class": qos})

    def rejected(self, qos: str, reason: str) -> None:
        self.rejected_total.inc(tags={"qos_class": qos, "reason": reason})

    def state(self, inflight: int, depth: Mapping[str, int], saturated: bool) -> None:
        self.inflight.set(inflight)
        self.saturated.set(1.0 if saturated else 0.0)
        for q in self.classes:
            self.depth.set(depth.get(q, 0), tags={"qos_class": q})

    # latency, recorded by the ingress when a request ends
    def finished(self, qos: str, e2e_s: float, ttft_s: float | None, itl_s: float | None) -> None:
        t = {"qos_class": qos}
        self.e2e.observe(e2e_s, tags=t)
        c = self.classes[qos]
        for name, value, hist, goal in (("ttft", ttft_s, self.ttft, c.ttft_objective_s), ("itl", itl_s, self.itl, c.itl_objective_s)):
            if value is None:
                continue
            hist.observe(value, tags=t)
            if goal is not None:
                self.objective.inc(tags={**t, "objective": name, "met": "true" if value <= goal else "false"})


@dataclass(slots=True)
class Timing:
    """Per-request latency, measured from arrival at the ingress, for per-class metrics."""

    arrived: float
    first_at: float | None = None
    first_tokens: int = 0
    last_at: float = 0.0
    tokens: int = 0

    def chunk(self, c: GenerateChunk) -> None:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at, self.first_tokens = now, c.completion_tokens
        self.last_at, self.tokens = now, c.completion_tokens

    def ttft_itl(self) -> tuple[float | None, float | None]:
        if self.first_at is None:
            return None, None
        later = self.tokens - self.first_tokens
        return self.first_at - self.arrived, (self.last_at - self.first_at) / later if later > 0 else None
