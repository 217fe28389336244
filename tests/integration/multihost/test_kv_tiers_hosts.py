"""The shared KV tier across hosts (issue 16 item 2): an engine on one worker computes a prompt, its replica uploads
the blocks to the shared tier (the SharedKVStore actor's objects in Ray's object store); the same prompt then
served by the engine on the other worker, which never saw it, takes its cached tokens from the shared tier (the store pinned
on the head: the blocks go to the head's object store, the other worker pulls them from there into its private /dev/shm), with
the same greedy output, the blocks loaded by its connector from the shared tier.

One REST deploy for the module: an aggregated variant per worker with KV tiers (host-memory pool + shared tier).
"""

from __future__ import annotations

import json
import os
import random

import httpx
import pytest

from llmd_ray.cluster import node_resource
from tests.integration.multihost.helpers import (call_deployments, deploy, node_path, replicas, variants_known_running,
                                                 wait_for)

pytestmark = [pytest.mark.own_cluster, pytest.mark.timeout(900)]

APP = "tiers"
MODEL = "tiny-llama"
BLOCK = 128
BLOCK_RECORD = 393_216 + 2048  # 3 layers x 2 heads x 128 x 128 x fp32, plus the record header
REPLICA_HEADER = "x-llmd-replica"
TIERS_ROOT = "/dev/shm/llmd-kv-tiers"


def serve_config(plan) -> dict:
    args = {
        "engine": {"model": MODEL, "max_model_len": 2048, "num_kv_blocks": 17},
        "kv_tiers": {"memory_bytes": 8 * BLOCK_RECORD, "shared": True, "shared_bytes": 100 * BLOCK_RECORD,
                     "min_load_blocks": 1, "shared_store_resources": {node_resource("head"): 0.01}},
        "variants": [{"name": w.name, "resources": {node_resource(w.name): 0.5}} for w in plan.workers],
    }
    return {"proxy_location": "HeadOnly", "http_options": {"host": str(plan.head.ip), "port": plan.serve_port},
            "applications": [{"name": APP, "route_prefix": "/", "import_path": "llmd_ray:build_app", "args": args,
                              "deployments": [{"name": "OpenAIIngress", "ray_actor_options": {
                                  "num_cpus": 0, "resources": {node_resource("head"): 0.01}}}]}]}


@pytest.fixture(scope="module")
def app(cluster):
    took = deploy(cluster, serve_config(cluster.plan), [APP])
    print(f"\nKV tiers app ready in {took:.1f}s")
    return cluster.plan.serve_url


def complete(client: httpx.Client, prompt: list[int]) -> tuple[dict, str]:
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 6, "temperature": 0,
                                              "ignore_eos": True, "logprobs": 1})
    assert r.status_code == 200, r.text
    return r.json(), r.headers.get(REPLICA_HEADER)


def owner_stats(cluster, node: str) -> tuple[str, dict]:
    """The node's one tier owner directory: (namespace digest, its connector's counters)."""
    root = node_path(cluster, node, TIERS_ROOT)
    (owner,) = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
    out = {}
    for name in ("namespace.json", "scheduler.json", "worker.json"):
        try:
            with open(os.path.join(root, owner, name)) as f:
                out[name] = json.load(f)
        except (OSError, ValueError):
            out[name] = {}
    return out["namespace.json"].get("digest", ""), {**out["scheduler.json"], **out["worker.json"]}


def test_prefix_computed_on_w1_is_served_on_w2_from_the_shared_tier(cluster, app):
    from llmd_ray.routing.hashing import block_hashes

    rng = random.Random(61)
    prompt = [rng.randrange(10, 4000) for _ in range(5 * BLOCK + 40)]
    hashes = [h.hex() for h in block_hashes(prompt, BLOCK, seed="0")]
    where = lambda rid: replicas(cluster).get(rid, {}).get("node")  # noqa: E731
    wait_for(lambda: variants_known_running(cluster, APP), 30, "the ingress to see both variants running")
    with httpx.Client(base_url=app, timeout=300) as http:
        # Variants are picked by this ingress's outstanding requests, ties to the first listed: an idle app sends
        # the prompt to w1, the held stream too, and with w1 busy the prompt again to w2.
        first, rid = complete(http, prompt)
        assert where(rid) == "w1", (rid, replicas(cluster))
        ns, _ = owner_stats(cluster, "w1")

        def in_shared_tier():
            (missing,) = call_deployments(cluster, [(APP, "SharedKVStore", "missing", [ns, hashes])])
            return not missing

        wait_for(in_shared_tier, 60, "w1's blocks to reach the shared tier", period_s=2)
        _, w2_before = owner_stats(cluster, "w2")
        # A long stream holds w1, so the ingress sends the prompt to w2, whose engine and pool never saw it.
        hold = {"model": MODEL, "prompt": "hold", "max_tokens": 1000, "ignore_eos": True, "stream": True}
        with http.stream("POST", "/v1/completions", json=hold) as held:
            assert held.status_code == 200 and where(held.headers.get(REPLICA_HEADER)) == "w1"
            again, rid2 = complete(http, prompt)  # leaving the block closes the held stream (aborted)
    assert where(rid2) == "w2", (rid2, replicas(cluster))
    c1, c2 = first["choices"][0], again["choices"][0]
    assert (c2["text"], c2["logprobs"]["tokens"]) == (c1["text"], c1["logprobs"]["tokens"])
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 5 * BLOCK
    _, w2_after = owner_stats(cluster, "w2")
    gained = {k: w2_after.get(k, 0) - w2_before.get(k, 0) for k in ("hit_blocks_shared", "loaded_bytes_shared")}
    assert gained["hit_blocks_shared"] == 5, (w2_before, w2_after)  # offered by the scheduler
    assert gained["loaded_bytes_shared"] == 5 * (BLOCK_RECORD - 2048), (w2_before, w2_after)  # loaded by the worker
    (w2_tiers, store) = call_deployments(cluster, [(APP, "LLMServer-w2", "tier_stats", []),
                                                   (APP, "SharedKVStore", "stats", [])])
    assert w2_tiers["shared"]["fetched_blocks"] >= 5 and w2_tiers["shared"]["errors"] == 0, w2_tiers["shared"]
    assert store["node_id"] == cluster.node_ids()["head"]  # w1 wrote to another host, w2 read from another host
    assert store["puts"] >= 5 and store["hits"] >= 5, store
