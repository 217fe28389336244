"""P/D across hosts (issue 16 item 2): the prefill replica on worker w1, the decode replica on worker w2, for both
transports (llmd-ray's object-store connector, and vLLM's NixlConnector on CPU buffers), beside an aggregated app
on the head. Greedy output through P/D across hosts must be token-identical to the aggregated app's, every prompt
with a transferable block must go through the handoff (no fallback to a local prefill), and no KV buffer may be
left in either worker's private /dev/shm.

One REST deploy for the module: three apps (`agg`, `pd-os`, `pd-nixl`), five engines (each worker runs the
prefill or decode replica of both P/D apps, half a Ray CPU each).
"""

from __future__ import annotations

import os

import pytest

from llmd_ray.cluster import node_resource
from tests.integration.multihost.helpers import call_deployments, deploy, node_path, replicas
from tests.integration.test_pd import complete, prompt_of

pytestmark = [pytest.mark.own_cluster, pytest.mark.timeout(1200)]

ENGINE = {"model": "tiny-llama", "max_model_len": 4096, "num_kv_blocks": 40}
BLOCK_BYTES = 3 * 2 * 64 * 2 * 4 * 128  # layers x kv heads x head size x (K,V) x float32 x tokens per block
LENGTHS = [100, 129, 257, 1025, 2000]  # one within a block (stays local), the rest split
PROMPTS = {n: prompt_of(n, 16) for n in LENGTHS}
TRANSPORTS = {"object_store": "pd-os", "nixl": "pd-nixl"}


def pd_app(name: str, transport: str) -> dict:
    return {"name": name, "route_prefix": f"/{name}", "import_path": "llmd_ray:build_app", "args": {
        "engine": ENGINE, "replica_num_cpus": 0.5,
        "pd": {"transport": transport, "decider": {"policy": "always"}},
        "variants": [{"name": "prefill", "role": "prefill", "resources": {node_resource("w1"): 0.4}},
                     {"name": "decode", "role": "decode", "resources": {node_resource("w2"): 0.4}}]},
        "deployments": [INGRESS]}


INGRESS = {"name": "OpenAIIngress", "ray_actor_options": {"num_cpus": 0, "resources": {node_resource("head"): 0.01}}}


def serve_config(plan) -> dict:
    agg = {"name": "agg", "route_prefix": "/agg", "import_path": "llmd_ray:build_app", "args": {
        "engine": ENGINE, "variants": [{"name": "agg", "resources": {node_resource("head"): 0.5}}]},
        "deployments": [INGRESS]}
    return {"proxy_location": "HeadOnly", "http_options": {"host": str(plan.head.ip), "port": plan.serve_port},
            "applications": [agg] + [pd_app(app, t) for t, app in TRANSPORTS.items()]}


@pytest.fixture(scope="module")
def apps(cluster):
    if not _has_nixl():
        pytest.skip("pip install --no-deps nixl==1.5.1 nixl-cu12==1.5.1")
    took = deploy(cluster, serve_config(cluster.plan), ["agg", *TRANSPORTS.values()], timeout_s=900)
    print(f"\nagg + P/D apps ready in {took:.1f}s")
    return cluster.plan.serve_url


def _has_nixl() -> bool:
    try:
        import nixl  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def baseline(apps) -> dict[int, dict]:
    return {n: complete(f"{apps}/agg", p, stream=False) for n, p in PROMPTS.items()}


def test_prefill_on_w1_decode_on_w2(cluster, apps):
    placed = {(r["app"], r["deployment"]): r["node"] for r in replicas(cluster).values()}
    want = {("agg", "LLMServer-agg"): "head"}
    for app in TRANSPORTS.values():
        want |= {(app, "LLMServer-prefill"): "w1", (app, "LLMServer-decode"): "w2", (app, "OpenAIIngress"): "head"}
    assert {k: placed.get(k) for k in want} == want, placed
    # Each worker runs one engine of each P/D app, both of the same app rank (prefill 0, decode 1): the node's
    # core claims give them different cores (by rank alone both would bind the same one).
    info = call_deployments(cluster, [(app, f"LLMServer-{role}", "model_info", [])
                                      for role in ("prefill", "decode") for app in TRANSPORTS.values()])
    binds = [i["cpu_bind"] for i in info]
    assert binds[0] != binds[1] and binds[2] != binds[3], binds


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_token_identical_to_aggregated_across_hosts(cluster, apps, baseline, transport):
    app = TRANSPORTS[transport]
    probes = [(app, "LLMServer-decode", "pd_stats", []), (app, "LLMServer-decode", "stats", []),
              (app, "LLMServer-prefill", "stats", [])]
    before, dec0, pre0 = call_deployments(cluster, probes)
    moved = {}
    for n, p in PROMPTS.items():
        out = complete(f"{apps}/{app}", p, stream=n % 2 == 1)  # streamed and not
        moved[n] = out
        assert out["text"] == baseline[n]["text"], f"{n}-token prompt: P/D across hosts differs from aggregated"
        assert out["finish"] == baseline[n]["finish"]
    after, dec1, pre1 = call_deployments(cluster, probes)
    counts = {k: v - before["counts"].get(k, 0) for k, v in after["counts"].items()}
    assert counts.get("decision.local.nothing_to_transfer", 0) == 1, counts  # the 100-token prompt
    assert counts.get("decision.split.policy_always", 0) == len(PROMPTS) - 1, counts
    assert counts.get("handoffs", 0) == len(PROMPTS) - 1, counts
    assert not any(k.startswith("fallback.") for k in counts), counts
    # What the engines' connectors moved (a load that failed would be recomputed silently: same tokens).
    moved_by = lambda a, b, k: b["kv_connector"].get(k, 0) - a["kv_connector"].get(k, 0)  # noqa: E731
    blocks = sum((n - 1) // 128 for n in LENGTHS if n > 128)
    if transport == "object_store":  # the bytes the decode replica received from the other host, and loaded
        assert after["handoff_bytes"] - before["handoff_bytes"] == blocks * BLOCK_BYTES
        assert moved_by(pre0, pre1, "exported_blocks") == blocks, pre1["kv_connector"]
        assert moved_by(dec0, dec1, "loaded_blocks") == blocks, dec1["kv_connector"]
        assert moved_by(dec0, dec1, "load_failed_blocks") == 0, dec1["kv_connector"]
    else:  # NIXL read the blocks out of the prefill engine on w1, over the bridge
        every = sum(-(-n // 128) for n in LENGTHS if n > 128)  # NIXL moves the prompt's last, partial block too
        assert moved_by(dec0, dec1, "bytes_transferred") == every * BLOCK_BYTES, dec1["kv_connector"]
        for k in ("num_failed_transfers", "num_failed_handshakes", "num_kv_expired_reqs"):
            assert moved_by(dec0, dec1, k) == 0, dec1["kv_connector"]
    for node in ("w1", "w2"):  # each node's private /dev/shm: nothing handed over is left behind
        root = node_path(cluster, node, "/dev/shm/llmd-kv")
        left = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        assert left == [], (node, left)
