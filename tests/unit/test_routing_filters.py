"""Filters: prefix-cache-affinity (sticky until saturated, imbalance gate), with its typed verdicts."""

import inspect
import re

import pytest

from llmd_ray.routing.framework import RoutedEvent
from llmd_ray.routing.plugins import prefix_cache_affinity
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.plugins.prefix_cache_affinity import PrefixCacheAffinityFilter
from llmd_ray.routing.result import Affinity
from llmd_ray.routing.testing import FakeClock, make_cycle, make_endpoints, make_handle, make_plugin, make_request

# The algorithm as the module's header comment states it. Changing the algorithm means changing both.
ALGORITHM = """\
#  1. Load: load(e) = max(backlog(e), num_waiting(e) * averageUncachedTokens), in pending prefill tokens.
#  2. IMBALANCE GATE, before affinity: if max load - min load > imbalanceAbsTokens
#     and max load > imbalanceRatio * min load: skip affinity, keep all, route by load.
#  3. Match: m(e) = leading prefix blocks endpoint e holds; best = max m(e).
#     If best < minMatchBlocks the request is cold: keep all.
#  4. Warm set: the endpoints with m(e) >= warmFraction * best.
#  5. Saturation: threshold = prefillTokensPerSecond * maxTtftPenaltySeconds;
#     a warm endpoint is saturated when load(e) > threshold or it is at max_ongoing.
#  6. Keep the unsaturated warm endpoints; if every warm endpoint is saturated,
#     RELEASE: keep all, route by load. With releaseWhen: faster, release only if
#     that starts the request sooner: some other endpoint's load + uncached tokens
#     < the least of the same over the warm ones (not at max_ongoing); else HOLD:
#     keep the warm ones. (At overload every endpoint is saturated: releasing
#     would scatter the prefix for no gain.) releaseMarginSeconds: release only
#     if the other endpoint starts it more than this much sooner
#     (x prefillTokensPerSecond tokens).
"""


def test_header_comment_pins_the_algorithm():
    source = inspect.getsource(prefix_cache_affinity)
    header = source.split('"""', 1)[0]
    assert header.startswith("# Prefix-cache affinity with saturation release")
    assert ALGORITHM in header
    steps = [line for line in header.splitlines() if re.match(r"#\s+\d\.", line)]
    assert [s.split(".")[0] for s in steps] == [f"#  {i}" for i in range(1, 7)]


PARAMS = dict(prefillTokensPerSecond=100, maxTtftPenaltySeconds=1.0, averageUncachedTokens=10,
              imbalanceAbsTokens=10_000, imbalanceRatio=2.0)
BLOCKS = [1, 2, 3, 4, 5]


def setup(records, params=None, clock=None):
    handle = make_handle(clock=clock)
    prefix = make_plugin(PrefixCacheScorer, handle)  # owns the approximate index the filter reads
    for ep, n in records.items():
        prefix.index.record(ep, make_request(BLOCKS[:n]).block_hashes)
    return handle, make_plugin(PrefixCacheAffinityFilter, handle, prefix=prefix, **{**PARAMS, **(params or {})})


@pytest.mark.parametrize(
    "records, fields, params, kept, reason, affinity_off",
    [
        # cold: nobody holds the prefix -> keep all
        ({}, {}, {}, ["e0", "e1", "e2"], "cold", False),
        # warm: only the endpoint with the best match
        ({"e1": 5}, {}, {}, ["e1"], "warm", False),
        # warm set = within warmFraction of the best
        ({"e0": 4, "e1": 5, "e2": 2}, {}, {}, ["e0", "e1"], "warm", False),
        ({"e0": 4, "e1": 5, "e2": 2}, {}, {"warmFraction": 1.0}, ["e1"], "warm", False),
        # minMatchBlocks: a 1-block match is treated as cold
        ({"e1": 1}, {}, {"minMatchBlocks": 2}, ["e0", "e1", "e2"], "cold", False),
        # a saturated warm endpoint is dropped while another warm one is free
        ({"e0": 5, "e1": 5}, {"num_waiting": [11, 0, 0]}, {}, ["e1"], "warm", False),
        # at max_ongoing counts as saturated
        ({"e0": 5, "e1": 5}, {"in_flight": [4, 0, 0], "max_ongoing": [4, 4, 4]}, {}, ["e1"], "warm", False),
        # all warm endpoints saturated -> release to everyone, affinity scorers off
        ({"e1": 5}, {"num_waiting": [0, 11, 0]}, {}, ["e0", "e1", "e2"], "released", True),
        # exactly at the threshold is not saturated
        ({"e1": 5}, {"num_waiting": [0, 10, 0]}, {}, ["e1"], "warm", False),
        # imbalance gate, evaluated before affinity: skewed loads -> keep all, affinity off
        ({"e1": 5}, {"num_waiting": [0, 11, 0]}, {"imbalanceAbsTokens": 50}, ["e0", "e1", "e2"], "imbalanced", True),
        # gate needs both: the absolute gap (100 > 50) and the ratio (110 > 3 x 100 is false)
        ({"e1": 5}, {"num_waiting": [10, 11, 10]}, {"imbalanceAbsTokens": 5, "imbalanceRatio": 3.0},
         ["e0", "e1", "e2"], "released", True),
        ({"e1": 5}, {"num_waiting": [0, 5, 0]}, {"imbalanceAbsTokens": 60}, ["e1"], "warm", False),
        # releaseWhen faster: everyone saturated alike -> hold (e1 starts at 110 tokens, the others at 110 + 20)
        ({"e1": 5}, {"num_waiting": [11, 11, 11]}, {"releaseWhen": "faster"}, ["e1"], "warm", False),
        ({"e1": 5}, {"num_waiting": [11, 11, 11]}, {}, ["e0", "e1", "e2"], "released", True),
        # ... an idle endpoint starts it sooner (0 + 20 < 110) -> release
        ({"e1": 5}, {"num_waiting": [0, 11, 0]}, {"releaseWhen": "faster"}, ["e0", "e1", "e2"], "released", True),
        # ... a cold endpoint ahead only by less than the prefill it would redo (100 + 20 >= 110) -> hold
        ({"e1": 5}, {"num_waiting": [10, 11, 10]}, {"releaseWhen": "faster", "imbalanceAbsTokens": 5,
                                                    "imbalanceRatio": 3.0}, ["e1"], "warm", False),
        # ... the warm endpoint at max_ongoing cannot take it -> release
        ({"e1": 5}, {"num_waiting": [11, 11, 11], "in_flight": [0, 4, 0], "max_ongoing": [4, 4, 4]},
         {"releaseWhen": "faster"}, ["e0", "e1", "e2"], "released", True),
        # ... an idle endpoint sooner by 90 tokens, but the margin asks for more (1 s x 100 tokens/s) -> hold
        ({"e1": 5}, {"num_waiting": [0, 11, 0]}, {"releaseWhen": "faster", "releaseMarginSeconds": 1.0},
         ["e1"], "warm", False),
        # ... sooner by more than the margin (0.8 s x 100 = 80 tokens < 90) -> release
        ({"e1": 5}, {"num_waiting": [0, 11, 0]}, {"releaseWhen": "faster", "releaseMarginSeconds": 0.8},
         ["e0", "e1", "e2"], "released", True),
        # ... every endpoint warm and saturated: nowhere else to go -> hold them all
        ({"e0": 5, "e1": 5, "e2": 5}, {"num_waiting": [11, 12, 13]}, {"releaseWhen": "faster"},
         ["e0", "e1", "e2"], "warm", False),
    ],
)
def test_prefix_cache_affinity(records, fields, params, kept, reason, affinity_off):
    handle, f = setup(records, params)
    eps = make_endpoints(3, **fields)
    cycle = make_cycle(make_request(BLOCKS), handle)
    out = f.filter(cycle, eps)
    assert [e.id for e in out.kept] == kept
    assert out.affinity is Affinity(reason) and out.reason.startswith(reason)
    assert out.affinity.by_load == affinity_off
    assert f.stats()["outcomes"][reason] == 1


def test_held_verdicts_are_counted_and_explained():
    handle, f = setup({"e1": 5}, {"releaseWhen": "faster"})
    out = f.filter(make_cycle(make_request(BLOCKS), handle), make_endpoints(3, num_waiting=[11, 11, 11]))
    assert out.reason == "warm: held 1 of 1 saturated warm endpoints (start cost 110 tokens, elsewhere 130)"
    assert f.stats() == {"outcomes": {"cold": 0, "warm": 1, "released": 0, "imbalanced": 0}, "held": 1}


def test_backlog_from_routed_requests_saturates_then_drains():
    clock = FakeClock()
    handle, f = setup({"e1": 5}, clock=clock)
    req = make_request(BLOCKS)  # 20 tokens, 5 blocks of 4
    cold = make_request([9, 8, 7, 6, 5])  # 20 tokens nobody holds
    eps = make_endpoints(3)
    # 6 cold routings of 20 tokens: backlog 120 > threshold 100
    for _ in range(6):
        f.on_routed(RoutedEvent(cold, "e1", clock()))
    assert f.backlog("e1", clock()) == 120
    out = f.filter(make_cycle(req, handle), eps)
    assert out.affinity is Affinity.RELEASED and len(out.kept) == 3
    clock.advance(0.5)  # drains at 100 tokens/s
    assert f.backlog("e1", clock()) == pytest.approx(70)
    out = f.filter(make_cycle(req, handle), eps)
    assert out.affinity is Affinity.WARM and [e.id for e in out.kept] == ["e1"]
    clock.advance(10)
    assert f.backlog("e1", clock()) == 0


def test_backlog_counts_only_uncached_tokens():
    handle, f = setup({"e0": 4})
    req = make_request(BLOCKS, tail=3)  # 23 tokens
    f.on_routed(RoutedEvent(req, "e0", 1000.0))  # 16 cached in the prefix index
    f.on_routed(RoutedEvent(req, "e1", 1000.0))  # nothing cached
    assert f.backlog("e0", 1000.0) == 7 and f.backlog("e1", 1000.0) == 23
    f.remove_endpoint("e0")
    assert f.backlog("e0", 1000.0) == 0


def test_engine_queue_and_backlog_take_the_max():
    handle, f = setup({})
    f.on_routed(RoutedEvent(make_request(BLOCKS), "e0", 1000.0))  # 20 tokens
    e0, e1 = make_endpoints(2, num_waiting=[1, 3])
    assert f.load(e0, 1000.0) == 20 and f.load(e1, 1000.0) == 30


class View:
    def __init__(self, hits, staleness=0.0):
        self.hits, self.staleness = hits, staleness

    def lookup(self, hashes):
        return self.hits

    def staleness_s(self):
        return self.staleness

    def is_recovering(self):
        return False


@pytest.mark.parametrize("staleness, kept", [(0.0, ["e2"]), (99.0, ["e0"])])
def test_precise_match_source(staleness, kept):
    handle, f = setup({"e0": 5}, {"matchSource": "precise"})
    handle.precise_view = View({"e2": (5, "gpu")}, staleness)
    out = f.filter(make_cycle(make_request(BLOCKS), handle), make_endpoints(3))
    assert [e.id for e in out.kept] == kept  # stale view: falls back to the approximate index
