"""``predicted-latency``: picker. Send each request where its predicted TTFT is lowest, within SLOs.

After llm-d's predicted-latency scheduling (the Gateway API Inference
Extension's latency predictor): each replica has an online model of TTFT and
TPOT (``llmd_ray.routing.latency_model``: recursive least squares over uncached
prompt tokens, waiting and running requests and KV usage), starting from the
engine's profile and trained from the latencies replicas report
(``Endpoint.latency_samples``, see ``llmd_ray.engine.latency``) joined with the
features this plugin saw when it routed each request.

Per decision, for each candidate: the uncached prompt is the prompt minus the
predicted prefix hit (the ``prefix-cache`` index); the waiting count is the
larger of the reported queue and the router's own in-flight count minus the
reported running batch (stats lag behind routing). An endpoint *fits* when the
predicted TTFT meets the request's class objective and the predicted TPOT with
one more running request stays within the tightest TPOT objective of the
requests this router has running there (and the request's own).

Ranking: fitting endpoints by predicted TTFT (ties: higher profile total), then
the rest by predicted TTFT. When none fits, a class with ``whenUnmet: hold``
gets an empty ranking while some endpoint is busy (Ray's router retries it with
backoff: it waits at the router for load to drain); ``least-bad`` (default) is
routed to the lowest predicted TTFT anyway. Counted in ``stats()``.

Inputs: ``Endpoint.num_waiting``, ``num_running``, ``kv_cache_usage``,
``in_flight``, ``latency_samples``; the prefix index; ``RoutingRequest.qos_class``.

Parameters: the profile prior (``prefillTokensPerSecond``, ``decodeStepSeconds``,
``waitingRequestSeconds``, ``decodeStepPerRunningSeconds``), the learner
(``forgetting``, ``priorVariance``), the classes' objectives (``classes``,
``defaultClass``), ``maxPending``.

Example:

```yaml
plugins:
- type: prefix-cache
- type: predicted-latency
  parameters:
    prefillTokensPerSecond: 2000
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache
    weight: 1
  - pluginRef: predicted-latency
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llmd_ray.routing.framework import CycleState, Picker, PluginParameters, RoutedEvent
from llmd_ray.routing.latency_model import (
    MIN_PREDICTION_S, ErrorHistogram, LatencyPrior, ReplicaLatencyModel,
)
from llmd_ray.routing.plugins.prefix_cache import UsesPrefixIndex
from llmd_ray.routing.types import Endpoint


class ClassObjective(BaseModel):
    """One QoS class's objectives as this plugin reads them (``llmd_ray.topology.qos`` names the same classes)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)
    ttft_s: float | None = Field(None, gt=0, description="TTFT objective (s); None: none.")
    tpot_s: float | None = Field(None, gt=0, description="TPOT (inter-token) objective (s); None: none.")
    when_unmet: Literal["least-bad", "hold"] = Field(
        "least-bad", description="No endpoint fits: route to the lowest predicted TTFT, or hold at the router.")


def _default_classes() -> dict[str, ClassObjective]:
    # the objectives of llmd_ray.topology.qos.default_classes(); batch is sheddable: held when nothing fits
    return {"interactive": ClassObjective(ttft_s=0.5, tpot_s=0.05), "standard": ClassObjective(ttft_s=2.0, tpot_s=0.1),
            "batch": ClassObjective(when_unmet="hold")}


class PredictedLatencyParameters(PluginParameters):
    prefill_tokens_per_second: float = Field(2000.0, gt=0, description="Profile prior: one replica's prefill rate.")
    decode_step_seconds: float = Field(0.02, gt=0, description="Profile prior: one decode step (TPOT at batch 1).")
    waiting_request_seconds: float = Field(0.5, ge=0, description="Prior: TTFT added per request waiting ahead.")
    decode_step_per_running_seconds: float = Field(0.002, ge=0, description="Prior: TPOT added per running request.")
    forgetting: float = Field(0.995, gt=0.5, le=1.0, description="RLS forgetting factor (1: never forget).")
    prior_variance: float = Field(1.0, gt=0, description="How far observations may pull the prior (RLS P0 = v*I).")
    classes: dict[str, ClassObjective] = Field(default_factory=_default_classes, description="Objectives per class.")
    default_class: str = Field("standard", description="Class of a request that names none (or an unknown one).")
    max_pending: int = Field(8192, ge=1, description="Routed requests remembered until their latencies arrive.")


class LatencyExporter(Protocol):
    """Where the model and its error go (the router installs a Ray-metrics one; None: counters only)."""

    def error(self, kind: str, relative: float) -> None: ...

    def coefficients(self, endpoint_id: str, kind: str, weights: Sequence[float]) -> None: ...


@dataclass(slots=True)
class _Prediction:
    x: list[float]  # TTFT features as routed
    ttft_s: float
    tpot_s: float


@dataclass(slots=True)
class _Routed:
    endpoint_id: str
    pred: _Prediction


COEFFICIENT_EXPORT_EVERY = 16  # samples per replica between coefficient exports


class PredictedLatencyPicker(UsesPrefixIndex, Picker):
    type = "predicted-latency"
    Parameters = PredictedLatencyParameters

    def __init__(self, name, params, handle):
        super().__init__(name, params, handle)
        p = params
        self.prior = LatencyPrior(p.prefill_tokens_per_second, p.decode_step_seconds, p.waiting_request_seconds,
                                  p.decode_step_per_running_seconds)
        self.models: dict[str, ReplicaLatencyModel] = {}
        self.errors = {"ttft": ErrorHistogram(), "tpot": ErrorHistogram()}
        self.exporter: LatencyExporter | None = None
        self.counts = {"decisions": 0, "fit": 0, "unmet_least_bad": 0, "unmet_held": 0, "samples": 0,
                       "samples_unmatched": 0}
        self._last: tuple[object, dict[str, _Prediction]] | None = None  # (request, predictions) of the last pick
        self._pending: dict[str, _Routed] = {}  # request id -> where it went and what was predicted
        self._seen: dict[str, int] = {}  # endpoint id -> highest sample seq ingested
        self._running: dict[str, dict[float, int]] = {}  # endpoint id -> {tpot objective: requests running}
        self._routed_slo: dict[str, tuple[str, float]] = {}  # request id -> (endpoint, tpot objective) while running

    # -- the model ------------------------------------------------------------------------------
    def model(self, endpoint_id: str) -> ReplicaLatencyModel:
        m = self.models.get(endpoint_id)
        if m is None:
            m = self.models[endpoint_id] = ReplicaLatencyModel.from_prior(
                self.prior, self.params.forgetting, self.params.prior_variance)
        return m

    def objective(self, qos_class: str | None) -> ClassObjective:
        classes = self.params.classes
        return classes.get(qos_class or self.params.default_class) or classes.get(self.params.default_class) \
            or ClassObjective()

    def predict(self, cycle: CycleState, endpoints: Sequence[Endpoint]) -> dict[str, _Prediction]:
        """Predicted TTFT (this request) and TPOT (with it running) per endpoint."""
        req = cycle.request
        n = req.num_tokens
        matches = self.prefix.matches(cycle) if self.prefix is not None else {}
        get, bs = matches.get, req.block_size
        out: dict[str, _Prediction] = {}
        models, lo = self.models, MIN_PREDICTION_S
        for e in endpoints:  # features() inlined: this loop is most of the decision's cost
            eid = e.id
            hit = get(eid, 0) * bs
            u = (n - hit) / 1000.0 if hit < n else 0.0
            r = e.num_running
            q = e.in_flight - r
            if e.num_waiting > q:
                q = e.num_waiting
            q = float(q) if q > 0 else 0.0
            r = float(r) if r > 0 else 0.0
            kv = e.kv_cache_usage
            kv = (kv if kv < 1.0 else 1.0) if kv > 0.0 else 0.0
            x = [1.0, u, q, r, kv]
            m = models.get(eid) or self.model(eid)
            w, v = m.ttft.w, m.tpot.w  # TPOT with this request in the batch: running + 1
            ttft = w[0] + w[1] * u + w[2] * q + w[3] * r + w[4] * kv
            tpot = v[0] + v[1] * u + v[2] * q + v[3] * (r + 1.0) + v[4] * kv
            out[eid] = _Prediction(x, ttft if ttft > lo else lo, tpot if tpot > lo else lo)
        return out

    # -- picking -------------------------------------------------------------------------------
    def pick(self, cycle: CycleState, endpoints: list[Endpoint], totals: list[float]) -> list[int]:
        preds = self.predict(cycle, endpoints)
        self._last = (cycle.request, preds)
        obj = self.objective(cycle.request.qos_class)
        own_tpot = obj.tpot_s
        fit: list[bool] = []
        for e in endpoints:
            p = preds[e.id]
            limit = own_tpot
            slos = self._running.get(e.id)
            if slos:
                tightest = min(slos)
                limit = tightest if limit is None else min(limit, tightest)
            fit.append((obj.ttft_s is None or p.ttft_s <= obj.ttft_s) and (limit is None or p.tpot_s <= limit))
        self.counts["decisions"] += 1
        if endpoints and not any(fit):
            busy = any(e.num_waiting or e.num_running or e.in_flight for e in endpoints)
            if obj.when_unmet == "hold" and busy:
                self.counts["unmet_held"] += 1
                return []
            self.counts["unmet_least_bad"] += 1
        elif endpoints:
            self.counts["fit"] += 1
        keys = [(not f, preds[e.id].ttft_s, -t, e.in_flight) for f, e, t in zip(fit, endpoints, totals)]
        return sorted(range(len(endpoints)), key=keys.__getitem__)

    def last_ttfts(self, request: object) -> dict[str, float] | None:
        """Predicted TTFT per endpoint of the last pick, if it was for ``request`` (decision traces)."""
        last = self._last
        return {eid: p.ttft_s for eid, p in last[1].items()} if last is not None and last[0] is request else None

    # -- feedback ------------------------------------------------------------------------------
    def on_routed(self, event: RoutedEvent) -> None:
        last = self._last
        rid, eid = event.request.request_id, event.endpoint_id
        pred = last[1].get(eid) if last is not None and last[0] is event.request else None
        if pred is not None:
            pending = self._pending
            pending[rid] = _Routed(eid, pred)
            while len(pending) > self.params.max_pending:
                pending.pop(next(iter(pending)))
        tpot = self.objective(event.request.qos_class).tpot_s
        if tpot is not None:
            slos = self._running.setdefault(eid, {})
            slos[tpot] = slos.get(tpot, 0) + 1
            self._routed_slo[rid] = (eid, tpot)
            while len(self._routed_slo) > self.params.max_pending:  # completions lost: forget the oldest
                self.on_completed(next(iter(self._routed_slo)), eid)

    def on_completed(self, request_id: str, endpoint_id: str) -> None:
        routed = self._routed_slo.pop(request_id, None)
        if routed is None:
            return
        eid, tpot = routed
        slos = self._running.get(eid)
        if slos and tpot in slos:
            slos[tpot] -= 1
            if slos[tpot] <= 0:
                del slos[tpot]

    def prepare(self, cycle: CycleState, endpoints: Sequence[Endpoint]) -> None:
        """Train on the latencies the endpoints reported since the last decision."""
        seen = self._seen
        for e in endpoints:
            samples = e.latency_samples
            if samples and seen.get(e.id) != samples[-1][0]:  # something new (samples come in seq order)
                self.ingest(e.id, samples)

    def ingest(self, endpoint_id: str, samples: Sequence[Sequence]) -> int:
        """Learn from ``[seq, request_id, ttft_s, tpot_s | None]`` samples in seq order (older ones skipped); how many."""
        seen = self._seen.get(endpoint_id)
        top = samples[-1][0]  # the replica appends them in seq order
        if seen is not None and top < seen:
            seen = None  # the replica restarted: its sequence started again
        if seen is not None and top == seen:
            return 0
        used = 0
        for seq, rid, ttft, tpot in samples:
            if seen is not None and seq <= seen:
                continue
            routed = self._pending.pop(rid, None)
            if routed is None or routed.endpoint_id != endpoint_id:
                self.counts["samples_unmatched"] += 1
                continue
            self._learn(endpoint_id, routed.pred, ttft, tpot)
            used += 1
        self._seen[endpoint_id] = top
        return used

    def _learn(self, endpoint_id: str, pred: _Prediction, ttft: float | None, tpot: float | None) -> None:
        m = self.model(endpoint_id)
        exp = self.exporter
        if ttft is not None:
            rel = self.errors["ttft"].add(pred.ttft_s, ttft)
            m.ttft.update(pred.x, ttft)
            if exp is not None and rel is not None:
                exp.error("ttft", rel)
        if tpot is not None:
            xt = pred.x.copy()
            xt[3] += 1.0
            rel = self.errors["tpot"].add(pred.tpot_s, tpot)
            m.tpot.update(xt, tpot)
            if exp is not None and rel is not None:
                exp.error("tpot", rel)
        self.counts["samples"] += 1
        if exp is not None and self.counts["samples"] % COEFFICIENT_EXPORT_EVERY == 1:
            exp.coefficients(endpoint_id, "ttft", m.ttft.w)
            exp.coefficients(endpoint_id, "tpot", m.tpot.w)

    def remove_endpoint(self, endpoint_id: str) -> None:
        self.models.pop(endpoint_id, None)
        self._seen.pop(endpoint_id, None)
        self._running.pop(endpoint_id, None)

    def stats(self) -> dict:
        return {**self.counts,
                "relative_error": {k: {"buckets": list(h.counts), "mean_abs": h.mean_abs} for k, h in self.errors.items()},
                "coefficients": {eid: m.coefficients() for eid, m in self.models.items()}}
