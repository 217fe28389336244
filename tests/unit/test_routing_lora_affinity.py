"""The ``lora-affinity`` scorer, table-driven on fake endpoints; adapter-keyed prefix hashes; neutrality."""

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from llmd_ray.routing.config import default_config
from llmd_ray.routing.framework import RoutedEvent
from llmd_ray.routing.hashing import block_hashes
from llmd_ray.routing.plugins.lora_affinity import FREE_SLOT, FULL, LOADED, RUNNING, LoraAffinityScorer
from llmd_ray.routing.scheduler import Scheduler
from llmd_ray.routing.testing import make_cycle, make_endpoints, make_handle, make_plugin, make_request
from llmd_ray.routing.types import Endpoint, RoutingRequest, lora_of


def lora_request(adapter, request_id="r", blocks=(1, 2)):
    r = make_request(list(blocks), request_id=request_id)
    r.lora = (adapter, f"/adapters/{adapter}") if adapter else None
    return r


def route(plugin, handle, adapter, endpoint_id, request_id):
    plugin.on_routed(RoutedEvent(lora_request(adapter, request_id), endpoint_id, handle.clock()))


@pytest.mark.parametrize(
    "history, max_loras, adapter, expected",
    [
        # (adapter, endpoint, still running?) routed before; the request's adapter; scores of e0, e1, e2
        ([], 2, "a", [FREE_SLOT] * 3),  # nobody has it: a tie, the load scorers decide
        ([("a", "e1", True)], 2, "a", [FREE_SLOT, RUNNING, FREE_SLOT]),
        ([("a", "e1", False)], 2, "a", [FREE_SLOT, LOADED, FREE_SLOT]),
        ([("b", "e0", True), ("c", "e0", True)], 2, "a", [FULL, FREE_SLOT, FREE_SLOT]),  # e0's slots busy
        ([("b", "e0", False), ("c", "e0", False)], 2, "a", [FREE_SLOT] * 3),  # loaded, idle: evictable
        ([("a", "e0", False), ("b", "e0", False), ("c", "e0", False)], 2, "a", [FREE_SLOT] * 3),  # LRU evicted a
        ([("a", "e0", False), ("b", "e0", False)], 2, "a", [LOADED, FREE_SLOT, FREE_SLOT]),
        ([("a", "e2", True), ("b", "e2", True)], 1, "b", [FREE_SLOT, FREE_SLOT, RUNNING]),
        ([("a", "e2", True)], 1, "b", [FREE_SLOT, FREE_SLOT, FULL]),
        ([("a", "e0", True), ("a", "e1", False)], 2, None, [0.0, 0.0, 0.0]),  # no adapter: neutral
    ],
)
def test_scores(history, max_loras, adapter, expected):
    handle = make_handle()
    plugin = make_plugin(LoraAffinityScorer, handle, max_loras=max_loras)
    for i, (a, ep, running) in enumerate(history):
        route(plugin, handle, a, ep, f"h{i}")
        if not running:
            plugin.on_completed(f"h{i}", ep)
    scores = plugin.score(make_cycle(lora_request(adapter), handle), make_endpoints(3))
    assert scores == pytest.approx(expected)


def test_replica_report_rebases_slots_and_replays_later_decisions():
    handle = make_handle()
    plugin = make_plugin(LoraAffinityScorer, handle, max_loras=1)
    route(plugin, handle, "x", "e0", "r0")  # before the report: superseded by it
    plugin.on_completed("r0", "e0")
    report_at = handle.clock()
    handle.clock.advance(1.0)
    route(plugin, handle, "y", "e0", "r1")  # after the report: replayed over it
    plugin.on_completed("r1", "e0")
    e0 = Endpoint("e0", updated_at=report_at, lora_adapters=("b", "a"), max_loras=3)
    assert plugin.loaded(e0) == ["b", "a", "y"]
    assert plugin.score(make_cycle(lora_request("a"), handle), [e0]) == [LOADED]
    assert plugin.score(make_cycle(lora_request("x"), handle), [e0]) == [FREE_SLOT]


def test_remove_endpoint_forgets_it():
    handle = make_handle()
    plugin = make_plugin(LoraAffinityScorer, handle, max_loras=1)
    route(plugin, handle, "a", "e0", "r0")
    plugin.remove_endpoint("e0")
    plugin.on_completed("r0", "e0")  # late completion: ignored
    assert plugin.score(make_cycle(lora_request("a"), handle), make_endpoints(1)) == [FREE_SLOT]


def _without_lora(config):
    config = {**config, "plugins": [p for p in config["plugins"] if p["type"] != "lora-affinity"]}
    (profile,) = config["schedulingProfiles"]
    config["schedulingProfiles"] = [{**profile, "plugins": [r for r in profile["plugins"]
                                                            if r["pluginRef"] != "lora-affinity"]}]
    return config


def test_default_profile_has_it_and_it_is_neutral_without_adapters():
    """Requests without an adapter route exactly as the default profile without the scorer does."""
    assert any(p["type"] == "lora-affinity" for p in default_config()["plugins"])
    rng = random.Random(5)
    with_it, without = Scheduler.from_config(None, seed=3), Scheduler.from_config(_without_lora(default_config()), seed=3)
    for i in range(300):
        eps = make_endpoints(4, num_waiting=[rng.randrange(4) for _ in range(4)],
                             kv_cache_usage=[rng.choice([0.0, 0.5]) for _ in range(4)])
        req = make_request([rng.randrange(6) for _ in range(rng.randrange(1, 5))], request_id=f"r{i}",
                           session_id=rng.choice([None, "s1", "s2"]))
        a, b = with_it.schedule(req, eps), without.schedule(req, eps)
        assert a.ranked == b.ranked and a.totals == b.totals
        with_it.on_routed(req, a.ranked[0])
        without.on_routed(req, b.ranked[0])


def test_an_adapter_nobody_has_goes_to_the_least_loaded_then_sticks():
    sched = Scheduler.from_config(None)
    eps = make_endpoints(3, num_waiting=[3, 0, 5])
    first = lora_request("new", "r0", blocks=(7,))
    assert sched.schedule(first, eps).ranked[0] == "e1"
    sched.on_routed(first, "e1")
    eps = make_endpoints(3, num_waiting=[0, 0, 0])  # loads even: the replica running the adapter wins
    assert sched.schedule(lora_request("new", "r1", blocks=(8,)), eps).ranked[0] == "e1"


def test_prefix_hashes_are_keyed_by_adapter():
    tokens = list(range(64))
    plain = RoutingRequest("r", tokens, 16)
    a = RoutingRequest("r", tokens, 16, lora=("a", "/p/a"))
    b = RoutingRequest("r", tokens, 16, lora=("b", "/p/b"))
    assert a.block_hashes == block_hashes(tokens, 16, lora=("a", "/p/a"))
    assert len({tuple(plain.block_hashes), tuple(a.block_hashes), tuple(b.block_hashes)}) == 3
    assert (plain.adapter, a.adapter) == (None, "a")


@dataclass
class _Lora:
    lora_name: str
    lora_path: str


@dataclass
class _Call:
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Sampling:
    vllm: Any = None


@dataclass
class _Gen:
    request_id: str = "g"
    prompt_token_ids: list = field(default_factory=lambda: list(range(40)))
    session_id: str | None = None
    sampling: Any = None


@pytest.mark.parametrize("sampling, expected", [
    (None, None), (_Sampling(), None), (_Sampling(_Call()), None),
    (_Sampling(_Call({"lora_request": _Lora("a", "/p/a")})), ("a", "/p/a")),
])
def test_lora_of_a_generate_request(sampling, expected):
    gen = _Gen(sampling=sampling)
    assert lora_of(gen) == expected
    assert RoutingRequest.from_generate_request(gen, 16).lora == expected
