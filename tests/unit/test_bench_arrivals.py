"""Arrival schedules: constant, Poisson, gamma, stages."""

import math

import numpy as np
import pytest

from llmd_ray.workloads.arrivals import fixed_count, gaps, schedule, staged
from llmd_ray.workloads.spec import LoadSpec, Stage


def test_constant_gaps():
    t = [a.t for a in fixed_count(5, 2.0, "constant", 1.0, np.random.default_rng(0))]
    assert t == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5])


def test_inf_rate_sends_everything_at_zero():
    assert all(a.t == 0 for a in fixed_count(10, math.inf, "poisson", 1.0, np.random.default_rng(0)))


def test_fixed_count_spans_exactly_n_over_rate():
    for process in ("poisson", "gamma"):
        t = [a.t for a in fixed_count(200, 4.0, process, 0.5, np.random.default_rng(1))]
        assert t[-1] == pytest.approx(50.0)
        assert np.all(np.diff(t) >= 0)


def test_poisson_gaps_are_exponential():
    g = gaps(20000, 5.0, "poisson", 1.0, np.random.default_rng(2))
    assert g.mean() == pytest.approx(0.2, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(1.0, rel=0.05)  # CV 1


@pytest.mark.parametrize("k", [0.25, 4.0])
def test_gamma_burstiness_sets_cv(k):
    g = gaps(20000, 2.0, "gamma", k, np.random.default_rng(3))
    assert g.mean() == pytest.approx(0.5, rel=0.05)
    assert g.std() / g.mean() == pytest.approx(1 / math.sqrt(k), rel=0.07)


def test_stages_follow_their_rates():
    arr = staged([Stage(rate=2, duration_s=50), Stage(rate=10, duration_s=50)], "poisson", 1.0,
                 np.random.default_rng(4))
    n0 = sum(a.stage == 0 for a in arr)
    n1 = sum(a.stage == 1 for a in arr)
    assert n0 == pytest.approx(100, rel=0.25) and n1 == pytest.approx(500, rel=0.15)
    assert all(a.t < 50 for a in arr if a.stage == 0) and all(50 <= a.t < 100 for a in arr if a.stage == 1)


def test_schedule_is_seeded():
    load = LoadSpec(process="poisson", rate=3.0)
    a = [x.t for x in schedule(load, 20, seed=1)]
    assert a == [x.t for x in schedule(load, 20, seed=1)]
    assert a != [x.t for x in schedule(load, 20, seed=2)]


def test_duration_mode():
    arr = schedule(LoadSpec(process="constant", rate=2.0, duration_s=10), 999, seed=0)
    assert len(arr) == 20
