"""The scheduler end to end: the default profile, the framework's rules, the P/D interface."""

import math
import pathlib
import subprocess
import sys

import pytest

from llmd_ray.routing import (
    Endpoint, ProfileHandler, RoutingRequest, Scheduler, Scorer, SchedulingResult, default_config,
)
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
    f = r.profiles["default"].filters[0]
    assert f.reason.startswith("warm") and len(f.removed) == 2
    assert r.profiles["default"].scores_of(warm)["prefix-cache"] == pytest.approx(15 / 16)


def test_cold_request_routed_by_load(sched):
    r = sched.schedule(req(7, 7), eps(num_waiting=[3, 0, 1], kv_cache_usage=[0.1, 0.3, 0.1]))
    assert r.profiles["default"].filters[0].reason.startswith("cold")
    assert r.ranked == ["e1", "e2", "e0"]  # queue x2 + kv x2: e1 2+1.4=3.4, e2 2*(2/3)+1.8=3.13, e0 0+1.8


def test_saturated_warm_endpoint_released(sched):
    warm = route(sched, req(1, 1), eps()).target
    loads = [10 if f"e{i}" == warm else 0 for i in range(3)]  # 10 x 512 tokens > 8000 x 0.5
    r = sched.schedule(req(1, 2), eps(num_waiting=loads))
    prof = r.profiles["default"]
    assert prof.filters[0].reason.startswith("released")
    assert prof.affinity_off and prof.scores["prefix-cache"] == [0.0, 0.0, 0.0]
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
    assert second.target == first.target and second.profiles["default"].filters[0].reason.startswith("warm")
    sched.on_routed(doc_request(2), first.target)  # + 1920 = 5888 > 4000
    third = sched.schedule(doc_request(3), eps())
    assert third.profiles["default"].filters[0].reason.startswith("released")


def test_imbalance_gate_skips_affinity(sched):
    warm = route(sched, req(1, 1), eps()).target
    others = [f"e{i}" for i in range(3) if f"e{i}" != warm]
    loads = {warm: 2, others[0]: 0, others[1]: 40}  # warm is not saturated (1024 tokens); the fleet is skewed
    r = sched.schedule(req(1, 2), eps(num_waiting=[loads[f"e{i}"] for i in range(3)]))
    prof = r.profiles["default"]
    assert prof.filters[0].reason.startswith("imbalanced") and prof.affinity_off
    assert r.target == others[0]


def test_session_affinity(sched):
    short = [5] * 10  # shorter than a block: no prefix signal at all
    first = route(sched, RoutingRequest("a", short, BS, "s1"), eps()).target
    for i in range(5):
        r = route(sched, RoutingRequest(f"a{i}", short, BS, "s1"), eps())
        assert r.target == first
        assert r.profiles["default"].scores_of(first)["session-affinity"] == 1.0
    spread = {route(sched, RoutingRequest(f"b{i}", short, BS, f"other{i}"), eps()).target for i in range(12)}
    assert len(spread) > 1  # other sessions are not glued to it


# -- framework rules --------------------------------------------------------------------------
def test_schedule_changes_no_state(sched):
    r = req(1, 1)
    sched.schedule(r, eps())
    assert sched.index.match(r.block_hashes) == {}
    sched.on_routed(r, "e2")
    assert sched.index.match(r.block_hashes) == {"e2": 16}


def test_capacity_synced_from_endpoints(sched):
    sched.schedule(req(1, 1), [Endpoint("e0", num_blocks=5), Endpoint("e1")])
    assert sched.index.capacity("e0") == 5 and sched.index.capacity("e1") == sched.index.default_capacity


def test_remove_endpoint_forgets_everywhere(sched):
    r = req(1, 1, session="s")
    sched.on_routed(r, "e0")
    sched.remove_endpoint("e0")
    assert sched.index.match(r.block_hashes) == {}
    assert sched.plugins["session-affinity"].endpoint_of("s") is None


def test_empty_candidates_give_empty_ranking(sched):
    r = sched.schedule(req(1, 1), [])
    assert r.ranked == [] and r.target is None
    roles = Scheduler.from_config({
        "plugins": [{"type": "role", "parameters": {"role": "prefill", "acceptBoth": False}}],
        "schedulingProfiles": [{"name": "p", "plugins": [{"pluginRef": "role"}]}]})
    assert roles.schedule(req(1, 1), eps()).ranked == []


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
    prof = r.profiles["default"]
    assert prof.scores["wild"] == [1.0, 0.0, 0.0] and prof.totals == [2.0, 0.0, 0.0]
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
    prof = d["profiles"]["default"]
    assert d["ranked"] == ["e1"] and prof["filters"][0]["removed"] == ["e0", "e2"]
    assert prof["scores"]["e1"]["prefix-cache"] == pytest.approx(15 / 16) and prof["totals"]["e1"] > 0


# -- the P/D interface: a handler may run several profiles, in rounds --------------------------
class TwoStage(ProfileHandler):
    type = "test-pd"

    def pick_profiles(self, cycle, profiles, results):
        if not results:
            return ["decode"]
        if "prefill" not in results and cycle.request.num_blocks >= 4:  # long prompts: disaggregate
            return ["prefill"]
        return []

    def primary(self, cycle, results):
        return "decode"

    def validate_profiles(self, names):
        return None if set(names) == {"prefill", "decode"} else "needs prefill and decode"


PD = {
    "plugins": [
        {"type": "test-pd"},
        {"type": "role", "name": "prefill-role", "parameters": {"role": "prefill", "acceptBoth": False}},
        {"type": "role", "name": "decode-role", "parameters": {"role": "decode", "acceptBoth": False}},
        {"type": "prefix-cache"}, {"type": "queue"},
        {"type": "no-hit-lru", "parameters": {"profile": "prefill"}},
    ],
    "schedulingProfiles": [
        {"name": "prefill", "plugins": [{"pluginRef": "prefill-role"}, {"pluginRef": "prefix-cache", "weight": 3},
                                        {"pluginRef": "no-hit-lru"}, {"pluginRef": "queue"}]},
        {"name": "decode", "plugins": [{"pluginRef": "decode-role"}, {"pluginRef": "queue"}]},
    ],
}


def test_pd_handler_runs_both_profiles():
    sched = Scheduler.from_config(PD, plugin_types=PLUGIN_TYPES + (TwoStage,))
    fleet = eps(4, role=["prefill", "prefill", "decode", "decode"], num_waiting=[0, 0, 3, 0])
    r = sched.schedule(req(1, 1), fleet)
    assert list(r.profiles) == ["decode", "prefill"] and r.primary_profile == "decode"
    assert r.target == "e3" and set(r.profiles["prefill"].ranked) == {"e0", "e1"}
    sched.on_routed(req(1, 1), r.profiles["prefill"].target, profile="prefill")
    sched.on_routed(req(1, 1), r.target, profile="decode")
    assert sched.plugins["no-hit-lru"].lru_order() == [r.profiles["prefill"].target]
    short = sched.schedule(RoutingRequest("s", [1] * 20, BS), fleet)
    assert list(short.profiles) == ["decode"]  # short prompt: no prefill stage


def test_pd_handler_validates_its_profiles():
    bad = {**PD, "schedulingProfiles": PD["schedulingProfiles"][:1]}
    with pytest.raises(ValueError, match="profile handler 'test-pd' \\(test-pd\\): needs prefill and decode"):
        Scheduler.from_config(bad, plugin_types=PLUGIN_TYPES + (TwoStage,))


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
