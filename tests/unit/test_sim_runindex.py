"""RunPrefixIndex answers exactly as the per-block ApproximatePrefixIndex (matches, dict order, LRUs, versions)."""

import random

import pytest

from llmd_ray.routing.index import ApproximatePrefixIndex
from llmd_ray.sim.runindex import RunPrefixIndex
from llmd_ray.sim.runtrie import TargetMatch


def chain(parts):
    """Chained block hashes of a path given as (segment id, blocks) parts: a block's hash names its prefix."""
    out, prev = [], 0
    for seg, n in parts:
        for i in range(n):
            prev = hash((prev, seg, i))
            out.append(prev)
    return out


def same(a: ApproximatePrefixIndex, b: RunPrefixIndex, query) -> None:
    ma, mb = a.match(query), b.match(query)
    assert ma == mb and list(ma) == list(mb), (ma, mb)
    assert all(b.match_of(e, query) == ma.get(e, 0) for e in a.endpoints() + ["never-seen"])
    assert a.endpoints() == b.endpoints() and a.version == b.version
    for e in a.endpoints():
        assert a.lru_order(e) == b.lru_order(e) and a.num_blocks(e) == b.num_blocks(e), e


def paths(rng: random.Random):
    """Shared heads (system prompts), unique tails, prefixes of earlier paths and extensions (chat turns)."""
    seen = []
    while True:
        r = rng.random()
        if seen and r < 0.15:  # a prefix of an earlier path (ends inside a run)
            p = rng.choice(seen)
            yield p[: rng.randrange(0, len(p) + 1)]
            continue
        if seen and r < 0.3:  # an earlier path extended
            p = rng.choice(seen) + [(rng.random(), rng.randrange(1, 4))]
        else:
            p = [(rng.randrange(6), rng.randrange(1, 8)), (rng.random(), rng.randrange(0, 5))]
        seen.append(p)
        yield p


@pytest.mark.parametrize("seed", range(8))
def test_run_index_matches_the_per_block_index_operation_by_operation(seed):
    rng = random.Random(seed)
    cap = rng.choice([6, 15, 40, 1000])
    a, b = ApproximatePrefixIndex(cap), RunPrefixIndex(cap)
    eps = [f"e{i}" for i in range(rng.randrange(2, 70))]
    gen = paths(rng)
    for step in range(800):
        query = chain(next(gen))
        r, e = rng.random(), rng.choice(eps)
        same(a, b, query)
        if r < 0.8:
            a.record(e, query)
            b.record(e, tuple(query) if rng.random() < 0.5 else query)
        elif r < 0.87:
            a.remove_endpoint(e)
            b.remove_endpoint(e)
        else:
            c = rng.choice([3, 8, 30, cap])
            a.set_capacity(e, c)
            b.set_capacity(e, c)
        same(a, b, query)
    assert b.per_block is None  # chained hashes: the runs answered throughout
    holders = {}
    for e in a.endpoints():
        for x in a.lru_order(e):
            holders[x] = holders.get(x, 0) | 1 << b._slot[e]
    assert holders == a._holders


def test_a_broken_chain_turns_it_into_the_per_block_index_with_the_same_state():
    a, b = ApproximatePrefixIndex(7), RunPrefixIndex(7)
    ops = [("e0", ["a", "b", "c"]), ("e1", ["a", "b", "d"]), ("e0", ["x", "y"]), ("e2", ["a", "b"]),
           ("e1", ["b", "c"]),  # b after no predecessor: not a chain
           ("e0", ["a", "a"]), ("e2", ["a", "b", "c", "d"])]
    for i, (e, hs) in enumerate(ops):
        for q in (hs, ["a", "b", "c"], ["x"]) + ((["b", "c"],) if i > 4 else ()):
            same(a, b, q)
        a.record(e, hs)
        b.record(e, hs)
        assert (b.per_block is not None) == (i >= 4)
    a.set_capacity("e0", 2)
    b.set_capacity("e0", 2)
    a.remove_endpoint("e1")
    b.remove_endpoint("e1")
    same(a, b, ["a", "b", "c", "d"])
    assert a._holders == b.per_block._holders


def test_repeated_block_and_capacity_errors():
    a, b = ApproximatePrefixIndex(), RunPrefixIndex()
    a.record("e0", ["a", "b", "a"])
    b.record("e0", ["a", "b", "a"])
    same(a, b, ["a", "b"])
    with pytest.raises(ValueError):
        RunPrefixIndex(0)
    with pytest.raises(ValueError):
        RunPrefixIndex().set_capacity("e0", 0)


def test_target_match_answers_for_its_endpoint_only():
    m = TargetMatch("e1", 3)
    assert m.get("e1", 0) == 3 and TargetMatch("e1", 0).get("e1", 0) == 0
    with pytest.raises(KeyError):
        m.get("e2", 0)
    with pytest.raises(TypeError):
        bool(m)
