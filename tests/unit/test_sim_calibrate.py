"""Reading a profile back out of recorded requests: isolation, the prefill line, the in-flight breakdown."""

import pytest

from llmd_ray.autoscaling.perf import Profile
from llmd_ray.sim.calibrate import calibrated_profile, fit_isolated, isolated_requests, rel_err, ttft_by_inflight

BASE = Profile("p", "m", "X", "measured", itl_alpha_ms=100.0, itl_beta_ms=1.0, itl_gamma_ms=2.0,
               prefill_delta_ms=500.0, prefill_epsilon_ms=900.0, max_num_seqs=8, max_num_batched_tokens=2048,
               kv_cache_tokens=16384, block_size=128)


def rec(sent, ttft, e2e, n_in, cached=0, tpot=15.0):
    return {"ok": True, "sent_s": sent, "ttft_ms": ttft, "e2e_ms": e2e, "tpot_ms": tpot,
            "input_tokens": n_in, "cached_tokens": cached, "output_tokens": 32}


def test_rel_err_is_signed_and_rejects_zero():
    assert rel_err(1.15, 1.0) == pytest.approx(0.15)
    assert rel_err(0.5, 1.0) == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        rel_err(1.0, 0.0)


def test_isolated_requests_exclude_any_overlap():
    rows = [rec(0.0, 100, 1000, 1000), rec(0.5, 100, 1000, 1000),  # overlap each other
            rec(3.0, 100, 500, 1000),  # alone
            rec(4.0, 100, 2000, 1000), rec(5.0, 100, 100, 1000)]  # the second lies inside the first
    assert [r["sent_s"] for r in isolated_requests(rows)] == [3.0]
    failed = dict(rec(3.2, 100, 100, 1000), ok=False)
    assert [r["sent_s"] for r in isolated_requests(rows + [failed])] == [3.0]


def test_fit_recovers_a_line_per_run_and_needs_two_lengths():
    # TTFT = 80 ms + 0.4 ms/token, requests 10 s apart in each run; isolation is judged per run
    run_a = [rec(10.0 * i, 80 + 0.4 * u, 80 + 0.4 * u + 500, 1100, 1100 - u, tpot=14.0 + i % 2)
             for i, u in enumerate([1100, 204, 1100, 204])]
    run_b = [rec(10.0 * i, 80 + 0.4 * 1100, 1000, 1100) for i in range(3)]  # same times as run_a: no matter
    fit = fit_isolated([run_a, run_b])
    assert fit.requests == 7
    assert fit.prefill_intercept_ms == pytest.approx(80.0)
    assert fit.prefill_ms_per_1k == pytest.approx(400.0)
    assert fit.itl_ms == pytest.approx(15.0)
    assert fit_isolated([run_b]) is None  # one length: the line is not identifiable


def test_calibrated_profile_moves_the_fixed_cost_out_of_the_engine():
    run = [rec(10.0 * i, 80 + 0.4 * u, 2000, 1100, 1100 - u) for i, u in enumerate([1100, 204])]
    fit = fit_isolated([run])
    prof, overhead = calibrated_profile(BASE, fit)
    assert (prof.itl_alpha_ms, prof.itl_beta_ms, prof.itl_gamma_ms) == (15.0, 0.0, 0.0)
    assert prof.prefill_epsilon_ms == pytest.approx(400.0)
    assert overhead == pytest.approx((80.0 - 15.0) / 1000)
    # a prefill step alone plus the overhead gives back the measured TTFT
    assert prof.step_ms(0, 0, 1100) + 1000 * overhead == pytest.approx(80 + 440)
    only_prefill, ovh = calibrated_profile(BASE, fit, decode=False)
    assert ovh == 0.0 and only_prefill.itl_alpha_ms == BASE.itl_alpha_ms
    assert only_prefill.prefill_epsilon_ms == pytest.approx(400.0)
    assert BASE.prefill_epsilon_ms == 900.0  # the base is not modified


def test_ttft_by_inflight_counts_others_running_at_send():
    run = [rec(0.0, 800, 2000, 1700), rec(1.0, 1000, 1500, 1700),  # second: 1 other in flight
           rec(1.2, 300, 500, 1700, 1408),  # warm, 2 in flight
           rec(10.0, 780, 1500, 1700)]  # alone
    out = ttft_by_inflight([run, [rec(0.0, 820, 900, 1700)]])
    assert out["cold"] == {0: [800.0, 3], 1: [1000.0, 1]}
    assert out["warm"] == {2: [300.0, 1]}
