"""The ``predicted-latency`` picker on fake endpoints, and its online model."""

import random
from pathlib import Path

import pytest
import yaml

from llmd_ray.routing import Scheduler
from llmd_ray.routing.framework import RoutedEvent
from llmd_ray.routing.latency_model import LatencyPrior, RLSModel, ReplicaLatencyModel, features
from llmd_ray.routing.plugins.predicted_latency import PredictedLatencyPicker
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer
from llmd_ray.routing.table import EndpointTable
from llmd_ray.routing.testing import make_cycle, make_endpoints, make_handle, make_plugin, make_request
from llmd_ray.routing.types import Endpoint, RoutingRequest

REPO = Path(__file__).resolve().parents[2]
PRIOR = dict(prefillTokensPerSecond=1000, decodeStepSeconds=0.02, waitingRequestSeconds=0.5,
             decodeStepPerRunningSeconds=0.002)


def picker(**params):
    handle = make_handle()
    prefix = make_plugin(PrefixCacheScorer, handle)
    return make_plugin(PredictedLatencyPicker, handle, prefix=prefix, **{**PRIOR, **params}), prefix, handle


def rank(p, handle, req, eps):
    cycle = make_cycle(req, handle)
    p.prepare(cycle, eps)
    order = p.pick(cycle, eps, [0.0] * len(eps))
    return [eps[i].id for i in order]


def long_request(rid="r", qos=None, blocks=range(1, 17)):
    req = make_request(list(blocks), block_size=64, request_id=rid)  # 1,024 tokens
    req.qos_class = qos
    return req


@pytest.mark.parametrize("fields, expected", [
    ({"num_waiting": [4, 0]}, "e1"),                          # fewer waiting ahead
    ({"num_waiting": [0, 0], "in_flight": [3, 0]}, "e1"),     # routed since the stats: counts as waiting
    ({"num_running": [30, 0]}, "e1"),                         # smaller batch
    ({"num_waiting": [1, 2]}, "e0"),
])
def test_prefers_the_lower_predicted_ttft(fields, expected):
    p, _, handle = picker()
    assert rank(p, handle, long_request(), make_endpoints(2, **fields))[0] == expected


def test_a_predicted_prefix_hit_lowers_the_ttft():
    p, prefix, handle = picker()
    req = long_request()
    prefix.index.record("e1", req.block_hashes)  # e1 holds the whole prompt
    eps = make_endpoints(2, num_waiting=[0, 1])  # ...but has one request waiting
    assert rank(p, handle, req, eps)[0] == "e1"  # 1 s of prefill saved > 0.5 s of queue
    preds = p.predict(make_cycle(req, handle), eps)
    assert preds["e1"].x == features(0, 1, 0, 0.0) and preds["e0"].x == features(1024, 0, 0, 0.0)


def test_avoids_a_replica_whose_running_requests_would_miss_their_tpot():
    p, prefix, handle = picker()
    eps = make_endpoints(2, num_running=[19, 5])
    hot = long_request("hot")
    prefix.index.record("e0", hot.block_hashes)
    assert rank(p, handle, hot, eps)[0] == "e0"  # warm, and no objective at risk yet
    # an interactive request (TPOT 0.05 s) is running on e0: one more would make it 0.02 + 20 x 0.002 = 0.06 s
    running = long_request("interactive-1", qos="interactive", blocks=range(100, 104))
    p.on_routed(RoutedEvent(running, "e0", 0.0))
    assert rank(p, handle, long_request("hot2"), eps)[0] == "e1"
    p.on_completed("interactive-1", "e0")  # it finished: e0 is fine again
    assert rank(p, handle, long_request("hot3"), eps)[0] == "e0"


@pytest.mark.parametrize("when, busy, expected", [
    ("least-bad", True, ["e1", "e0"]),
    ("hold", True, []),            # nothing fits and load may drain: held at the router
    ("hold", False, ["e1", "e0"]),  # all idle: holding would not help
])
def test_when_no_replica_fits(when, busy, expected):
    p, _, handle = picker(classes={"tight": {"ttftS": 0.01, "tpotS": 0.01, "whenUnmet": when}}, defaultClass="tight")
    eps = make_endpoints(2, num_waiting=[2, 1] if busy else [0, 0])
    if not busy:  # e0's model has learnt that its KV usage slows it down
        eps[0].kv_cache_usage = 0.5
        p.model("e0").ttft.w[4] = 0.1
    assert rank(p, handle, long_request(), eps) == expected
    key = "unmet_held" if expected == [] else "unmet_least_bad"
    assert p.stats()[key] == 1 and p.stats()["fit"] == 0


def test_a_class_without_objectives_always_fits():
    p, _, handle = picker()
    assert rank(p, handle, long_request(qos="batch"), make_endpoints(2, num_waiting=[50, 60]))[0] == "e0"
    assert p.stats()["fit"] == 1


def test_rls_converges_to_a_known_linear_law():
    true = [0.05, 0.4, 0.3, 0.01, 0.2]
    m = RLSModel([0.0] * 5, forgetting=1.0, prior_variance=10.0)
    rng = random.Random(1)
    for _ in range(400):
        x = features(rng.uniform(0, 3000), rng.randrange(0, 10), rng.randrange(0, 40), rng.random())
        m.update(x, sum(a * b for a, b in zip(true, x)) * (1 + rng.gauss(0, 0.001)))
    assert m.w == pytest.approx(true, rel=0.05, abs=0.005)


def test_the_plugin_learns_from_reported_samples():
    """Routed requests' features, joined with the latencies the replica reports, move the prior to the truth."""
    p, _, handle = picker(forgetting=1.0, priorVariance=10.0)
    true_ttft = [0.1, 2.0, 0.8, 0.0, 0.0]  # a replica twice as slow at prefill as the profile says
    rng = random.Random(2)
    seq, samples = 0, []
    for i in range(300):
        eps = [Endpoint("e0", num_waiting=rng.randrange(0, 6), num_running=rng.randrange(0, 20),
                        kv_cache_usage=rng.random())]
        req = long_request(f"r{i}", blocks=[rng.randrange(10_000) for _ in range(rng.randrange(1, 30))])
        rank(p, handle, req, eps)
        p.on_routed(RoutedEvent(req, "e0", 0.0))
        x = p._pending[req.request_id].pred.x
        seq += 1
        samples = (samples + [[seq, req.request_id, sum(a * b for a, b in zip(true_ttft, x)), 0.03]])[-64:]
        eps[0].latency_samples = samples
        p.prepare(make_cycle(req, handle), eps)  # what the next decision would do
    assert p.stats()["samples"] == 300 and p.stats()["samples_unmatched"] == 0
    assert p.model("e0").ttft.w[:3] == pytest.approx(true_ttft[:3], rel=0.05, abs=0.01)
    errs = p.stats()["relative_error"]["ttft"]
    assert sum(errs["buckets"]) == 300
    # samples seen again (the next stats refresh) are not learned twice; a restarted replica's are
    assert p.ingest("e0", samples) == 0
    assert p.ingest("e0", [[1, "unknown", 0.5, 0.02]]) == 0 and p.stats()["samples_unmatched"] == 1


def test_prior_from_profile():
    m = ReplicaLatencyModel.from_prior(LatencyPrior(2000.0, 0.02, 0.5, 0.002), 0.995, 1.0)
    x = features(2000, 1, 4, 0.3)
    assert m.predict_ttft(x) == pytest.approx(0.02 + 1.0 + 0.5 + 4 * 0.002)
    assert m.predict_tpot(x) == pytest.approx(0.02 + 4 * 0.002)


def test_table_path_ranks_as_the_list_path():
    rng = random.Random(3)
    eps = [Endpoint(f"e{i}", num_waiting=rng.randrange(0, 5), num_running=rng.randrange(0, 30),
                    kv_cache_usage=rng.random(), in_flight=rng.randrange(0, 4)) for i in range(64)]
    req = long_request()
    sched = Scheduler.from_config({"plugins": [{"type": "prefix-cache"}, {"type": "predicted-latency"}],
                                   "schedulingProfiles": [{"name": "d", "plugins": [
                                       {"pluginRef": "prefix-cache"}, {"pluginRef": "predicted-latency"}]}]})
    sched.plugin_of_type(PrefixCacheScorer).index.record("e7", req.block_hashes)
    a = sched.schedule(req, eps).ranked
    b = sched.schedule(RoutingRequest("r2", req.token_ids, 64), EndpointTable(eps)).ranked
    assert list(a) == list(b)


def test_serve_config_builds():
    app = yaml.safe_load((REPO / "serve_configs" / "predicted_latency.yaml").read_text())["applications"][0]
    sched = Scheduler.from_config(app["args"]["router"]["config"])
    assert isinstance(sched.profile.picker, PredictedLatencyPicker)
    assert sched.profile.picker.prefix is sched.plugin_of_type(PrefixCacheScorer)
