"""VariantAutoscalingPolicy on AutoscalingContext snapshots, through Serve's own app-level wrapper."""

import pytest
from ray.serve._private.common import DeploymentID, ReplicaID, TimeStampedValue
from ray.serve.autoscaling_policy import _apply_app_level_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from llmd_ray.autoscaling.demand import DemandRecorder
from llmd_ray.autoscaling.policy import VariantAutoscalingPolicy
from llmd_ray.topology import QoSConfig, Variant
from llmd_ray.topology.carry import DEFAULT_POLICY, carried

VARIANTS = {  # what build_app writes into each variant deployment's autoscaling_config
    "LLMServer-h100": Variant(name="h100", accelerator="H100", profile="h100-llama-3.1-8b", cost_per_hour=3.0,
                              min_replicas=1, max_replicas=20),
    "LLMServer-l4": Variant(name="l4", accelerator="L4", profile="l4-llama-3.1-8b", cost_per_hour=0.8,
                            min_replicas=0, max_replicas=20),
}
QOS = QoSConfig.model_validate({"classes": {"interactive": {"priority": 1, "ttft_objective_s": 1.0,
                                                            "itl_objective_s": 0.04}}, "default_class": "interactive"})
KWARGS = {  # the Serve config's policy_kwargs: knobs only
    "interval_s": 5, "downscale_stable_s": 20, "cold_start_s": 30, "solve_in_background": False,
    "export_metrics": False, "forecast_horizon_s": 0,
}


class Fleet:
    """Replicas with cumulative DemandRecorder counters, snapshotted as Serve would pass them."""

    def __init__(self):
        self.replicas = {"LLMServer-h100": [], "LLMServer-l4": []}
        self.born = {}
        self.rec = {}
        self.n = 0

    def add(self, dep, t):
        rid = ReplicaID(f"{dep}-{self.n}", DeploymentID(dep, "app"))
        self.n += 1
        self.replicas[dep].append(rid)
        self.born[rid.unique_id] = t
        self.rec[rid.unique_id] = DemandRecorder()
        return rid

    def serve(self, rate, dt, waiting=0.0):
        """``rate`` req/s of 1000-in/128-out spread over all replicas for ``dt`` seconds."""
        reps = [r for rs in self.replicas.values() for r in rs]
        for r in reps:
            rec = self.rec[r.unique_id]
            for _ in range(round(rate * dt / len(reps))):
                k = rec.on_arrival(1000, 128)
                rec.on_cached(k, 500)
        self.waiting = waiting

    def contexts(self, t, ingress=True):
        out = {}
        for dep, reps in self.replicas.items():
            dep_id = DeploymentID(dep, "app")
            raw = {}
            for r in reps:
                m = {**self.rec[r.unique_id].metrics(), "num_waiting": getattr(self, "waiting", 0.0)}
                for name, v in m.items():
                    raw.setdefault(name, {})[r] = [TimeStampedValue(t - 1, v), TimeStampedValue(t, v)]
            out[dep_id] = _ctx(dep_id, len(reps), raw, t)
        if ingress:
            dep_id = DeploymentID("OpenAIIngress", "app")
            out[dep_id] = _ctx(dep_id, 1, {}, t)
        return out


def _ctx(dep_id, n, raw, t):
    v = VARIANTS.get(dep_id.name)
    policy = {"policy_function": DEFAULT_POLICY, "policy_kwargs": carried(v, QOS)} if v else {}
    cfg = AutoscalingConfig(min_replicas=0, max_replicas=50, upscale_delay_s=0, downscale_delay_s=0, policy=policy)
    return AutoscalingContext(
        deployment_id=dep_id, deployment_name=dep_id.name, app_name="app", current_num_replicas=n,
        target_num_replicas=n, running_replicas=[r for rs in raw.get("llmd_dm_i1024_o256_n", {}).keys() for r in [rs]],
        total_num_requests=0.0, total_queued_requests=0.0, aggregated_metrics={}, raw_metrics=raw,
        capacity_adjusted_min_replicas=0, capacity_adjusted_max_replicas=50, policy_state={},
        last_scale_up_time=None, last_scale_down_time=None, current_time=t, config=cfg)


def run(policy, fleet, t0, t1, rate, apply=True, step=5.0, waiting=0.0):
    wrapped = _apply_app_level_autoscaling_config(policy)
    decisions = None
    t = t0
    while t <= t1:
        fleet.serve(rate, step, waiting)
        decisions, _ = wrapped(fleet.contexts(t))
        if apply:  # the controller brings the fleet to the decision (instant start in this test)
            for dep_id, n in decisions.items():
                reps = fleet.replicas[dep_id.name]
                while len(reps) < n:
                    fleet.add(dep_id.name, t)
                while len(reps) > n:
                    reps.pop()
        t += step
    return {d.name: n for d, n in decisions.items()}


@pytest.fixture
def policy(monkeypatch):
    import time as _time

    clock = {"t": 1000.0}
    monkeypatch.setattr("llmd_ray.autoscaling.policy.time.time", lambda: clock["t"])
    p = VariantAutoscalingPolicy(**KWARGS)
    p.clock = clock
    return p


def drive(policy, fleet, t0, t1, rate, **kw):
    out = None
    t = t0
    while t <= t1:
        policy.clock["t"] = t
        out = run(policy, fleet, t, t, rate, **kw)
        t += 5.0
    return out


def test_scales_up_cheapest_mix_and_leaves_the_ingress_alone(policy):
    fleet = Fleet()
    fleet.add("LLMServer-h100", 0.0)
    first = drive(policy, fleet, 1000, 1000, 40.0)
    assert first == {"LLMServer-h100": 1, "LLMServer-l4": 0}  # warming up: holds counts
    out = drive(policy, fleet, 1005, 1100, 40.0)
    assert "OpenAIIngress" not in out
    assert out["LLMServer-h100"] > 1  # interactive ITL 40 ms: the L4 (76 ms/step) cannot serve it
    assert out["LLMServer-l4"] == 0
    plan = policy.autoscaler.last.plan
    assert plan.status == "optimal" and plan.counts["h100"] == out["LLMServer-h100"]
    assert "alternative" in policy.explain()


def test_scales_down_only_after_the_stable_window_and_one_at_a_time(policy):
    fleet = Fleet()
    fleet.add("LLMServer-h100", 0.0)
    high = drive(policy, fleet, 1000, 1100, 60.0)["LLMServer-h100"]
    seen = []
    t = 1105
    while t <= 1300:
        policy.clock["t"] = t
        seen.append(run(policy, fleet, t, t, 5.0)["LLMServer-h100"])
        t += 5
    assert seen[0] == high  # not at once
    assert all(a - b <= 1 for a, b in zip(seen, seen[1:]))  # one step per decision
    assert seen[-1] < high


def test_cold_start_samples_do_not_drive_decisions(policy):
    fleet = Fleet()
    fleet.add("LLMServer-h100", 0.0)
    base = drive(policy, fleet, 1000, 1060, 10.0)["LLMServer-h100"]
    # A replica that just started reports a long queue: must not trigger the saturation guard.
    new = fleet.add("LLMServer-h100", 1065)
    policy.clock["t"] = 1065
    wrapped = _apply_app_level_autoscaling_config(policy)
    ctxs = fleet.contexts(1065)
    h100 = [d for d in ctxs if d.name == "LLMServer-h100"][0]
    ctxs[h100].raw_metrics["num_waiting"] = {new: [TimeStampedValue(1065, 500.0)]}
    policy.autoscaler._last_solve = None
    decisions, _ = wrapped(ctxs)
    assert {d.name: n for d, n in decisions.items()}["LLMServer-h100"] <= base + 1
    assert "queues building" not in policy.autoscaler.last.reason


def test_background_solve_keeps_the_tick_fast(monkeypatch):
    p = VariantAutoscalingPolicy(**{**KWARGS, "solve_in_background": True})
    fleet = Fleet()
    fleet.add("LLMServer-h100", 0.0)
    out, _ = p(fleet.contexts(1000.0))
    assert {d.name: n for d, n in out.items()} == {"LLMServer-h100": 1, "LLMServer-l4": 0}
    p._pending.result(timeout=30)
    p._pool.shutdown()


def test_bad_policy_kwargs_name_the_field():
    with pytest.raises(Exception, match="interval_s"):
        VariantAutoscalingPolicy(interval_s=-1)


def test_old_policy_kwargs_with_variants_fail_saying_what_to_write():
    with pytest.raises(ValueError, match=r"policy_kwargs.variants: .*args.variants"):
        VariantAutoscalingPolicy(variants=[{"name": "x", "accelerator": "A", "profile": "h100-llama-3.1-8b"}])
    with pytest.raises(ValueError, match=r"policy_kwargs.classes: .*args.qos"):
        VariantAutoscalingPolicy(classes=[{"name": "interactive", "ttft_ms": 500, "itl_ms": 50}])


def test_a_bound_changed_in_the_app_reaches_the_policy(policy):
    fleet = Fleet()
    fleet.add("LLMServer-h100", 0.0)
    drive(policy, fleet, 1000, 1100, 60.0)
    assert policy.config.variants[0].max_replicas == 20
    VARIANTS["LLMServer-h100"] = VARIANTS["LLMServer-h100"].model_copy(update={"max_replicas": 2})
    try:
        out = drive(policy, fleet, 1105, 1200, 60.0)
    finally:
        VARIANTS["LLMServer-h100"] = VARIANTS["LLMServer-h100"].model_copy(update={"max_replicas": 20})
    assert policy.config.variants[0].max_replicas == 2
    assert out["LLMServer-h100"] <= 2
