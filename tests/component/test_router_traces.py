"""Decision traces from a live LLMDRequestRouter over fake replicas, analysed by ``llmd_ray.bench.traces``.

The fakes stand in for LLMServer: `generate` answers with the replica's id; `record_routing_stats` reports a
queue, a batch, KV usage and prefix-cache counters. The router lives in this driver (the handle's), so its
trace file appears here.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

import pytest
from ray import serve

from llmd_ray.bench.traces import analysis as A
from llmd_ray.bench.traces.__main__ import main as analyse
from llmd_ray.engine.types import GenerateChunk, GenerateRequest, SamplingOptions
from llmd_ray.serving.app import RouterArgs, request_router_config

APP = "router-traces"
BLOCK = 4


@serve.deployment(num_replicas=3, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
class FakeLLM:
    def __init__(self):
        self.id = serve.get_replica_context().replica_id.unique_id
        self.served = 0

    async def generate(self, request: GenerateRequest):
        self.served += 1
        yield GenerateChunk(request.request_id, self.id, [], len(request.prompt_token_ids), 0, 1, "length")

    def record_routing_stats(self) -> dict:
        return {"num_waiting": self.served % 3, "num_running": 1, "kv_cache_usage": 0.25, "block_size": BLOCK,
                "num_blocks": 10_000, "prefix_cache_queries": 100 * self.served, "prefix_cache_hits": 50 * self.served,
                "updated_at": time.time()}


def _lines(tmp_path) -> list[dict]:
    return [json.loads(x) for f in tmp_path.glob("decisions-*.jsonl") for x in f.read_text().splitlines() if x]


@pytest.mark.asyncio
async def test_traced_decisions_can_be_analysed(serve_instance, tmp_path):
    trace_dir = tmp_path / "traces"
    router = RouterArgs(stats_period_s=0.2, decision_trace={"dir": str(trace_dir), "flush_s": 0.2,
                                                             "load_period_s": 0.2})
    h = serve.run(FakeLLM.options(request_router_config=request_router_config(router)).bind(), name=APP,
                  route_prefix=None)
    try:
        rng = random.Random(7)
        prefixes = [[rng.randrange(1000) for _ in range(6 * BLOCK)] for _ in range(4)]
        ids = []
        for i in range(24):
            rid = f"cmpl-{uuid.uuid4()}-0"
            ids.append(rid)
            req = GenerateRequest(rid, prefixes[i % 4] + [rng.randrange(1000) for _ in range(3)],
                                  SamplingOptions(max_tokens=1), session_id=f"s{i % 4}")
            [c async for c in h.options(stream=True).generate.remote(req)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0
        while loop.time() < deadline:  # the writer flushes every 0.2 s; load lines need a stats poll first
            got = _lines(trace_dir) if trace_dir.exists() else []
            decided = {r["request_id"] for r in got if r["kind"] == "decision"}
            if set(ids) <= decided and any(r["kind"] == "load" and r["replicas"] for r in got):
                break
            await asyncio.sleep(0.2)
    finally:
        serve.delete(APP)
    got = _lines(trace_dir)
    assert got[0]["kind"] == "header" and got[0]["weights"]["prefix-cache"] == 3
    decisions = [r for r in got if r["kind"] == "decision"]
    assert {d["request_id"] for d in decisions} >= set(ids)
    for d in decisions:
        assert d["verdict"] in ("warm", "cold", "released", "imbalanced") and len(d["candidates"]) == 3
        assert d["chosen"] in {c["id"] for c in d["candidates"]}
    # Repeats of a prefix were predicted to hit where the first one went.
    assert any(c["hit_tokens"] >= 6 * BLOCK for d in decisions for c in d["candidates"])
    loads = [r for r in got if r["kind"] == "load" and r["replicas"]]
    assert loads and {len(r["replicas"]) for r in loads} <= {3}

    reqs = tmp_path / "requests.jsonl"
    reqs.write_text("".join(json.dumps({"request_id": i.split("-", 1)[1][:36], "ttft_ms": 5.0, "cached_tokens": 0})
                            + "\n" for i in ids))
    out = tmp_path / "analysis"
    assert analyse([str(trace_dir), "--out", str(out), "--requests", str(reqs)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decisions"] >= 24 and summary["joined_requests"] == 24 and summary["load_samples"] >= 1
    assert summary["prefix_groups"]["groups"] == 4
    assert {"load.png", "verdicts.png", "prefix_groups.png", "hits.png"} <= set(summary["plots"])
    assert A.read([trace_dir]).dropped == 0
