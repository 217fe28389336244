"""The simulator's FastRouter decides exactly as the Scheduler's per-endpoint path (same targets, same RNG draws)."""

import random

import numpy as np
import pytest

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.perf import load_profile
from llmd_ray.routing import Endpoint, RoutingRequest, Scheduler, default_config
from llmd_ray.routing.framework import CycleState
from llmd_ray.routing.plugins.max_score import MaxScorePicker
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.plugins.prefix_cache_affinity import PrefixCacheAffinityFilter
from llmd_ray.routing.table import EndpointTable
from llmd_ray.routing.testing import FakeClock, make_handle
from llmd_ray.sim.fastroute import FastRouter
from llmd_ray.sim.fleet import Simulator
from llmd_ray.sim.loadbounds import LoadBounds
from llmd_ray.sim.ranking import BaseRanking
from llmd_ray.sim.runindex import RunPrefixIndex
from llmd_ray.sim.workload import sim_jobs

BS = 4
# the default profile, its affinity filter scaled to these tiny requests (all four verdicts occur)
DEFAULT = default_config()
DEFAULT["plugins"][0]["parameters"] = {"prefillTokensPerSecond": 2, "maxTtftPenaltySeconds": 20,
                                       "averageUncachedTokens": 5, "imbalanceAbsTokens": 60}
LOAD_ONLY = {"plugins": [{"type": "prefix-cache-affinity", "parameters": DEFAULT["plugins"][0]["parameters"]},
                         {"type": "prefix-cache"}, {"type": "load-aware", "parameters": {"threshold": 4}},
                         {"type": "queue"}, {"type": "max-score", "parameters": {"tieBreak": "random"}}],
             "schedulingProfiles": [{"name": "default", "plugins": [
                 {"pluginRef": "prefix-cache-affinity"}, {"pluginRef": "prefix-cache", "weight": 2},
                 {"pluginRef": "load-aware"}, {"pluginRef": "queue", "weight": 0.7}, {"pluginRef": "max-score"}]}]}


def stats(rng: random.Random) -> tuple[int, float]:
    # few distinct values: exact ties; sums like 0.1 + 0.2 against 0.3: ties within an ulp
    return rng.choice([0, 0, 1, 3, 6]), rng.choice([0.0, 0.1, 0.2, 0.3, 0.7, 0.9])


def run(config, fast: bool, n: int = 120, count: int = 1500, run_index: bool = False):
    rng = random.Random(5)
    clock = FakeClock()
    sched = Scheduler.from_config(config, clock=clock, seed=3)
    if run_index:  # the simulator's index (and FastRouter's TargetMatch hand-over with it)
        sched.plugin_of_type(PrefixCacheScorer).index = RunPrefixIndex()
    router = FastRouter(sched)
    assert router.supported, router.unsupported
    eps = []
    for i in range(n):
        w, kv = stats(rng)
        eps.append(Endpoint(f"e{i}", num_waiting=w, kv_cache_usage=kv, block_size=BS,
                            num_blocks=rng.choice([40, 400]), max_ongoing=rng.choice([None, None, None, 6])))
    table = EndpointTable(eps, track_in_flight=True)
    targets = []
    for i in range(count):
        group, blocks = rng.randrange(8), rng.randrange(0, 12)
        tokens = [group * 10_000 + j for j in range(blocks * BS)] + [i * 7 + 1] * rng.randrange(BS)
        sid = f"s{rng.randrange(30)}" if rng.random() < 0.3 else None
        request = RoutingRequest(f"r{i}", tokens, BS, session_id=sid)
        if fast:
            target = router.schedule(request, table)
            router.on_routed(request, target)
        else:
            target = sched.schedule(request, list(table)).target
            sched.on_routed(request, target)
        table.add_in_flight(target, 1)
        targets.append(target)
        for _ in range(2):
            done = table[rng.randrange(len(table))]
            if done.in_flight:
                table.add_in_flight(done.id, -1)
                sched.on_completed(f"x{i}", done.id)
        if i % 40 == 0:  # a stats refresh
            for e in eps:
                e.num_waiting, e.kv_cache_usage = stats(rng)
            table.sync()
        if i in (300, 900):  # an endpoint goes away
            gone = table[7]
            table.remove(gone.id)
            sched.remove_endpoint(gone.id)
        clock.advance(rng.choice([0.0, 0.001, 0.01, 0.05]))
    return targets, sched.stats(), router.fallbacks


@pytest.mark.parametrize("name", ["default", "load-only"])
@pytest.mark.parametrize("run_index", [False, True])
def test_fast_router_decides_exactly_like_the_per_endpoint_path(name, run_index):
    config = DEFAULT if name == "default" else LOAD_ONLY
    by_list, stats_list, _ = run(config, fast=False)
    by_fast, stats_fast, fallbacks = run(config, fast=True, run_index=run_index)
    first = next((i for i, (a, b) in enumerate(zip(by_list, by_fast)) if a != b), None)
    assert first is None, f"decision {first} differs"
    assert stats_fast == stats_list
    outcomes = stats_list["prefix-cache-affinity"]["outcomes"]
    assert all(outcomes.values()), outcomes  # warm, cold, released and imbalanced all exercised
    assert fallbacks < len(by_list) / 20  # the fast structures decided almost everything


def test_the_simulator_routes_the_same_with_the_fast_router():
    prof = load_profile("h100-llama-3.1-8b")
    cfg = AutoscalerConfig.model_validate({"variants": [
        {"name": "h100", "accelerator": "H100", "profile": prof.name, "cost_per_hour": 3.0,
         "min_replicas": 64, "max_replicas": 64}],
        "qos": {"classes": {"default": {"priority": 1, "ttft_objective_s": 2.0, "itl_objective_s": 0.1}},
                "default_class": "default"}})
    bench = {"seed": 0, "workload": {"type": "shared_prefix", "num_groups": 60, "prompts_per_group": 40,
                                     "system_prompt_len": 800, "question_len": 200, "output_len": 200,
                                     "group_popularity": "zipf", "zipf_exponent": 0.8},
             "load": {"process": "poisson", "rate": 1000, "duration_s": 2}}
    runs = []
    # the simulator's defaults (fast router, prefix index per run, replica caches mirrored by it) against the
    # per-endpoint path with the per-block index and each replica's own LRU
    for fast in (True, False):
        sim = Simulator(cfg, {prof.name: prof}, initial={"h100": 64}, block_size=16, fast_routing=fast,
                        table_routing=fast, run_index=fast, mirror_cache=fast)
        res = sim.run(sim_jobs(bench), until=8)
        runs.append(([(r.id, r.replica, r.cached, r.finished) for r in res.requests],
                     sim.schedulers["h100"].stats()))
        index = sim.prefix["h100"].index
        assert isinstance(index, RunPrefixIndex) == fast and getattr(index, "per_block", None) is None
        if fast:
            assert sim.fast["h100"].supported and sim.fast["h100"].fallbacks < 100
            assert not any(r.cache for r in sim.all_replicas)  # the index stood for the replicas' caches
    (fast_run, fast_stats), (ref_run, ref_stats) = runs
    assert len(fast_run) >= 1800 and len({r[1] for r in fast_run}) >= 60  # spread over the fleet
    assert sum(r[2] > 0 for r in ref_run) > len(ref_run) / 3  # prefix hits: the caches are exercised
    assert fast_run == ref_run and fast_stats == ref_stats


@pytest.mark.parametrize("seed", range(6))
def test_base_ranking_picks_as_max_score_with_the_same_draws(seed):
    rng = random.Random(seed)
    n = 60
    values = [1.0, 1.0 + 4e-10, 1.0 - 7e-10, 1.0 - 1.5e-9, 0.5, 0.5, 0.2, 0.1 + 0.2, 0.3]
    totals = np.array([rng.choice(values) for _ in range(n)])
    eps = [Endpoint(f"e{i}", in_flight=rng.choice([0, 1, 1, 2])) for i in range(n)]
    in_flight = np.array([e.in_flight for e in eps], float)
    for tie_break in ("least-in-flight", "random"):
        a, b = make_handle(seed=seed), make_handle(seed=seed)
        picker = MaxScorePicker("p", MaxScorePicker.Parameters(tie_break=tie_break), a)
        ref = picker.pick(CycleState(None, 0.0, a), eps, totals.tolist())[0]
        assert BaseRanking(totals).pick(b.rng, in_flight, tie_break == "random") == ref
        assert a.rng.random() == b.rng.random()  # the same draws were taken


def test_load_bounds_are_the_filters_min_and_max_load():
    rng = random.Random(1)
    f = PrefixCacheAffinityFilter("f", PrefixCacheAffinityFilter.Parameters(prefillTokensPerSecond=800),
                                  make_handle())
    eps = [Endpoint(f"e{i}", num_waiting=rng.choice([0, 1, 2])) for i in range(50)]
    bounds = LoadBounds(800.0, f.params.average_uncached_tokens)
    now = 100.0
    bounds.rebuild([e.id for e in eps], [float(e.num_waiting) for e in eps], f._backlog)
    for step in range(3000):
        if step % 500 == 0:  # a stats sync
            for e in eps:
                e.num_waiting = rng.choice([0, 1, 2, 5])
            bounds.rebuild([e.id for e in eps], [float(e.num_waiting) for e in eps], f._backlog)
        pos = rng.randrange(len(eps))
        f._backlog[eps[pos].id] = entry = (f.backlog(eps[pos].id, now) + rng.choice([0, 300, 2000]), now)
        bounds.update(pos, *entry)
        now += rng.choice([0.0, 0.01, 0.3])
        loads = f._loads(eps, now)
        assert bounds.bounds(now) == (min(loads), max(loads)), step
    assert bounds.bounds(now - 1.0) is None  # backlog stamped after "now": not answerable exactly
