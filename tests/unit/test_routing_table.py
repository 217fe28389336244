"""``EndpointTable``: the Scheduler's array path makes the same decisions as its per-endpoint path."""

import random

import pytest

from llmd_ray.routing import Endpoint, RoutingRequest, Scheduler, default_config
from llmd_ray.routing.plugins.max_score import draws
from llmd_ray.routing.table import EndpointTable
from llmd_ray.routing.testing import FakeClock

BS = 4
CONFIGS = {
    "default": default_config(),
    "random-ties": {
        "plugins": [{"type": "prefix-cache-affinity", "parameters": {"prefillTokensPerSecond": 50}},
                    {"type": "prefix-cache"}, {"type": "load-aware", "parameters": {"threshold": 4}},
                    {"type": "active-request"}, {"type": "max-score", "parameters": {"tieBreak": "random"}}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "prefix-cache-affinity"}, {"pluginRef": "prefix-cache", "weight": 2},
            {"pluginRef": "load-aware"}, {"pluginRef": "active-request"}, {"pluginRef": "max-score"}]}],
    },
}
# the same with step 6's releaseWhen: faster (hold a saturated warm set unless releasing starts sooner)
CONFIGS["release-faster"] = {**CONFIGS["random-ties"], "plugins": [
    {"type": "prefix-cache-affinity", "parameters": {"prefillTokensPerSecond": 50, "releaseWhen": "faster"}},
    *CONFIGS["random-ties"]["plugins"][1:]]}
# ... strict: only the best-matching endpoints are warm, released only when another starts 1 s sooner
CONFIGS["release-margin"] = {**CONFIGS["random-ties"], "plugins": [
    {"type": "prefix-cache-affinity", "parameters": {"prefillTokensPerSecond": 50, "releaseWhen": "faster",
                                                     "releaseMarginSeconds": 1.0, "warmFraction": 1.0}},
    *CONFIGS["random-ties"]["plugins"][1:]]}


def endpoints(n: int, rng: random.Random) -> list[Endpoint]:
    # few distinct stats values: many exact ties, as with equal-sized requests
    return [Endpoint(f"e{i}", block_size=BS, num_blocks=rng.choice([40, 400]), num_waiting=rng.choice([0, 0, 1, 3]),
                     kv_cache_usage=rng.choice([0.0, 0.25, 0.5]), max_ongoing=rng.choice([None, None, 3]))
            for i in range(n)]


def requests(count: int, rng: random.Random):
    for i in range(count):
        group = rng.randrange(6)
        n = rng.randrange(0, 12)
        tokens = [group * 10_000 + j for j in range(n * BS)] + [i * 7 + 1] * rng.randrange(BS)
        yield RoutingRequest(f"r{i}", tokens, BS, session_id=f"s{rng.randrange(20)}" if rng.random() < 0.5 else None)


def run(config, use_table: bool, n_endpoints: int = 120, count: int = 400, track: bool = False):
    rng = random.Random(7)
    clock = FakeClock()
    sched = Scheduler.from_config(config, clock=clock, seed=3)
    eps = endpoints(n_endpoints, rng)
    table = EndpointTable(eps, track_in_flight=track)
    decisions = []
    for i, request in enumerate(requests(count, rng)):
        res = result = sched.schedule(request, table if use_table else eps)
        sched.on_routed(request, result.target)
        table.add_in_flight(result.target, 1)
        if i % 3 == 0:
            done = eps[rng.randrange(len(eps))]
            if done.in_flight:
                table.add_in_flight(done.id, -1)
                sched.on_completed(f"x{i}", done.id)
        # read after the state moved on: a lazily ranked result must not see the new in-flight counts
        decisions.append((result.target, list(res.ranked), [float(t) for t in res.totals],
                          [(f.plugin, f.kept, list(f.removed), f.reason, f.affinity) for f in res.filters],
                          res.affinity_off))
        if i % 25 == 0:  # a stats refresh
            for e in eps:
                e.num_waiting = rng.choice([0, 0, 1, 3])
                e.kv_cache_usage = rng.choice([0.0, 0.25, 0.5])
            table.sync()
        if i == 200:  # an endpoint goes away
            gone = eps.pop(5 % len(eps))
            table.remove(gone.id)
            sched.remove_endpoint(gone.id)
        clock.advance(rng.choice([0.0, 0.01, 0.2]))
    return decisions, sched.stats()


@pytest.mark.parametrize("track", [False, True])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_table_path_decides_exactly_like_the_list_path(name, track):
    n = 6 if name.startswith("release-") else 120  # few endpoints: all saturated often, some other one free too
    by_list, stats_list = run(CONFIGS[name], use_table=False, n_endpoints=n)
    by_table, stats_table = run(CONFIGS[name], use_table=True, n_endpoints=n, track=track)
    assert stats_table == stats_list
    if name.startswith("release-"):  # the hold branch was taken on both paths
        assert stats_list["prefix-cache-affinity"]["held"] > 0 and stats_list["prefix-cache-affinity"]["outcomes"]["released"] > 0
    for i, (a, b) in enumerate(zip(by_list, by_table)):
        assert a == b, f"decision {i} differs"
    outcomes = stats_list["prefix-cache-affinity"]["outcomes"]
    assert outcomes["warm"] and outcomes["cold"]  # both branches exercised


@pytest.mark.parametrize("m", [0, 1, 2, 7, 1000])
def test_draws_equal_successive_random_calls(m):
    a, b = random.Random(11), random.Random(11)
    assert draws(a, m).tolist() == [b.random() for _ in range(m)]
    assert a.random() == b.random()  # same state afterwards


def test_table_membership_and_sync():
    eps = [Endpoint(f"e{i}", num_waiting=i) for i in range(3)]
    table = EndpointTable(eps)
    assert list(table.num_waiting) == [0, 1, 2] and len(table) == 3 and table[1] is eps[1]
    eps[0].num_waiting = 9
    assert table.num_waiting[0] == 0  # a snapshot until sync()
    table.sync()
    assert table.num_waiting[0] == 9
    table.remove("e1")
    assert table.ids == ["e0", "e2"] and table.index_of == {"e0": 0, "e2": 1}
    with pytest.raises(ValueError, match="already"):
        table.add(eps[0])


class _OtherRandom(random.Random):
    pass


def test_a_random_subclass_gets_the_same_ranking_through_the_fallback():
    eps = [Endpoint(f"e{i}", in_flight=i % 3) for i in range(100)]
    a, b = Scheduler.from_config(default_config(), seed=1), Scheduler.from_config(default_config(), seed=1)
    a.handle.rng = _OtherRandom(1)  # not a plain Random: the table path takes its per-draw fallback
    b.handle.rng = random.Random(1)
    request = RoutingRequest("r", [1] * 10, BS)
    assert list(a.schedule(request, EndpointTable(eps)).ranked) == list(b.schedule(request, eps).ranked)
