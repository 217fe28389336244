"""Scale-up in time: measured start-up, the horizon that covers it, starting replicas in the queue guard,
the plan holding the current level on a falling trend, and the evaluation's tuning/spread helpers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from llmd_ray.autoscaling.autoscaler import ReplicaSample, VariantAutoscaler
from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.demand import DemandEstimator, DemandRecorder
from llmd_ray.autoscaling.startup import StartupTracker

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("eval_summary", ROOT / "bench" / "autoscaling" / "eval_summary.py")
eval_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_summary)

CONFIG = {
    "variants": [{"name": "h100", "accelerator": "H100", "profile": "h100-llama-3.1-8b", "cost_per_hour": 3.0,
                  "min_replicas": 1, "max_replicas": 40}],
    "qos": {"classes": {"interactive": {"priority": 1, "ttft_objective_s": 1.0, "itl_objective_s": 0.05}},
            "default_class": "interactive"},
    "interval_s": 15, "forecast_horizon_s": 0, "cold_start_s": 30, "downscale_stable_s": 60,
    "solve_in_background": False, "export_metrics": False,
}


def test_tracker_measures_from_the_request_to_the_first_sample():
    t = StartupTracker({"a": 120.0})
    t.observe({"a": {"r0": 0.0}})  # the initial fleet: no request, no measurement
    assert t.startup_s("a") == 120.0
    t.requested(10.0, {"a": 1}, {"a": 3}, {"a": 1})
    t.observe({"a": {"r0": 0.0, "r1": 70.0}})
    t.observe({"a": {"r0": 0.0, "r1": 70.0, "r2": 72.0}})
    assert list(t.measured["a"]) == [60.0, 62.0]
    assert t.startup_s("a") == 61.0
    assert t.longest_s() == 61.0


def test_tracker_forgets_requests_a_scale_down_cancelled():
    t = StartupTracker({"a": 120.0})
    t.observe({"a": {"r0": -5.0}})
    t.requested(0.0, {"a": 1}, {"a": 3}, {"a": 1})
    t.requested(20.0, {"a": 3}, {"a": 4}, {"a": 1})
    t.requested(30.0, {"a": 4}, {"a": 2}, {"a": 1})  # two fewer: the newest requests go first
    assert list(t.pending["a"]) == [0.0]
    t.observe({"a": {"r0": -5.0, "r1": 100.0}})
    assert t.startup_s("a") == 100.0


def _sample(variant, t, born, served, waiting):
    rec = DemandRecorder()
    for _ in range(served):
        k = rec.on_arrival(900, 200)
        rec.on_cached(k, 800)
    return ReplicaSample(variant, t, born, {**rec.metrics(), "num_waiting": waiting})


def _fleet(t, n_ready, per_replica, waiting):
    return {f"r{i}": _sample("h100", t, -100.0, per_replica, waiting) for i in range(n_ready)}


def test_horizon_covers_the_start_up_plus_one_interval():
    a = VariantAutoscaler(AutoscalerConfig.model_validate(CONFIG))
    assert a.horizon_s() == 120.0 + 15.0  # the profile's start-up until one is measured
    a.startup.measured["h100"] = __import__("collections").deque([60.0])
    assert a.horizon_s() == 75.0
    a2 = VariantAutoscaler(AutoscalerConfig.model_validate({**CONFIG, "forecast_horizon_s": 300}))
    assert a2.horizon_s() == 300.0  # a longer configured horizon stands


def test_first_decision_comes_at_the_next_call_not_an_interval_later():
    a = VariantAutoscaler(AutoscalerConfig.model_validate(CONFIG))
    assert a.step(0.0, {"h100": 2}, _fleet(0.0, 2, 0, 0.0)).status == "warming_up"
    d = a.step(1.0, {"h100": 2}, _fleet(1.0, 2, 10, 0.0))
    assert d.status != "warming_up"


def test_queue_guard_counts_replicas_already_starting():
    cfg = AutoscalerConfig.model_validate(CONFIG)
    # 2 ready replicas with long queues; light demand, so the plan alone wants the minimum.
    for current, want in ((2, 3), (5, 5)):  # 3 already starting: the guard adds none
        a = VariantAutoscaler(cfg)
        a.step(0.0, {"h100": current}, _fleet(0.0, 2, 0, 50.0))
        d = a.step(1.0, {"h100": current}, _fleet(1.0, 2, 1, 50.0))
        assert "queues building" in d.reason
        assert d.desired["h100"] == 3  # one more than is serving, not one more than already asked for
        assert d.counts["h100"] == want  # nor is a saturated variant scaled down


def test_plan_holds_the_current_level_on_a_falling_trend():
    est = DemandEstimator(CONFIG_CLASSES(), half_life_s=10, trend_half_life_s=20, horizon_s=120)
    key = DemandRecorder().buckets.key(900, 200)
    n = 0.0
    for t in range(0, 301, 5):
        est.update(float(t), {"r": (float(t), -100.0, {f"llmd_dm_{key}_n": n, f"llmd_dm_{key}_in": 900 * n,
                                                      f"llmd_dm_{key}_out": 200 * n})})
        n += (100.0 - 0.15 * t) * 5
    level = est.total_rate()
    assert est.forecast(hold_level=False)[0].rate < 0.8 * level  # the trend alone would plan below today's rate
    assert est.forecast()[0].rate == pytest.approx(level)


def CONFIG_CLASSES():
    return AutoscalerConfig.model_validate(CONFIG).classes


def test_wva_specs_tuning_choice_and_spread():
    kw = eval_summary.wva_kwargs("wva:kv=0.4,q=0.5,int=5,wait=0")
    assert kw["kv_threshold"] == 0.4 and kw["queue_threshold"] == 0.5 and kw["interval_s"] == 5.0
    assert kw["wait_for_starting"] is False and kw["spare_kv"] == 0.5  # unnamed keys keep WVA's defaults
    assert eval_summary.wva_kwargs("wva_saturation")["kv_threshold"] == 0.8
    with pytest.raises(ValueError):
        eval_summary.wva_kwargs("wva:bogus=1")
    grid = [{"spec": "a", "cost_usd": 30.0, "interactive_slo": 0.96}, {"spec": "b", "cost_usd": 20.0,
            "interactive_slo": 0.955}, {"spec": "c", "cost_usd": 10.0, "interactive_slo": 0.5}]
    assert eval_summary.choose_tuned(grid, 0.95)["spec"] == "b"
    best = eval_summary.choose_tuned(grid, 0.99)
    assert best["spec"] == "a" and best["reached_target"] is False

    def run(cost, slo):
        pc = {"slo_attainment": slo, "slo_after_startup_window": slo}
        return {"cost_usd": cost, "per_class": {"interactive": pc, "batch": pc}, "scale_actions": 3}

    s = eval_summary.summarize({"ours": {"0": run(10, 0.95), "1": run(12, 0.96), "2": run(8, 0.94)},
                                "wva_saturation_tuned": {"0": run(20, 0.95), "1": run(20, 0.95), "2": run(40, 0.9)}})
    assert s["ours"]["cost_usd"]["median"] == 10 and s["ours"]["cost_usd"]["min"] == 8
    r = s["ours_cost_vs_wva_saturation_tuned"]
    assert r["per_seed"] == {"0": 0.5, "1": 0.6, "2": 0.2} and r["median"] == 0.5
