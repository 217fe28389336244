"""``VariantAutoscalingPolicy``: the variant autoscaler as a Ray Serve application-level policy.

In a Serve config (each variant is one ``LLMServer-<name>`` deployment of the app)::

    applications:
    - name: default
      import_path: llmd_ray:build_app
      args: {variants: [...], qos: {...}}          # the topology, declared once
      autoscaling_policy:
        policy_function: llmd_ray.autoscaling.policy:VariantAutoscalingPolicy
        policy_kwargs: {interval_s: 2}            # AutoscalerConfig's knobs only

Serve instantiates the class once with ``policy_kwargs`` and calls it every
control-loop tick with one ``AutoscalingContext`` per deployment. The variants
and QoS classes are read from the contexts: ``build_app`` writes each
autoscaled variant and the app's classes into its deployment's
``autoscaling_config`` (``llmd_ray.topology.carry``), so changing a variant's
bounds in the app's args changes the app and the policy together. Deployments
that carry no variant (the ingress, fixed-size variants) get no decision and
keep their own count.

Per tick it reads each replica's latest ``record_autoscaling_stats`` (raw
metrics, with timestamps), notes when it first saw each replica (cold-start
protection), and returns the last decision. The MILP runs every
``interval_s`` in a worker thread, so the controller loop never waits on it.
Gauges ``wva_desired_replicas``, ``wva_current_replicas``, ``wva_desired_ratio`` and
``wva_cost_per_hour`` (the desired replicas' price; summed over variants, the plan's cost)
(exported by Ray as ``ray_wva_*``) carry
``variant_name``, ``accelerator_type`` and ``application`` labels, for HPA/KEDA.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from llmd_ray.autoscaling.autoscaler import Decision, ReplicaSample, VariantAutoscaler
from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.topology import carry

logger = logging.getLogger("ray.serve")


class _Gauges:
    def __init__(self):
        from ray.util import metrics

        tags = ("variant_name", "accelerator_type", "application")
        self.desired = metrics.Gauge("wva_desired_replicas", description="Replicas the variant autoscaler wants.", tag_keys=tags)
        self.current = metrics.Gauge("wva_current_replicas", description="Running replicas per variant.", tag_keys=tags)
        self.ratio = metrics.Gauge("wva_desired_ratio", description="Desired / current replicas.", tag_keys=tags)
        self.cost = metrics.Gauge("wva_cost_per_hour", description="Hourly price of the desired replicas.", tag_keys=tags)

    def set(self, app: str, accel: dict[str, str], desired: dict[str, int], current: dict[str, int],
            price: dict[str, float]) -> None:
        for v, n in desired.items():
            tags = {"variant_name": v, "accelerator_type": accel[v], "application": app}
            cur = current.get(v, 0)
            self.desired.set(n, tags=tags)
            self.current.set(cur, tags=tags)
            self.ratio.set(n / cur if cur else float(n > 0), tags=tags)
            self.cost.set(n * price.get(v, 0.0), tags=tags)


class VariantAutoscalingPolicy:
    """Application-level autoscaling policy (a class: Serve keeps one instance)."""

    def __init__(self, **policy_kwargs: Any):
        for key in ("variants", "classes", "qos"):
            if key in policy_kwargs:
                raise ValueError(
                    f"policy_kwargs.{key}: the variants and QoS classes are declared once, in the app's "
                    f"`args.variants` and `args.qos` (QoS objectives in seconds); the policy reads them from the app. "
                    f"Keep only the policy's knobs (interval_s, ewma_half_life_s, ...) here.")
        self.knobs = dict(policy_kwargs)
        AutoscalerConfig.model_validate({**self.knobs, "variants": [{"name": "check", "profile": "check"}]})
        self.config: AutoscalerConfig | None = None
        self.autoscaler: VariantAutoscaler | None = None
        self._topology: list | None = None
        self._by_deployment: dict = {}
        self._accel: dict[str, str] = {}
        self._first_seen: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="variant-autoscaler") \
            if self.knobs.get("solve_in_background", True) else None
        self._pending: Future | None = None
        self._gauges: _Gauges | None = None
        self._gauge_error = False

    def _read_topology(self, contexts: dict) -> bool:
        """(Re)build the autoscaler from the variants the app's deployments carry; False when there are none."""
        kwargs = [getattr(getattr(ctx.config, "policy", None), "policy_kwargs", None) for ctx in contexts.values()]
        variants, qos = carry.collect(kwargs)
        key = [v.model_dump() for v in variants] + [qos.model_dump() if qos else None]
        if not variants:
            return False
        if key != self._topology:
            self.config = AutoscalerConfig.model_validate({**self.knobs, "variants": variants, "qos": qos})
            self.autoscaler = VariantAutoscaler(self.config)
            self._by_deployment = {v.deployment_name: v for v in self.config.variants}
            self._accel = {v.name: v.accelerator for v in self.config.variants}
            self._pending = None
            self._topology = key
            logger.info("variant autoscaler: sizing %s", sorted(self._accel))
        return True

    def __call__(self, contexts: dict) -> tuple[dict, dict]:
        if not self._read_topology(contexts):
            return {}, {}
        now = time.time()
        current: dict[str, int] = {}
        running: dict[str, int] = {}
        dep_ids: dict[str, Any] = {}
        replicas: dict[str, ReplicaSample] = {}
        app = ""
        live: set[str] = set()
        for dep_id, ctx in contexts.items():
            variant = self._by_deployment.get(ctx.deployment_name)
            if variant is None:
                continue
            app = ctx.app_name or app
            dep_ids[variant.name] = dep_id
            current[variant.name] = int(ctx.target_num_replicas)
            running[variant.name] = int(ctx.current_num_replicas)
            for rid in ctx.running_replicas:
                live.add(rid.unique_id)
                self._first_seen.setdefault(rid.unique_id, now)
            for rid, (t, metrics) in _latest(ctx.raw_metrics or {}).items():
                if rid in self._first_seen:
                    replicas[rid] = ReplicaSample(variant.name, t, self._first_seen[rid], metrics)
        for rid in [r for r in self._first_seen if r not in live]:
            del self._first_seen[rid]
        decision = self._decide(now, current, replicas)
        counts = decision.counts if decision is not None else current
        self._export(app, counts, running)
        return {dep_ids[v]: counts.get(v, current[v]) for v in dep_ids}, {}

    def _decide(self, now: float, current: dict[str, int], replicas: dict[str, ReplicaSample]) -> Decision | None:
        a = self.autoscaler
        if self._pool is None:
            return a.step(now, current, replicas)
        if self._pending is not None and self._pending.done():
            try:
                self._pending.result()
            except Exception:  # never break the controller loop: hold counts and log
                logger.exception("variant autoscaler: solve failed; holding replica counts")
            self._pending = None
        if self._pending is None and a.due(now):
            self._pending = self._pool.submit(a.step, now, current, replicas)
        return a.last

    def _export(self, app: str, desired: dict[str, int], running: dict[str, int]) -> None:
        if not self.config or not self.config.export_metrics or self._gauge_error:
            return
        try:
            if self._gauges is None:
                self._gauges = _Gauges()
            price = {v.name: v.cost_per_hour for v in self.config.variants}
            self._gauges.set(app, self._accel, desired, running, price)
        except Exception:  # metrics are best effort; log once
            self._gauge_error = True
            logger.exception("variant autoscaler: cannot export wva_* gauges")

    def explain(self) -> str:
        return self.autoscaler.explain() if self.autoscaler else "no variant seen yet"


def _latest(raw: dict) -> dict[str, tuple[float, dict[str, float]]]:
    """Per replica id: (latest sample time, {metric: latest value}) from Serve's raw metrics."""
    out: dict[str, tuple[float, dict[str, float]]] = {}
    for name, per_replica in raw.items():
        for rid, series in per_replica.items():
            if not series:
                continue
            point = series[-1]
            key = getattr(rid, "unique_id", str(rid))
            t, metrics = out.get(key, (0.0, {}))
            metrics[name] = float(point.value)
            out[key] = (max(t, float(point.timestamp)), metrics)
    return out
