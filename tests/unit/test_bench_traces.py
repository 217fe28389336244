"""The decision-trace analysis (llmd_ray/bench/traces) on synthetic traces."""

import json

import pytest

from llmd_ray.bench.traces import analysis as A
from llmd_ray.bench.traces.__main__ import main

U1 = "0f6c2a1e-1111-4a4a-8b8b-000000000001"


def cand(id, waiting=0, running=0, kv=0.0, in_flight=0, hit=0, session=0.0):
    return {"id": id, "waiting": waiting, "running": running, "kv": kv, "in_flight": in_flight, "hit_tokens": hit,
            "eligible": True, "total": 0.0, "scores": {"prefix-cache": 0.0, "session-affinity": session}}


def dec(t, rid, chosen, cands, group="g1", verdict="warm", session=None, tokens=100):
    return {"kind": "decision", "t": t, "request_id": rid, "session": session, "tokens": tokens, "block_size": 16,
            "group": group, "verdict": verdict, "affinity_off": None, "filters": [], "chosen": chosen,
            "candidates": cands}


def load(t, **reps):
    return {"kind": "load", "t": t, "replicas": [
        {"id": k, "waiting": v[0], "running": v[1], "kv": v[2], "in_flight": 0, "hits": v[3], "queries": v[4],
         "stats_t": t} for k, v in reps.items()]}


def write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"kind": "header", "router": path.stem}] + recs))
    return path


def traces(tmp_path, recs) -> A.Traces:
    return A.read([write(tmp_path / "decisions-a.jsonl", recs)])


# name -> (decision, session_busy, best_hit_missed)
CASES = {
    "session held on the busiest": (dec(0, "r", "a", [cand("a", waiting=5, session=1), cand("b", waiting=1)],
                                        session="s"), True, False),
    "session held, queues tied": (dec(0, "r", "a", [cand("a", waiting=2, session=1), cand("b", waiting=2)],
                                      session="s"), False, False),
    "session moved off": (dec(0, "r", "b", [cand("a", waiting=5, session=1), cand("b")], session="s"), False, False),
    "no session history": (dec(0, "r", "a", [cand("a", waiting=5), cand("b")]), False, False),
    "in-flight counts as queue": (dec(0, "r", "a", [cand("a", in_flight=6, running=2, session=1), cand("b", waiting=3)],
                                      session="s"), True, False),
    "best hit given up": (dec(0, "r", "b", [cand("a", hit=64), cand("b", hit=16)]), False, True),
    "best hit used": (dec(0, "r", "a", [cand("a", hit=64), cand("b", hit=16)]), False, False),
}


@pytest.mark.parametrize("name", CASES)
def test_per_decision_judgements(name):
    d, busy, missed = CASES[name]
    d = {**d, "replica": d["chosen"]}
    assert A.session_busy(d) is busy
    assert A.best_hit_missed(d) is missed


def test_read_routed_and_dropped(tmp_path):
    tr = traces(tmp_path, [dec(1.0, "r1", "a", [cand("a"), cand("b")]), {"kind": "routed", "t": 1.1,
                "request_id": "r1", "chosen": "a", "replica": "b"}, {"kind": "dropped", "t": 2, "n": 7},
                           dec(2.0, "r2", "a", [cand("a"), cand("b")])])
    (tmp_path / "decisions-a.jsonl").open("a").write('{"kind": "decis')  # a line cut by a crash
    tr = A.read([tmp_path])
    assert [d["replica"] for d in tr.decisions] == ["b", "a"] and tr.dropped == 7 and tr.t0 == 1.0
    assert A.summary(tr)["rerouted_by_ray"] == 1


@pytest.mark.parametrize("replicas, spread, pinned, scattered", [
    (["a", "a", "a", "a"], [1, 1, 1, 1], 1, 0),
    (["a", "b", "a", "c"], [1, 2, 2, 3], 0, 1),
])
def test_group_spread(tmp_path, replicas, spread, pinned, scattered):
    tr = traces(tmp_path, [dec(float(i), f"r{i}", r, [cand(r)]) for i, r in enumerate(replicas)]
                + [dec(9.0, "x", "a", [cand("a")], group="lonely")])
    assert [n for _, n in A.group_spread(tr)["g1"]] == spread
    s = A.summary(tr)["prefix_groups"]
    assert (s["groups"], s["with_2_or_more"], s["pinned"], s["scattered"]) == (2, 1, pinned, scattered)
    starts, means, share = A.spread_by_bin(tr, 100.0)
    assert means == [len(set(replicas))] and share == [float(scattered)]


def test_verdict_shares_by_bin(tmp_path):
    verdicts = ["warm", "warm", "cold", None, "released", "released"]
    tr = traces(tmp_path, [dec(float(i), f"r{i}", "a", [cand("a")], verdict=v) for i, v in enumerate(verdicts)])
    starts, shares = A.verdict_shares(tr, 2.0)
    assert starts == [0.0, 2.0, 4.0]
    assert shares == {"cold": [0, 0.5, 0], "no_affinity_filter": [0, 0.5, 0], "released": [0, 0, 1.0],
                      "warm": [1.0, 0, 0]}


def test_hit_rates_predicted_and_realised(tmp_path):
    recs = [load(0.0, a=(0, 1, 0.1, 0, 0)), dec(0.5, "r1", "a", [cand("a", hit=50)], tokens=100),
            load(1.0, a=(0, 1, 0.2, 30, 100)), load(2.0, a=(0, 1, 0.2, 10, 200)),  # counters restarted: skipped
            load(3.0, a=(0, 1, 0.2, 90, 300))]
    tr = traces(tmp_path, recs)
    starts, pred, real = A.hit_rates(tr, 1.0)
    assert starts == [0.0, 1.0, 3.0] and pred == [0.5, None, None] and real == [None, 0.3, 0.8]
    series = A.load_series(tr)["a"]
    assert series["t"] == [0.0, 1.0, 2.0, 3.0] and series["kv"] == [0.1, 0.2, 0.2, 0.2]


def test_join_by_request_id_and_ttft(tmp_path):
    tr = traces(tmp_path, [dec(0, f"cmpl-{U1}-0", "a", [cand("a", hit=32), cand("b")], verdict="warm"),
                           dec(1, "cmpl-other-0", "b", [cand("a"), cand("b")], verdict="cold")])
    reqs = tmp_path / "run" / "requests.jsonl"
    reqs.parent.mkdir()
    reqs.write_text(json.dumps({"request_id": U1, "ttft_ms": 120.0, "cached_tokens": 32}) + "\n"
                    + json.dumps({"request_id": "nope", "ttft_ms": 9.0}) + "\n")
    pairs = A.join(tr, A.read_requests(reqs.parent))
    assert len(pairs) == 1 and A.hit_pairs(pairs) == [(32, 32)]
    s = A.summary(tr, pairs)
    assert s["ttft_by_verdict"] == {"warm": {"n": 1, "p50_ms": 120.0, "p90_ms": 120.0}}


def test_cli_writes_summary_and_plots(tmp_path):
    recs = [load(0.0, a=(1, 2, 0.3, 0, 0), b=(0, 1, 0.1, 0, 0))]
    for i in range(40):
        home = "a" if i % 4 else "b"
        recs.append(dec(i * 0.5, f"r{i}", home, [cand("a", waiting=i % 5, session=1.0, hit=32), cand("b", hit=0)],
                        group=f"g{i % 3}", verdict=["warm", "cold", "released"][i % 3], session="s"))
        recs.append(load(i * 0.5 + 0.25, a=(i % 5, 2, 0.3, 10 * i, 20 * i), b=(0, 1, 0.1, i, 20 * i)))
    (tmp_path / "t").mkdir()
    write(tmp_path / "t" / "decisions-x.jsonl", recs)
    reqs = tmp_path / "requests.jsonl"
    reqs.write_text("".join(json.dumps({"request_id": f"r{i}", "ttft_ms": 10.0 + i, "cached_tokens": 16}) + "\n"
                            for i in range(40)))
    out = tmp_path / "out"
    assert main([str(tmp_path / "t"), "--out", str(out), "--requests", str(reqs)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decisions"] == 40 and summary["joined_requests"] == 40
    assert set(summary["plots"]) == {"load.png", "verdicts.png", "prefix_groups.png", "sessions.png", "hits.png",
                                     "ttft_by_verdict.png"}
    assert all((out / p).stat().st_size > 1000 for p in summary["plots"])
    (tmp_path / "empty.jsonl").touch()
    assert main([str(tmp_path / "empty.jsonl"), "--out", str(out)]) == 1


def test_harness_keeps_the_servers_request_id():
    from llmd_ray.bench.client import StreamResult, handle_event

    res = StreamResult()
    handle_event(res, json.dumps({"id": f"cmpl-{U1}-0", "choices": [{"text": "x"}]}).encode(), 0.1)
    handle_event(res, json.dumps({"id": "later", "choices": [{"text": "y"}]}).encode(), 0.2)
    assert res.request_id == f"cmpl-{U1}-0" and A.join_key(res.request_id) == U1
