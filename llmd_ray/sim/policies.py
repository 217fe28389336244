"""Autoscaling policies the simulator can run: ours, Ray's default, and a WVA-style saturation scaler.

Each has ``tick(sim) -> {variant: replicas}``, called every ``Simulator.tick_s``.

* ``VariantPolicy``: the real ``VariantAutoscaler`` (the Ray Serve policy's
  code), fed each replica's ``record_autoscaling_stats``-shaped dict.
* ``RayQueueLengthPolicy``: Ray Serve's own ``replica_queue_length_autoscaling_policy``
  called per variant with a real ``AutoscalingContext`` (needs Ray installed).
* ``SaturationPolicy``: llm-d WVA's saturation mode as we read it: a variant is
  saturated when its replicas' average KV usage (> 0.8) or queue (> 5) passes
  a threshold; add ONE replica to the cheapest saturated variant; when every
  variant has spare capacity for ``stable_s``, remove ONE from the dearest
  (cost-greedy +-1, one action per ``interval_s``).
"""

from __future__ import annotations

from llmd_ray.autoscaling.autoscaler import ReplicaSample, VariantAutoscaler
from llmd_ray.autoscaling.config import AutoscalerConfig


class VariantPolicy:
    def __init__(self, config: AutoscalerConfig, profiles: dict):
        self.autoscaler = VariantAutoscaler(config, profiles)
        self.decisions = []

    def tick(self, sim) -> dict[str, int]:
        now = sim.now
        samples = {r.id: ReplicaSample(r.variant, now, r.ready_at, r.autoscaling_stats())
                   for v in sim.replicas for r in sim.ready(v)}
        d = self.autoscaler.step(now, sim.counts(), samples)
        if not self.decisions or self.decisions[-1] is not d:
            self.decisions.append(d)
        return d.counts


class SaturationPolicy:
    def __init__(self, config: AutoscalerConfig, *, kv_threshold: float = 0.8, queue_threshold: float = 5.0,
                 spare_kv: float = 0.5, spare_queue: float = 1.0, interval_s: float = 15.0, stable_s: float = 60.0,
                 wait_for_starting: bool = True):
        self.wait_for_starting = wait_for_starting
        self.config = config
        self.kv_threshold, self.queue_threshold = kv_threshold, queue_threshold
        self.spare_kv, self.spare_queue = spare_kv, spare_queue
        self.interval_s, self.stable_s = interval_s, stable_s
        self._last = float("-inf")
        self._spare_since: float | None = None

    def tick(self, sim) -> dict[str, int]:
        counts = sim.counts()
        if sim.now - self._last < self.interval_s:
            return counts
        self._last = sim.now
        saturated, spare = [], []
        for v in self.config.variants:
            reps = sim.ready(v.name)
            if not reps:
                continue
            kv = sum(r.kv_usage for r in reps) / len(reps)
            queue = sum(r.num_waiting for r in reps) / len(reps)
            if kv > self.kv_threshold or queue > self.queue_threshold:
                saturated.append(v)
            elif kv < self.spare_kv and queue < self.spare_queue:
                spare.append(v)
        starting = any(len(sim.ready(v)) < n for v, n in counts.items())
        if saturated:
            self._spare_since = None
            if not (starting and self.wait_for_starting):  # by default, wait for the last replica to come up
                v = min(saturated, key=lambda v: (v.cost_per_hour, v.name))  # cheapest saturated variant: +1
                if counts[v.name] < v.max_replicas:
                    counts[v.name] += 1
            return counts
        if spare and len(spare) == sum(1 for v in self.config.variants if sim.ready(v.name)):
            self._spare_since = self._spare_since if self._spare_since is not None else sim.now
            if sim.now - self._spare_since >= self.stable_s:
                for v in sorted(spare, key=lambda v: (-v.cost_per_hour, v.name)):  # dearest with spare: -1
                    if counts[v.name] > v.min_replicas:
                        counts[v.name] -= 1
                        self._spare_since = sim.now
                        break
        else:
            self._spare_since = None
        return counts


class RayQueueLengthPolicy:
    """Ray Serve's default policy, one independent instance per variant deployment."""

    def __init__(self, config: AutoscalerConfig, target_ongoing: dict[str, float], **autoscaling_config):
        from ray.serve.config import AutoscalingConfig

        self.config = config
        self.cfg = {v.name: AutoscalingConfig(min_replicas=v.min_replicas, max_replicas=max(v.max_replicas, 1),
                                              target_ongoing_requests=target_ongoing[v.name], **autoscaling_config)
                    for v in config.variants}
        self.state: dict[str, dict] = {v.name: {} for v in config.variants}

    def tick(self, sim) -> dict[str, int]:
        import ray.serve.autoscaling_policy as rap
        from ray.serve._private.common import DeploymentID
        from ray.serve.config import AutoscalingContext

        # Serve wraps every deployment policy like this (delays, bounds, factors); its delays read
        # time.time(), so the module sees the simulated clock during the call.
        policy = rap._apply_autoscaling_config(rap.replica_queue_length_autoscaling_policy)
        real_time, rap.time = rap.time, _SimClock(sim.now)

        out = {}
        for v in self.config.variants:
            reps = sim.ready(v.name)
            ongoing = float(sum(r.in_flight for r in reps))
            cur = len(sim.replicas[v.name])
            ctx = AutoscalingContext(
                deployment_id=DeploymentID(name=v.name, app_name="sim"), deployment_name=v.name, app_name="sim",
                current_num_replicas=len(reps), target_num_replicas=cur, running_replicas=[],
                total_num_requests=ongoing, total_queued_requests=0.0, aggregated_metrics={}, raw_metrics={},
                capacity_adjusted_min_replicas=v.min_replicas, capacity_adjusted_max_replicas=v.max_replicas,
                policy_state=self.state[v.name], last_scale_up_time=None, last_scale_down_time=None,
                current_time=sim.now, config=self.cfg[v.name])
            try:
                n, self.state[v.name] = policy(ctx)
            finally:
                rap.time = real_time
            rap.time = _SimClock(sim.now)
            out[v.name] = min(max(int(n), v.min_replicas), v.max_replicas)
        rap.time = real_time
        return out


class _SimClock:
    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now
