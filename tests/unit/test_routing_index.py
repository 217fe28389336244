"""ApproximatePrefixIndex: longest held prefix, LRU eviction order, capacity, removal."""

import pytest

from llmd_ray.routing.index import ApproximatePrefixIndex


def idx(capacity=100, **records):
    ix = ApproximatePrefixIndex(default_capacity=capacity)
    for ep, hashes in records.items():
        ix.record(ep, hashes)
    return ix


@pytest.mark.parametrize(
    "records, query, expected",
    [
        ({}, ["a", "b"], {}),
        ({"e0": ["a", "b", "c"]}, [], {}),
        ({"e0": ["a", "b", "c"]}, ["a", "b", "c"], {"e0": 3}),
        ({"e0": ["a", "b", "c"]}, ["a", "b", "c", "d"], {"e0": 3}),
        ({"e0": ["a", "b", "c"]}, ["a", "x", "c"], {"e0": 1}),
        ({"e0": ["a", "b", "c"]}, ["x", "b", "c"], {}),  # leading blocks only
        ({"e0": ["a", "b"], "e1": ["a", "b", "c", "d"]}, ["a", "b", "c", "d"], {"e0": 2, "e1": 4}),
        ({"e0": ["a"], "e1": ["a", "b"], "e2": ["q"]}, ["a", "b", "c"], {"e0": 1, "e1": 2}),
        ({"e0": ["a", "c"], "e1": ["a", "b", "c"]}, ["a", "b", "c"], {"e0": 1, "e1": 3}),  # gap stops e0
    ],
)
def test_match(records, query, expected):
    assert idx(**records).match(query) == expected


def test_record_makes_head_most_recent():
    ix = idx(e0=["a", "b", "c"])
    assert ix.lru_order("e0") == ["c", "b", "a"]  # tail evicted first, as vLLM frees blocks


@pytest.mark.parametrize(
    "capacity, recorded, expected_lru, expected_match",
    [
        # the tail of the older prefix goes first; its head survives
        (4, [["a", "b", "c"], ["x", "y"]], ["b", "a", "y", "x"], {("a", "b", "c"): 2, ("x", "y"): 2}),
        (3, [["a", "b", "c"], ["x", "y"]], ["a", "y", "x"], {("a", "b", "c"): 1, ("x", "y"): 2}),
        (2, [["a", "b", "c"], ["x", "y"]], ["y", "x"], {("a", "b", "c"): 0, ("x", "y"): 2}),
        # re-recording a prefix refreshes it: the other one is evicted instead
        (4, [["a", "b"], ["x", "y"], ["a", "b"], ["p"]], ["x", "b", "a", "p"], {("a", "b"): 2, ("x", "y"): 1}),
        # a shared head stays hot while the tails churn
        (3, [["s", "t1"], ["s", "t2"], ["s", "t3"]], ["t2", "t3", "s"], {("s", "t1"): 1, ("s", "t3"): 2}),
    ],
)
def test_lru_eviction_order(capacity, recorded, expected_lru, expected_match):
    ix = ApproximatePrefixIndex(default_capacity=capacity)
    for hashes in recorded:
        ix.record("e0", hashes)
    assert ix.lru_order("e0") == expected_lru
    for query, n in expected_match.items():
        assert ix.match(list(query)).get("e0", 0) == n


def test_set_capacity_evicts_and_is_per_endpoint():
    ix = idx(e0=["a", "b", "c", "d"], e1=["a", "b", "c", "d"])
    ix.set_capacity("e0", 2)
    assert ix.num_blocks("e0") == 2 and ix.num_blocks("e1") == 4
    assert ix.match(["a", "b", "c", "d"]) == {"e0": 2, "e1": 4}
    assert ix.capacity("e0") == 2 and ix.capacity("e1") == 100
    with pytest.raises(ValueError):
        ix.set_capacity("e0", 0)


def test_capacity_applies_to_later_records():
    ix = ApproximatePrefixIndex(default_capacity=10)
    ix.set_capacity("e0", 2)
    ix.record("e0", ["a", "b", "c"])
    assert ix.lru_order("e0") == ["b", "a"]


def test_remove_endpoint_cleans_holders():
    ix = idx(e0=["a", "b"], e1=["a"])
    ix.remove_endpoint("e0")
    assert ix.match(["a", "b"]) == {"e1": 1}
    ix.remove_endpoint("e1")
    assert ix.match(["a"]) == {} and ix._holders == {}
    ix.remove_endpoint("missing")  # no error
    assert ix.endpoints() == []


def test_eviction_drops_holder_entries():
    ix = ApproximatePrefixIndex(default_capacity=1)
    ix.record("e0", ["a"])
    ix.record("e0", ["b"])
    assert "a" not in ix._holders and ix.match(["a"]) == {}


def test_bad_default_capacity():
    with pytest.raises(ValueError):
        ApproximatePrefixIndex(default_capacity=0)


def test_match_equals_a_per_endpoint_scan_with_many_endpoints_and_reused_slots():
    import random

    rng = random.Random(4)
    ix = ApproximatePrefixIndex(default_capacity=30)
    prefixes = [[(g, b) for b in range(12)] for g in range(10)]
    live: set[str] = set()
    for step in range(3000):
        ep = f"e{rng.randrange(200)}"  # > 64 endpoints: masks span several machine words
        if rng.random() < 0.02:
            ix.remove_endpoint(ep)  # its slot is reused by the next new endpoint
            live.discard(ep)
            continue
        ix.record(ep, prefixes[rng.randrange(10)][: rng.randrange(1, 13)])
        live.add(ep)
        if step % 50 == 0:
            query = prefixes[rng.randrange(10)]
            expected = {}
            for e in live:
                held, n = set(ix.lru_order(e)), 0
                while n < len(query) and query[n] in held:
                    n += 1
                if n:
                    expected[e] = n
            assert ix.match(query) == expected
    assert sorted(ix.endpoints()) == sorted(live)
