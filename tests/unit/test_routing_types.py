"""Endpoint and RoutingRequest: built from what replicas and the ingress already have."""

import pytest

from llmd_ray.engine.stats import StatsRecorder
from llmd_ray.engine.types import GenerateRequest, SamplingOptions
from llmd_ray.routing.hashing import block_hashes
from llmd_ray.routing.types import Endpoint, RoutingRequest


def test_endpoint_from_routing_stats():
    rec = StatsRecorder(block_size=128, num_blocks=900)
    rec.record_scheduler(
        num_waiting=3, num_running=2, kv_cache_usage=0.25, prefix_queries=100, prefix_hits=40, now=50.0
    )
    stats = {**rec.snapshot().as_dict(), "rank": 1}  # what record_routing_stats returns
    e = Endpoint.from_stats("r1", stats, in_flight=4, max_ongoing=8)
    assert (e.id, e.num_waiting, e.num_running, e.kv_cache_usage) == ("r1", 3, 2, 0.25)
    assert (e.prefix_cache_queries, e.prefix_cache_hits, e.block_size, e.num_blocks) == (100, 40, 128, 900)
    assert (e.updated_at, e.rank, e.in_flight, e.max_ongoing) == (50.0, 1, 4, 8)
    assert e.stats_age_s(now=53.0) == 3.0 and not e.at_capacity


@pytest.mark.parametrize("stats", [None, {}])
def test_endpoint_without_stats(stats):
    e = Endpoint.from_stats("r", stats)
    assert e.num_blocks is None and e.block_size is None and e.updated_at is None and e.stats_age_s() is None


@pytest.mark.parametrize("in_flight, cap, full", [(3, None, False), (3, 4, False), (4, 4, True), (5, 4, True)])
def test_at_capacity(in_flight, cap, full):
    assert Endpoint("e", in_flight=in_flight, max_ongoing=cap).at_capacity is full


def test_routing_request_from_generate_request():
    g = GenerateRequest("id1", list(range(300)), SamplingOptions(max_tokens=4), session_id="s")
    r = RoutingRequest.from_generate_request(g, 128, hash_seed="0")
    assert (r.request_id, r.session_id, r.num_tokens, r.num_blocks) == ("id1", "s", 300, 2)
    assert r.block_hashes == block_hashes(list(range(300)), 128, seed="0")
