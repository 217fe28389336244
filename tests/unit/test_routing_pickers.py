"""Pickers: max-score (ties: least in flight, then seeded random) and weighted-random."""

from collections import Counter

import pytest

from llmd_ray.routing.plugins.max_score import MaxScorePicker
from llmd_ray.routing.plugins.weighted_random import WeightedRandomPicker
from llmd_ray.routing.testing import make_cycle, make_endpoints, make_handle, make_plugin, make_request


def pick(cls, totals, in_flight=None, seed=0, **params):
    handle = make_handle(seed=seed)
    eps = make_endpoints(len(totals), in_flight=in_flight or [0] * len(totals))
    p = make_plugin(cls, handle, **params)
    return [eps[i].id for i in p.pick(make_cycle(make_request([1]), handle), eps, totals)]


@pytest.mark.parametrize(
    "totals, in_flight, expected",
    [
        ([1.0, 3.0, 2.0], None, ["e1", "e2", "e0"]),
        ([2.0, 2.0, 1.0], [5, 1, 0], ["e1", "e0", "e2"]),  # tie: fewer in flight first
        ([2.0, 2.0 + 1e-12, 1.0], [5, 1, 0], ["e1", "e0", "e2"]),  # within 1e-9 is a tie
        ([0.0], None, ["e0"]),
        ([], None, []),
    ],
)
def test_max_score(totals, in_flight, expected):
    assert pick(MaxScorePicker, totals, in_flight) == expected


def test_max_score_random_ties_are_seeded_and_spread():
    firsts = Counter(pick(MaxScorePicker, [1.0] * 4, seed=s)[0] for s in range(200))
    assert set(firsts) == {"e0", "e1", "e2", "e3"} and min(firsts.values()) > 25
    assert pick(MaxScorePicker, [1.0] * 4, seed=3) == pick(MaxScorePicker, [1.0] * 4, seed=3)


def test_max_score_random_tie_break_ignores_in_flight():
    firsts = Counter(pick(MaxScorePicker, [1.0, 1.0], [9, 0], seed=s, tieBreak="random")[0] for s in range(100))
    assert firsts["e0"] > 20


def test_weighted_random_proportional():
    firsts = Counter(pick(WeightedRandomPicker, [3.0, 1.0, 0.0], seed=s)[0] for s in range(2000))
    assert firsts["e2"] == 0
    assert 0.70 < firsts["e0"] / 2000 < 0.80  # expected 0.75


def test_weighted_random_full_ranking_zeros_last():
    for s in range(20):
        ranked = pick(WeightedRandomPicker, [0.0, 2.0, 0.0, 1.0], seed=s)
        assert sorted(ranked) == ["e0", "e1", "e2", "e3"] and set(ranked[2:]) == {"e0", "e2"}
