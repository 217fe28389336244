"""The demand estimator on synthetic series; the recorder's counters; hysteresis."""

import pytest

from llmd_ray.topology import QoSConfig
from llmd_ray.autoscaling.demand import DemandEstimator, DemandRecorder, classify, parse_metrics
from llmd_ray.autoscaling.hysteresis import Hysteresis

CLASSES = QoSConfig.model_validate({"classes": {
    "interactive": {"priority": 1, "ttft_objective_s": 0.5, "itl_objective_s": 0.05, "max_output_tokens": 256},
    "batch": {"priority": 0, "ttft_objective_s": 5.0, "itl_objective_s": 0.2}}, "default_class": "batch"}).targets()


def feed(est, t0, t1, dt, rate_fn, replicas=("r0", "r1"), shape=(800, 128), hit=0.5, born=None):
    """Drive the estimator with cumulative counters of a Poisson-free (exact) arrival series."""
    counts = {r: 0.0 for r in replicas}
    out = None
    t = t0
    while t <= t1 + 1e-9:
        snap = {}
        for r in replicas:
            rec = DemandRecorder()
            n = counts[r]
            key = rec.buckets.key(*shape)
            m = {f"llmd_dm_{key}_n": n, f"llmd_dm_{key}_in": n * shape[0], f"llmd_dm_{key}_out": n * shape[1],
                 f"llmd_dm_{key}_cached": n * shape[0] * hit}
            snap[r] = (t, (born or {}).get(r, -1e9), m)
        out = est.update(t, snap)
        for r in replicas:
            counts[r] += rate_fn(t) / len(replicas) * dt
        t += dt
    return out


def test_recorder_counts_per_bucket_and_round_trips():
    rec = DemandRecorder()
    k = rec.on_arrival(900, 100)
    rec.on_cached(k, 512)
    rec.on_arrival(1000, 150)
    parsed = parse_metrics(rec.metrics())
    assert parsed == {k: [2.0, 1900.0, 250.0, 512.0]}
    assert rec.on_arrival(5000, 2000) != k


def test_constant_rate_is_estimated_with_hit_rate_and_class():
    est = DemandEstimator(CLASSES, half_life_s=10, horizon_s=30)
    items = feed(est, 0, 300, 5, lambda t: 20.0)
    (item,) = items
    assert item.rate == pytest.approx(20.0, rel=0.02)
    assert item.hit_rate == pytest.approx(0.5, abs=1e-6)
    assert item.uncached_tokens == pytest.approx(400.0)
    assert item.cls == "interactive"
    assert est.ready


def test_trend_forecast_leads_a_ramp():
    est = DemandEstimator(CLASSES, half_life_s=20, trend_half_life_s=30, horizon_s=60)
    items = feed(est, 0, 600, 5, lambda t: 1.0 + 0.05 * t)  # 31 req/s at t=600, 34 a minute later
    rate = items[0].rate
    assert rate > 31.0  # the EWMA alone lags below the current rate; the forecast looks ahead
    assert rate == pytest.approx(34.0, rel=0.1)
    assert est.forecast(0)[0].rate < 31.0


def test_noise_is_smoothed_and_rate_decays_to_zero():
    est = DemandEstimator(CLASSES, half_life_s=30, horizon_s=0)
    items = feed(est, 0, 300, 5, lambda t: 10.0 if int(t / 5) % 2 else 30.0)
    assert items[0].rate == pytest.approx(20.0, rel=0.15)
    est2 = DemandEstimator(CLASSES, half_life_s=10, horizon_s=0)
    feed(est2, 0, 100, 5, lambda t: 10.0)
    items = feed(est2, 105, 400, 5, lambda t: 0.0)
    assert not items or items[0].rate < 0.1


def test_restarted_replica_counters_never_give_negative_rates():
    est = DemandEstimator(CLASSES, half_life_s=5, horizon_s=0)
    key = DemandRecorder().buckets.key(800, 128)
    m = lambda n: {f"llmd_dm_{key}_n": n, f"llmd_dm_{key}_in": 800 * n, f"llmd_dm_{key}_out": 128 * n}
    est.update(0, {"r": (0, -100, m(100))})
    est.update(10, {"r": (10, -100, m(200))})
    items = est.update(20, {"r": (20, -100, m(5))})  # restarted: new baseline
    # 10 req/s seen, then the restart reads as no arrivals (not as (5 - 200) / 10 s): the level decays by one
    # step (10 s at a 5 s half-life: a quarter is left), and the bucket stays.
    assert len(items) == 1 and items[0].rate == pytest.approx(2.5)
    items = est.update(30, {"r": (30, -100, m(15))})  # 10 more since the new baseline: 1 req/s
    assert len(items) == 1 and items[0].rate > 1.0  # counted (no arrivals would decay it to about 0.5)


def test_cold_replicas_do_not_drag_the_hit_rate_down():
    est = DemandEstimator(CLASSES, half_life_s=10, horizon_s=0, cold_start_s=60)
    # r1 is new at t=0 with a cold cache (hit 0); only r0's (mature) hit rate counts until r1 is 60 s old.
    key = DemandRecorder().buckets.key(800, 128)
    for t in range(0, 50, 5):
        n = t * 2.0
        snap = {"r0": (t, -1e9, {f"llmd_dm_{key}_n": n, f"llmd_dm_{key}_in": 800 * n, f"llmd_dm_{key}_out": 128 * n,
                                 f"llmd_dm_{key}_cached": 600 * n}),
                "r1": (t, 0.0, {f"llmd_dm_{key}_n": n, f"llmd_dm_{key}_in": 800 * n, f"llmd_dm_{key}_out": 128 * n,
                                f"llmd_dm_{key}_cached": 0.0})}
        items = est.update(t, snap)
    assert items[0].hit_rate == pytest.approx(0.75, abs=1e-6)
    assert items[0].rate == pytest.approx(4.0, rel=0.05)  # arrivals on the new replica still count


def test_classify_uses_the_first_matching_class():
    assert classify(CLASSES, 100, 100).name == "interactive"
    assert classify(CLASSES, 100, 1000).name == "batch"


def test_hysteresis_scales_up_at_once_and_down_slowly_and_safely():
    h = Hysteresis(stable_s=60)
    always = lambda trial: True
    assert h.apply(0, {"a": 2}, {"a": 5}, always) == {"a": 5}
    assert h.apply(10, {"a": 5}, {"a": 2}, always) == {"a": 5}  # lower wanted, not yet for long
    assert "waiting" in h.blocked["a"]
    assert h.apply(40, {"a": 5}, {"a": 5}, always) == {"a": 5}  # back up: timer resets
    assert h.apply(50, {"a": 5}, {"a": 2}, always) == {"a": 5}
    assert h.apply(100, {"a": 5}, {"a": 2}, always) == {"a": 5}  # only 50 s since the reset
    assert h.apply(111, {"a": 5}, {"a": 2}, always) == {"a": 4}  # one step at a time
    assert h.apply(121, {"a": 4}, {"a": 2}, always) == {"a": 3}
    assert h.apply(131, {"a": 3}, {"a": 2}, lambda trial: trial["a"] >= 3) == {"a": 3}
    assert "N-1" in h.blocked["a"]


def test_hysteresis_checks_joint_safety_across_variants():
    h = Hysteresis(stable_s=0)
    seen = []

    def safe(trial):
        seen.append(dict(trial))
        return trial["a"] + trial["b"] >= 5

    out = h.apply(0, {"a": 3, "b": 3}, {"a": 2, "b": 2}, safe)
    assert sum(out.values()) == 5  # the second step-down would leave too little
    assert {"a": 2, "b": 3} in seen or {"a": 3, "b": 2} in seen


def test_a_new_replicas_first_interval_is_counted():
    est = DemandEstimator(CLASSES, half_life_s=1e-3, horizon_s=0)  # no smoothing: the raw rate
    key = DemandRecorder().buckets.key(800, 128)
    m = lambda n: {f"llmd_dm_{key}_n": n, f"llmd_dm_{key}_in": 800 * n, f"llmd_dm_{key}_out": 128 * n}
    est.update(0, {"old": (0, -100, m(0))})
    est.update(10, {"old": (10, -100, m(100))})
    # "new" started at t=12 and took 50 requests by t=20; "old" took 80: 130 in 10 s, not 80.
    items = est.update(20, {"old": (20, -100, m(180)), "new": (20, 12, m(50))})
    assert items[0].rate == pytest.approx(8.0 + 50 / 8, rel=1e-3)
