"""Decision traces (llmd_ray/routing/trace.py): sampling, the records, the ring and its writer."""

import json

import pytest
from pydantic import ValidationError

from llmd_ray.routing import Endpoint, RoutingRequest, Scheduler, default_config
from llmd_ray.routing.testing import predictor_config
from llmd_ray.routing.testing import FakeClock
from llmd_ray.routing.trace import DecisionTraceArgs, DecisionTracer, decision_record, load_record, sampled
from llmd_ray.serving.router_args import RouterArgs, request_router_config

BS = 16


def req(prefix: int, suffix: int, n_blocks: int = 8, session=None, rid="r") -> RoutingRequest:
    tokens = [prefix * 1000 + i for i in range((n_blocks - 1) * BS)] + [suffix] * BS
    return RoutingRequest(rid, tokens, BS, session)


def eps(n=3, **fields):
    return [Endpoint(f"e{i}", block_size=BS, num_blocks=10_000, **{k: v[i] for k, v in fields.items()})
            for i in range(n)]


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("rate, lo, hi", [(1.0, 2000, 2000), (0.5, 900, 1100), (0.1, 150, 250), (0.01, 5, 40)])
def test_sampling_rate_and_determinism(rate, lo, hi):
    ids = [f"cmpl-{i}" for i in range(2000)]
    picked = [i for i in ids if sampled(i, rate)]
    assert lo <= len(picked) <= hi
    assert picked == [i for i in ids if sampled(i, rate)]  # the same ids every time (and in every router)


@pytest.mark.parametrize("kwargs", [{"sample_rate": 0}, {"sample_rate": 1.5}, {"capacity": 1}, {"flush_s": 0},
                                    {"bogus": 1}])
def test_args_rejected(kwargs):
    with pytest.raises(ValidationError):
        DecisionTraceArgs(dir="/tmp/t", **kwargs)


# scenario -> (loads of e0..e2, expected verdict, expected chosen, e0's predicted hit tokens)
SCENARIOS = {
    "warm": ([0, 0, 0], "warm", "e0", 7 * BS),
    "imbalanced": ([500, 0, 0], "imbalanced", None, 7 * BS),  # e0's queue is far past the others'
    "cold": (None, "cold", None, 0),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_decision_record(scenario):
    loads, verdict, chosen, hit0 = SCENARIOS[scenario]
    sched = Scheduler.from_config(default_config(), clock=FakeClock(), seed=1)
    sched.on_routed(req(1, 1), "e0")  # e0 holds prefix 1's 7 shared blocks
    tracer = DecisionTracer(DecisionTraceArgs(dir="/unused"), sched)
    r = req(1, 2, session="s1") if loads is not None else req(9, 9)
    endpoints = eps(num_waiting=loads or [0, 0, 0], kv_cache_usage=[0.5, 0.25, 0.0], in_flight=[2, 0, 0])
    result = sched.schedule(r, endpoints)
    tracer.decision("k", r, result, endpoints)
    rec = tracer._serialize(tracer._ring[0])
    assert rec["kind"] == "decision" and rec["verdict"] == verdict and rec["request_id"] == r.request_id
    assert rec["chosen"] == result.target and (chosen is None or rec["chosen"] == chosen)
    assert rec["group"] == r.block_hashes[0][:8].hex() and rec["tokens"] == 8 * BS and rec["block_size"] == BS
    c0 = rec["candidates"][0]
    assert (c0["id"], c0["kv"], c0["in_flight"], c0["hit_tokens"]) == ("e0", 0.5, 2, hit0)
    assert [c["eligible"] for c in rec["candidates"]] == [c["id"] in result.endpoint_ids for c in rec["candidates"]]
    for c in rec["candidates"]:
        if c["eligible"]:
            assert c["total"] == pytest.approx(result.total_of()[c["id"]], abs=1e-4)
            assert set(c["scores"]) == set(result.weights)
        assert "ttft_s" not in c  # no predicted-latency plugin in the default profile
    assert rec["filters"][0][0] == "prefix-cache-affinity"
    json.dumps(rec)


def test_decision_record_carries_predicted_ttft():
    sched = Scheduler.from_config(predictor_config(), clock=FakeClock(), seed=1)
    tracer = DecisionTracer(DecisionTraceArgs(dir="/unused"), sched)
    r, endpoints = req(3, 3), eps(num_waiting=[4, 0, 0])
    result = sched.schedule(r, endpoints)
    tracer.decision("k", r, result, endpoints)
    ttfts = {c["id"]: c["ttft_s"] for c in tracer._serialize(tracer._ring[0])["candidates"]}
    assert set(ttfts) == {"e0", "e1", "e2"} and ttfts["e0"] > ttfts["e1"]


def test_writer_header_decisions_routed_load_and_drops(tmp_path):
    clock = FakeClock(100.0)
    sched = Scheduler.from_config(default_config(), clock=clock, seed=1)
    loads = [("e0", {"num_waiting": 3, "num_running": 2, "kv_cache_usage": 0.5, "prefix_cache_hits": 10,
                     "prefix_cache_queries": 20, "updated_at": 99.0}, 1)]
    tracer = DecisionTracer(DecisionTraceArgs(dir=str(tmp_path), capacity=16), sched, lambda: loads, rid="rt",
                            clock=clock)
    for i in range(20):  # 4 more than the ring holds
        r, endpoints = req(i, i, rid=f"q{i}"), eps()
        tracer.decision(f"k{i}", r, sched.schedule(r, endpoints), endpoints)
    tracer.flush()
    tracer.routed("k19", "elsewhere")  # Ray used another replica than the chosen one
    tracer.routed("k18", tracer._chosen["k18"][1])  # the chosen one: no line
    tracer.sample_load()
    tracer.close()
    out = lines(tmp_path / "decisions-rt.jsonl")
    kinds = [o["kind"] for o in out]
    assert kinds == ["header"] + ["decision"] * 16 + ["dropped", "routed", "load"]
    assert out[0]["weights"]["prefix-cache"] == 3 and out[0]["router"] == "rt"
    assert out[1]["request_id"] == "q4" and out[17]["n"] == 4 and tracer.dropped == 4
    assert out[18]["replica"] == "elsewhere" and out[18]["request_id"] == "q19"
    assert out[19]["replicas"] == [load_record(0, loads)["replicas"][0]]
    assert out[19]["replicas"][0] == {"id": "e0", "waiting": 3, "running": 2, "kv": 0.5, "in_flight": 1, "hits": 10,
                                      "queries": 20, "stats_t": 99.0}


def test_writer_thread_flushes_and_samples_load(tmp_path):
    tracer = DecisionTracer(DecisionTraceArgs(dir=str(tmp_path), flush_s=0.05, load_period_s=0.05), None,
                            lambda: [("e0", {"num_waiting": 1}, 0)], rid="th")
    tracer.start()
    path = tmp_path / "decisions-th.jsonl"
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (path.exists() and len(lines(path)) >= 3):
        time.sleep(0.02)
    tracer.close()
    out = lines(path)
    assert out[0]["kind"] == "header" and sum(o["kind"] == "load" for o in out) >= 2


def test_router_args_pass_the_trace_config():
    kwargs = request_router_config(RouterArgs()).request_router_kwargs
    assert kwargs["trace"] is None
    args = RouterArgs(decision_trace={"dir": "/tmp/tr", "sample_rate": 0.25})
    kwargs = request_router_config(args).request_router_kwargs
    assert DecisionTraceArgs.model_validate(kwargs["trace"]) == args.decision_trace
