"""Every scorer, table-driven on fake endpoints."""

import pytest

from llmd_ray.routing.framework import PreciseIndexView, RoutedEvent
from llmd_ray.routing.plugins.active_request import ActiveRequestScorer
from llmd_ray.routing.plugins.kv_cache_utilization import KVCacheUtilizationScorer
from llmd_ray.routing.plugins.load_aware import LoadAwareScorer
from llmd_ray.routing.plugins.no_hit_lru import NoHitLRUScorer
from llmd_ray.routing.plugins.precise_prefix_cache import PrecisePrefixCacheScorer
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.plugins.queue import QueueScorer
from llmd_ray.routing.plugins.session_affinity import SessionAffinityScorer
from llmd_ray.routing.testing import make_cycle, make_endpoints, make_handle, make_plugin, make_request


def run(cls, endpoints, request=None, handle=None, **params):
    handle = handle or make_handle()
    plugin = make_plugin(cls, handle, **params)
    return plugin.score(make_cycle(request or make_request([1]), handle), endpoints)


def approx(xs):
    return pytest.approx(xs, abs=1e-9)


@pytest.mark.parametrize(
    "waiting, expected",
    [([0, 0, 0], [1, 1, 1]), ([0, 5, 10], [1, 0.5, 0]), ([4, 2], [0, 1]), ([3], [1])],
)
def test_queue(waiting, expected):
    assert run(QueueScorer, make_endpoints(len(waiting), num_waiting=waiting)) == approx(expected)


@pytest.mark.parametrize("usage, expected", [([0.0, 0.25, 1.0], [1.0, 0.75, 0.0])])
def test_kv_cache_utilization(usage, expected):
    assert run(KVCacheUtilizationScorer, make_endpoints(3, kv_cache_usage=usage)) == approx(expected)


@pytest.mark.parametrize(
    "threshold, waiting, expected",
    [(128, [0, 64, 128, 500], [0.5, 0.25, 0.0, 0.0]), (10, [0, 1, 5], [0.5, 0.45, 0.25])],
)
def test_load_aware(threshold, waiting, expected):
    eps = make_endpoints(len(waiting), num_waiting=waiting)
    assert run(LoadAwareScorer, eps, threshold=threshold) == approx(expected)


@pytest.mark.parametrize("in_flight, expected", [([2, 2], [1, 1]), ([0, 3, 6], [1, 0.5, 0])])
def test_active_request(in_flight, expected):
    assert run(ActiveRequestScorer, make_endpoints(len(in_flight), in_flight=in_flight)) == approx(expected)


@pytest.mark.parametrize(
    "records, blocks, expected",
    [
        ({}, [1, 2, 3, 4], [0, 0, 0]),
        ({"e0": [1, 2, 3, 4], "e1": [1, 2]}, [1, 2, 3, 4], [1.0, 0.5, 0]),
        ({"e2": [1]}, [1, 2, 3, 4], [0, 0, 0.25]),
        ({"e0": [9]}, [1, 2], [0, 0, 0]),
    ],
)
def test_prefix_cache(records, blocks, expected):
    handle = make_handle()
    prefix = make_plugin(PrefixCacheScorer, handle)
    for ep, bl in records.items():
        prefix.index.record(ep, make_request(bl).block_hashes)
    assert prefix.score(make_cycle(make_request(blocks), handle), make_endpoints(3)) == approx(expected)


def test_prefix_cache_owns_its_index():
    """Routings are recorded by the plugin's own hooks; prior matches are those before the recording."""
    handle = make_handle()
    prefix = make_plugin(PrefixCacheScorer, handle)
    req = make_request([1, 2, 3])
    prefix.prepare(make_cycle(req, handle), make_endpoints(2, num_blocks=[2, None]))
    assert prefix.index.capacity("e0") == 2 and prefix.index.capacity("e1") == prefix.index.default_capacity
    event = RoutedEvent(req, "e1", 0.0)
    prefix.on_routed(event)
    assert prefix.prior_matches(event) == {}  # asked after the hook: still the matches before it
    assert prefix.matches(make_cycle(req, handle)) == {"e1": 3}
    prefix.remove_endpoint("e1")
    assert prefix.index.match(req.block_hashes) == {}


def test_prefix_cache_short_request_scores_zero():
    handle = make_handle()
    req = make_request([], tail=3)  # shorter than a block
    assert run(PrefixCacheScorer, make_endpoints(2), req, handle) == [0.0, 0.0]


class FakeView:
    def __init__(self, hits, staleness=0.0, fail=False, recovering=False):
        self.hits, self.staleness, self.fail, self.calls = hits, staleness, fail, []
        self.recovering = recovering

    def lookup(self, block_hashes):
        self.calls.append(list(block_hashes))
        if self.fail:
            raise RuntimeError("boom")
        return self.hits

    def staleness_s(self):
        return self.staleness

    def is_recovering(self):
        return self.recovering


def test_fake_view_satisfies_protocol():
    assert isinstance(FakeView({}), PreciseIndexView)


@pytest.mark.parametrize(
    "hits, params, expected",
    [
        ({"e0": (4, "GPU"), "e1": (4, "CPU"), "e2": (2, "STORAGE")}, {}, [1.0, 0.8, 0.25]),
        ({"e0": (2, "gpu"), "e1": (4, "nvme")}, {}, [0.5, 0.5, 0]),  # unknown tier: 0.5
        ({"e1": (4, "cpu")}, {"tierWeights": {"cpu": 0.25}}, [0, 0.25, 0]),
        ({"e0": (4, "weird")}, {"unknownTierWeight": 0.0}, [0, 0, 0]),
        # shared tier: credited to every endpoint at its weight; an endpoint's own better hit wins
        ({"object-store": (4, "object-store"), "e0": (4, "gpu")}, {}, [1.0, 0.5, 0.5]),
        ({"object-store": (4, "object-store"), "e1": (1, "gpu")}, {}, [0.5, 0.5, 0.5]),
    ],
)
def test_precise_prefix_cache_tiers(hits, params, expected):
    view = FakeView(hits)
    handle = make_handle(precise_view=view)
    req = make_request([1, 2, 3, 4])
    assert run(PrecisePrefixCacheScorer, make_endpoints(3), req, handle, **params) == approx(expected)
    assert view.calls == [req.event_block_hashes]  # the view gets the KV-event (64-bit) form


@pytest.mark.parametrize(
    "view, params, reason, expected",
    [
        (None, {}, "missing", [1.0, 0, 0]),
        (FakeView({"e2": (4, "gpu")}, staleness=60), {}, "stale", [1.0, 0, 0]),
        (FakeView({"e2": (4, "gpu")}, fail=True), {}, "error", [1.0, 0, 0]),
        # a restarted index that has not replayed the engines yet: its (empty) answer is not trusted
        (FakeView({}, recovering=True), {}, "recovering", [1.0, 0, 0]),
        (None, {"fallbackToApproximate": False}, "missing", [0, 0, 0]),
        (FakeView({"e2": (4, "gpu")}, staleness=60), {"maxStalenessSeconds": 100}, None, [0, 0, 1.0]),
    ],
)
def test_precise_prefix_cache_fallback(view, params, reason, expected):
    handle = make_handle(precise_view=view)
    req = make_request([1, 2, 3, 4])
    prefix = make_plugin(PrefixCacheScorer, handle)
    prefix.index.record("e0", req.block_hashes)
    plugin = make_plugin(PrecisePrefixCacheScorer, handle, prefix=prefix, **params)
    assert plugin.score(make_cycle(req, handle), make_endpoints(3)) == approx(expected)
    st = plugin.stats()
    assert st["lookups"] == 1
    assert st["fallbacks"] == {k: int(k == reason) for k in ("missing", "stale", "recovering", "error")}


def routed(plugin, req, ep):
    plugin.on_routed(RoutedEvent(req, ep, 0.0))


@pytest.mark.parametrize(
    "history, session, expected",
    [
        ([], "s1", [0, 0, 0]),
        ([("s1", "e1")], "s1", [0, 1, 0]),
        ([("s1", "e1"), ("s1", "e2")], "s1", [0, 0, 1]),
        ([("s1", "e1")], "s2", [0, 0, 0]),
        ([("s1", "e1")], None, [0, 0, 0]),
        ([("s1", "e9")], "s1", [0, 0, 0]),  # last endpoint is not a candidate
    ],
)
def test_session_affinity(history, session, expected):
    handle = make_handle()
    plugin = make_plugin(SessionAffinityScorer, handle)
    for sid, ep in history:
        routed(plugin, make_request([1], session_id=sid), ep)
    req = make_request([1], session_id=session)
    assert plugin.score(make_cycle(req, handle), make_endpoints(3)) == expected


def test_session_affinity_bounded_and_removal():
    plugin = make_plugin(SessionAffinityScorer, maxSessions=2)
    for i in range(3):
        routed(plugin, make_request([1], session_id=f"s{i}"), "e0")
    assert plugin.endpoint_of("s0") is None and plugin.endpoint_of("s2") == "e0"
    plugin.remove_endpoint("e0")
    assert plugin.stats() == {"sessions": 0}


@pytest.mark.parametrize(
    "cold_history, expected",
    [
        ([], [1, 1, 1, 1]),
        (["e0"], [0, 1, 1, 1]),  # used ones rank after the 3 never used: rank 3 -> 0
        (["e0", "e1"], [1 / 3, 0, 1, 1]),  # e0 least recently used of the two: rank 2
        (["e0", "e1", "e2", "e3"], [1, 2 / 3, 1 / 3, 0]),
        (["e0", "e1", "e2", "e3", "e0"], [0, 1, 2 / 3, 1 / 3]),
    ],
)
def test_no_hit_lru_cold(cold_history, expected):
    handle = make_handle()
    plugin = make_plugin(NoHitLRUScorer, handle)
    for ep in cold_history:
        routed(plugin, make_request([7]), ep)  # the prefix index holds nothing: a cold request
    assert plugin.lru_order() == list(dict.fromkeys(reversed(cold_history)))[::-1]
    assert plugin.score(make_cycle(make_request([1]), handle), make_endpoints(4)) == approx(expected)


def test_no_hit_lru_warm_is_neutral_and_warm_routings_not_tracked():
    handle = make_handle()
    plugin = make_plugin(NoHitLRUScorer, handle)
    req = make_request([1, 2])
    plugin.prefix.index.record("e0", req.block_hashes[:1])
    routed(plugin, req, "e0")  # warm (1 block held): not tracked
    assert plugin.lru_order() == []
    assert plugin.score(make_cycle(req, handle), make_endpoints(3)) == [0.5, 0.5, 0.5]
    assert plugin.score(make_cycle(make_request([5]), handle), make_endpoints(1)) == [1.0]


def test_no_hit_lru_removal():
    plugin = make_plugin(NoHitLRUScorer)
    routed(plugin, make_request([1]), "e1")
    assert plugin.lru_order() == ["e1"]
    plugin.remove_endpoint("e1")
    assert plugin.lru_order() == []
