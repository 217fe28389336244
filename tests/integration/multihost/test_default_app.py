"""The default app across hosts (issue 16 item 2): its ingress on the head, one real tiny-model engine on each
worker node (variants placed by the workers' `node-<name>` resources), deployed with `serve deploy`'s REST call
and used from the host's namespace over the bridge, as a remote client would."""

from __future__ import annotations

import time

import httpx
import pytest

from llmd_ray.cluster import node_resource
from tests.integration.multihost.helpers import log_tails, variants_known_running, wait_for

pytestmark = [pytest.mark.own_cluster, pytest.mark.timeout(900)]

APP = "default"
ENGINE = {"model": "tiny-llama", "max_model_len": 4096, "kv_cache_space_gib": 1}
REPLICA_HEADER = "x-llmd-replica"


def serve_config(plan) -> dict:
    """The default app: a variant per worker, pinned there by the worker's resource; the ingress on the head."""
    variants = [{"name": w.name, "num_replicas": 1, "resources": {node_resource(w.name): 1}} for w in plan.workers]
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": str(plan.head.ip), "port": plan.serve_port},
        "applications": [{
            "name": APP, "route_prefix": "/", "import_path": "llmd_ray:build_app",
            "args": {"engine": ENGINE, "variants": variants},
            "deployments": [{"name": "OpenAIIngress",
                             "ray_actor_options": {"num_cpus": 0, "resources": {node_resource("head"): 1}}}],
        }],
    }


@pytest.fixture(scope="module")
def app(cluster):
    """Deploy over the dashboard's REST API from the host namespace; yields the Serve URL once /health is 200."""
    plan = cluster.plan
    t0 = time.perf_counter()
    r = httpx.put(f"{plan.dashboard_url}/api/serve/applications/", json=serve_config(plan), timeout=60)
    assert r.status_code == 200, r.text

    def healthy():
        status = httpx.get(f"{plan.dashboard_url}/api/serve/applications/", timeout=10).json()
        app = (status.get("applications") or {}).get(APP) or {}
        if app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
            pytest.fail(f"app {app.get('status')}: {app.get('message')}\n{log_tails(cluster)}")
        return app.get("status") == "RUNNING" and httpx.get(f"{plan.serve_url}/health", timeout=10).status_code == 200

    wait_for(healthy, 600, "the default app to run and answer /health", lambda: log_tails(cluster))
    print(f"\nmulti-host app ready in {time.perf_counter() - t0:.1f}s")
    return plan.serve_url


def replicas(cluster) -> dict[str, dict]:
    """Serve replica unique id -> {deployment, node} of every alive replica actor (the dashboard's state API)."""
    from ray.util.state import list_actors

    names = {v: k for k, v in cluster.node_ids().items()}  # node id -> node name
    out = {}
    for a in list_actors(address=cluster.plan.dashboard_url, filters=[("state", "=", "ALIVE")], limit=1000):
        if a.name and a.name.startswith("SERVE_REPLICA::"):
            _, deployment, unique_id = a.name.split("::", 1)[1].split("#")
            out[unique_id] = {"deployment": deployment, "node": names.get(a.node_id, a.node_id)}
    return out


def test_each_engine_on_its_worker_and_the_ingress_on_the_head(cluster, app):
    placed = {r["deployment"]: r["node"] for r in replicas(cluster).values()}
    assert placed == {"OpenAIIngress": "head", "LLMServer-w1": "w1", "LLMServer-w2": "w2"}, placed


def test_chat_from_the_host_over_the_bridge(cluster, app):
    from openai import OpenAI

    client = OpenAI(base_url=f"{app}/v1", api_key="unused", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-llama", messages=[{"role": "user", "content": "Hello from another host"}], max_tokens=8)
    reply = raw.parse()
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    served = replicas(cluster).get(raw.headers.get(REPLICA_HEADER))
    assert served is not None and served["node"] in ("w1", "w2"), (raw.headers.get(REPLICA_HEADER), served)


def test_both_worker_engines_serve(cluster, app):
    """Two overlapping streams: the first holds a request on one variant, so the ingress sends the second to the
    other; each response names its replica, and the two replicas run on the two workers."""
    body = {"model": "tiny-llama", "prompt": "one two three", "max_tokens": 2000, "ignore_eos": True,
            "stream": True}
    served = []
    wait_for(lambda: variants_known_running(cluster, APP), 30, "the ingress to see both variants running")
    with httpx.Client(base_url=app, timeout=120) as http:
        with http.stream("POST", "/v1/completions", json=body) as first:  # headers come with the first token
            assert first.status_code == 200, first.read()
            with http.stream("POST", "/v1/completions", json={**body, "max_tokens": 4}) as second:
                assert second.status_code == 200, second.read()
                served.append(second.headers.get(REPLICA_HEADER))
                assert any(line.startswith("data: ") for line in second.iter_lines())
            served.append(first.headers.get(REPLICA_HEADER))
            assert any(line.startswith("data: ") for line in first.iter_lines())
    where = replicas(cluster)
    nodes = sorted(where[r]["node"] for r in served if r in where)
    assert nodes == ["w1", "w2"], (served, where)
