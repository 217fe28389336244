"""The scheduler end to end: the default profile, the framework's rules, plugin-owned state."""

import math
import pathlib
import subprocess
import sys

import pytest

from llmd_ray.routing import (
    Affinity, ConfigError, Endpoint, RoutingRequest, Scheduler, Scorer, SchedulingResult, default_config,
)
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.registry import PLUGIN_TYPES
from llmd_ray.routing.testing import FakeClock

BS = 16


def req(prefix: int, suffix: int, n_blocks: int = 16, session=None, rid="r") -> RoutingRequest:
    """Blocks 0..n-2 from ``prefix``, the last from ``suffix``: requests with one prefix share n-1 blocks."""
    tokens = [prefix * 1000 + i for i in range((n_blocks - 1) * BS)] + [suffix] * BS
    return RoutingRequest(rid, tokens, BS, session)


def eps(n=3, **fields):
    return [Endpoint(f"e{i}", block_size=BS, num_blocks=10_000, **{k: v[i] for k, v in fields.items()})
            for i in range(n)]


@pytest.fixture
def sched():
    return Scheduler.from_config(default_config(), clock=FakeClock(), seed=1)


def route(sched, request, endpoints) -> SchedulingResult:
    result = sched.schedule(request, endpoints)
    sched.on_routed(request, result.target)
    return result


# -- the default profile ---------------------------------------------------------------------
def test_warm_endpoint_chosen_despite_a_longer_queue(sched):
    first = route(sched, req(1, 1), eps())
    warm = first.target
    loads = [2 if f"e{i}" == warm else 0 for i in range(3)]
    r = sched.schedule(req(1, 2), eps(num_waiting=loads))
    assert r.target == warm and r.ranked == [warm]
    f = r.filters[0]
    assert f.affinity is Affinity.WARM and f.reason.startswith("warm") and len(f.removed) == 2
    assert r.affinity is Affinity.WARM and r.affinity_off is None
    assert r.scores_of(warm)["prefix-cache"] == pytest.approx(15 / 16)


def test_cold_request_routed_by_load(sched):
    r = sched.schedule(req(7, 7), eps(num_waiting=[3, 0, 1], kv_cache_usage=[0.1, 0.3, 0.1]))
    assert r.affinity is Affinity.COLD and r.filters[0].reason.startswith("cold")
    assert r.ranked == ["e1", "e2", "e0"]  # queue x2 + kv x2: e1 2+1.4=3.4, e2 2*(2/3)+1.8=3.13, e0 0+1.8


def test_saturated_warm_endpoint_released(sched):
    warm = route(sched, req(1, 1), eps()).target
    loads = [10 if f"e{i}" == warm else 0 for i in range(3)]  # 10 x 512 tokens > 8000 x 0.5
    r = sched.schedule(req(1, 2), eps(num_waiting=loads))
    assert r.affinity is Affinity.RELEASED and r.filters[0].reason.startswith("released")
    assert r.affinity_off == "prefix-cache-affinity: released" and r.scores["prefix-cache"] == [0.0, 0.0, 0.0]
    assert r.target != warm and r.ranked[-1] == warm
    assert sched.stats()["prefix-cache-affinity"]["outcomes"]["released"] == 1


def test_router_backlog_saturates_a_hot_prefix(sched):
    """Without engine stats, the router's own backlog spills a hot prefix once it is worth 0.5 s of prefill."""
    targets = [route(sched, req(1, i, rid=f"r{i}"), eps()).target for i in range(20)]
    assert len(set(targets)) == 1  # 256 cold + 19 x 16 uncached tokens = 560 < 4000: always sticky

    def doc_request(i):  # a shared 8-block (128-token) head, then 120 blocks (1920 tokens) of its own
        tokens = [5_000_000 + t for t in range(8 * BS)] + [6_000_000 + i * 10_000 + t for t in range(120 * BS)]
        return RoutingRequest(f"d{i}", tokens, BS)

    first = route(sched, doc_request(0), eps())  # cold: 2048 tokens of backlog
    second = route(sched, doc_request(1), eps())  # warm: + 1920 = 3968 <= 4000
    assert second.target == first.target and second.affinity is Affinity.WARM
    sched.on_routed(doc_request(2), first.target)  # + 1920 = 5888 > 4000
    third = sched.schedule(doc_request(3), eps())
    assert third.affinity is Affinity.RELEASED


def test_imbalance_gate_skips_affinity(sched):
    warm = route(sched, req(1, 1), eps()).target
    others = [f"e{i}" for i in range(3) if f"e{i}" != warm]
    loads = {warm: 2, others[0]: 0, others[1]: 40}  # warm is not saturated (1024 tokens); the fleet is skewed
    r = sched.schedule(req(1, 2), eps(num_waiting=[loads[f"e{i}"] for i in range(3)]))
    assert r.affinity is Affinity.IMBALANCED and r.affinity_off == "prefix-cache-affinity: imbalanced"
    assert r.target == others[0]


def test_session_affinity(sched):
    short = [5] * 10  # shorter than a block: no prefix signal at all
    first = route(sched, RoutingRequest("a", short, BS, "s1"), eps()).target
    for i in range(5):
        r = route(sched, RoutingRequest(f"a{i}", short, BS, "s1"), eps())
        assert r.target == first
        assert r.scores_of(first)["session-affinity"] == 1.0
    spread = {route(sched, RoutingRequest(f"b{i}", short, BS, f"other{i}"), eps()).target for i in range(12)}
    assert len(spread) > 1  # other sessions are not glued to it


# -- framework rules --------------------------------------------------------------------------
def index_of(sched):
    return sched.plugin_of_type(PrefixCacheScorer).index


def test_schedule_changes_no_state(sched):
    r = req(1, 1)
    sched.schedule(r, eps())
    assert index_of(sched).match(r.block_hashes) == {}
    sched.on_routed(r, "e2")
    assert index_of(sched).match(r.block_hashes) == {"e2": 16}


def test_capacity_synced_from_endpoints(sched):
    sched.schedule(req(1, 1), [Endpoint("e0", num_blocks=5), Endpoint("e1")])
    index = index_of(sched)
    assert index.capacity("e0") == 5 and index.capacity("e1") == index.default_capacity


def test_remove_endpoint_forgets_everywhere(sched):
    r = req(1, 1, session="s")
    sched.on_routed(r, "e0")
    sched.remove_endpoint("e0")
    assert index_of(sched).match(r.block_hashes) == {}
    assert sched.plugins["session-affinity"].endpoint_of("s") is None


def test_empty_candidates_give_empty_ranking(sched):
    r = sched.schedule(req(1, 1), [])
    assert r.ranked == [] and r.target is None


def affinity_only(order):
    """prefix-cache-affinity with or without a prefix-cache plugin, declared in ``order``."""
    plugins = {"affinity": {"type": "prefix-cache-affinity"}, "prefix": {"type": "prefix-cache"}, "queue": {"type": "queue"}}
    return {"plugins": [plugins[k] for k in order],
            "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "prefix-cache-affinity"},
                                                                   {"pluginRef": "queue"}]}]}


def test_index_users_share_the_prefix_plugin_and_get_one_when_none_is_configured():
    sched = Scheduler.from_config(affinity_only(["affinity", "queue"]))
    prefix = sched.plugins["prefix-cache"]  # added: keeps the index, scores nothing
    assert isinstance(prefix, PrefixCacheScorer) and sched.plugins["prefix-cache-affinity"].prefix is prefix
    assert all(s is not prefix for s, _ in sched.profile.scorers)
    sched.on_routed(req(1, 1), "e1")
    assert sched.schedule(req(1, 2), eps()).ranked == ["e1"]  # warm: the added plugin recorded the routing


@pytest.mark.parametrize("order", [["affinity", "prefix", "queue"], ["prefix", "affinity", "queue"]])
def test_routed_hooks_see_the_matches_from_before_the_routing_whatever_their_order(order):
    sched = Scheduler.from_config(affinity_only(order), clock=FakeClock())
    r = req(1, 1)  # 16 blocks of 16 tokens
    sched.on_routed(r, "e0")  # cold: 256 uncached tokens
    sched.schedule(r, eps())
    sched.on_routed(r, "e0")  # fully cached now: no backlog added
    assert sched.plugins["prefix-cache-affinity"].backlog("e0", FakeClock()()) == 256


class Wild(Scorer):
    type = "wild"
    category = "balance"

    def score(self, cycle, endpoints):
        return [5.0, -1.0, math.nan][: len(endpoints)]


class Short(Scorer):
    type = "short"
    category = "balance"

    def score(self, cycle, endpoints):
        return [1.0]


def custom(*types, refs):
    return Scheduler.from_config(
        {"plugins": [{"type": t} for t in types],
         "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": r, "weight": 2} for r in refs]}]},
        plugin_types=PLUGIN_TYPES + (Wild, Short))


def test_scores_are_clamped_and_weighted():
    r = custom("wild", refs=["wild"]).schedule(req(1, 1), eps())
    assert r.scores["wild"] == [1.0, 0.0, 0.0] and r.totals == [2.0, 0.0, 0.0]
    assert r.target == "e0"


def test_scorer_must_score_every_endpoint():
    with pytest.raises(RuntimeError, match="'short' returned 1 scores for 3 endpoints"):
        custom("short", refs=["short"]).schedule(req(1, 1), eps())


def test_explain_mentions_filters_and_scores(sched):
    text = sched.schedule(req(1, 1), eps()).explain()
    assert "filter prefix-cache-affinity" in text and "cold" in text and "queue=" in text


def test_as_dict_is_json_ready(sched):
    import json

    sched.on_routed(req(1, 1), "e1")
    d = json.loads(json.dumps(sched.schedule(req(1, 2), eps()).as_dict()))
    assert d["ranked"] == ["e1"] and d["filters"][0]["removed"] == ["e0", "e2"]
    assert d["filters"][0]["affinity"] == "warm" and d["profile"] == "default"
    assert d["scores"]["e1"]["prefix-cache"] == pytest.approx(15 / 16) and d["totals"]["e1"] > 0


# -- one profile per scheduler; retired multi-profile types -----------------------------------
def test_one_profile_per_scheduler():
    two = {"plugins": [{"type": "queue"}], "schedulingProfiles": [
        {"name": "prefill", "plugins": [{"pluginRef": "queue"}]}, {"name": "decode", "plugins": [{"pluginRef": "queue"}]}]}
    with pytest.raises(ConfigError, match=r"a scheduler runs exactly one profile, got 2 \(prefill, decode\)"):
        Scheduler.from_config(two)


@pytest.mark.parametrize("retired", ["role", "single-profile"])
def test_a_retired_plugin_type_is_named_in_the_error(retired):
    config = {"plugins": [{"type": retired, "parameters": {"role": "decode"}}],
              "schedulingProfiles": [{"name": "decode", "plugins": [{"pluginRef": retired}]}]}
    with pytest.raises(ConfigError, match=f"plugins\\[0\\].type: plugin type '{retired}' was removed: "):
        Scheduler.from_config(config)


# -- purity --------------------------------------------------------------------------------------
def test_routing_package_imports_neither_ray_nor_vllm():
    """Everything but router.py (the thin Ray RequestRouter adapter) is pure."""
    root = pathlib.Path(__file__).resolve().parents[2] / "llmd_ray" / "routing"
    for path in root.rglob("*.py"):
        if path.name == "router.py":
            continue
        text = path.read_text()
        assert "import ray" not in text and "from ray" not in text, path
        assert "import vllm" not in text and "from vllm" not in text, path
    code = ("import sys, llmd_ray.routing, llmd_ray.routing.docgen, llmd_ray.routing.testing; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'vllm', 'torch')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_routers_of_several_ingress_replicas_break_ties_apart():
    """Each router (one per ingress replica) routes its own first cold prefixes over idle, tied endpoints. With
    one seed for all they all draw the same endpoints (the prefixes pile up on them); ``router_seed`` gives each
    its own draws."""
    from llmd_ray.routing.scheduler import router_seed

    def placements(seed):
        s = Scheduler.from_config(default_config(), clock=FakeClock(), seed=seed)
        return [route(s, req(p, p, rid=f"r{p}"), eps(2)).target for p in range(12)]

    shared = [placements(0) for _ in range(4)]
    assert all(p == shared[0] for p in shared)  # the failure mode: every router the same sequence
    own = [placements(router_seed()) for _ in range(4)]
    assert len({tuple(p) for p in own}) > 1  # identical by chance: p < 2**-30
    assert len({router_seed() for _ in range(100)}) == 100
