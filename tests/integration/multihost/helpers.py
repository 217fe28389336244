"""Helpers of the multi-host tests: waiting on a condition, and the nodes' Serve logs for failure messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from llmd_ray.cluster import Cluster


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, diagnose: Callable[[], str] | None = None,
             period_s: float = 1.0) -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` (and what ``diagnose`` shows)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (httpx.HTTPError, OSError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(period_s)
    extra = f"\n{diagnose()}" if diagnose else ""
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r}){extra}")


def log_tails(c: Cluster, pattern: str = "serve/*.log", lines: int = 15) -> str:
    """The last lines of every node's logs matching ``pattern`` (under its Ray session's logs/)."""
    out = []
    for node in c.plan.nodes:
        session = c.session_dir(node.name)
        for path in sorted(session.joinpath("logs").glob(pattern)) if session else []:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {node.name}: {path.name}\n" + "\n".join(text))
    return "\n".join(out)


def deploy(c: Cluster, config: dict, apps: list[str], timeout_s: float = 600) -> float:
    """PUT ``config`` to the dashboard's REST API (``serve deploy``) and wait until every app of ``apps`` runs;
    returns the seconds it took. A failed app fails the test with its message and the nodes' Serve logs."""
    plan = c.plan
    t0 = time.perf_counter()
    r = httpx.put(f"{plan.dashboard_url}/api/serve/applications/", json=config, timeout=60)
    assert r.status_code == 200, r.text

    def running():
        status = (httpx.get(f"{plan.dashboard_url}/api/serve/applications/", timeout=10).json()
                  .get("applications") or {})
        for name in apps:
            app = status.get(name) or {}
            if app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
                pytest.fail(f"app {name} {app.get('status')}: {app.get('message')}\n{log_tails(c)}")
        return all((status.get(n) or {}).get("status") == "RUNNING" for n in apps)

    wait_for(running, timeout_s, f"apps {apps} to run", lambda: log_tails(c))
    return time.perf_counter() - t0


def replicas(c: Cluster) -> dict[str, dict]:
    """Serve replica unique id -> {app, deployment, node} of every alive replica actor (the state API)."""
    from ray.util.state import list_actors

    names = {v: k for k, v in c.node_ids().items()}  # node id -> node name
    out = {}
    for a in list_actors(address=c.plan.dashboard_url, filters=[("state", "=", "ALIVE")], limit=1000):
        if a.name and a.name.startswith("SERVE_REPLICA::"):
            app, deployment, unique_id = a.name.split("::", 1)[1].split("#")
            out[unique_id] = {"app": app, "deployment": deployment, "node": names.get(a.node_id, a.node_id)}
    return out


DRIVER = """
import json, sys, ray
from ray import serve
ray.init(address={gcs!r}, namespace="serve", log_to_driver=False)
calls = json.loads(sys.argv[1])
out = [serve.get_deployment_handle(d, app_name=a).options(method_name=m).remote(*args).result(timeout_s=120)
       for a, d, m, args in calls]
print("RESULT " + json.dumps(out, default=str))
"""


def call_deployments(c: Cluster, calls: list[tuple[str, str, str, list]], timeout_s: float = 180) -> list:
    """Call Serve deployments' methods from a Ray driver run on the head (the host's namespace is outside the
    cluster): ``[(app, deployment, method, args)]`` -> their JSON-able results, in order."""
    import json
    import sys

    code = DRIVER.format(gcs=c.plan.gcs_address)
    out = c.exec("head", [sys.executable, "-c", code, json.dumps(calls)], capture_output=True, text=True,
                 timeout=timeout_s)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, f"driver failed ({out.returncode}): {out.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def node_path(c: Cluster, node: str, path: str) -> str:
    """``path`` as the node sees it (its private /dev/shm and /tmp), read from the host through /proc."""
    return f"/proc/{c.node_pid(node)}/root{path}"


def variants_known_running(c: Cluster, app: str) -> bool:
    """The app's ingress has polled a running replica for every variant (it polls Serve's status every second;
    until then it may send every request to the one variant it knows)."""
    (status,) = call_deployments(c, [(app, "OpenAIIngress", "flow_status", [])])
    variants = status["variants"]
    return len(variants) > 1 and all(v["running"] for v in variants.values())
