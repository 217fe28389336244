"""The P/D KV handoff across hosts: prefill on worker w1, decode on worker w2 of the multi-host cluster.

    python bench/pd/hosts.py --out bench/results/pd                    # the measurement: handoff_hosts.json
    python bench/pd/hosts.py --smoke --out /tmp/pd-hosts-smoke         # end to end, a minute or two of requests

The cluster is ``llmd_ray.cluster``'s (a head and two workers, each its own network namespace on a bridge, with a
private /dev/shm and /tmp), started here under a prefix and subnet of its own and removed at the end. Per transport
(object store, NIXL), one P/D app is deployed over the dashboard's REST API: the prefill variant pinned to w1, the
decode variant to w2 (the `node-<name>` resources), the ingress on the head, engines as in ``pd_bench.py handoff``
(the tiny model, 128 KV blocks of 128 tokens, splitting forced with the `always` decider). The client is the same
``workloads.handoff_run`` as the single-host benchmark's, run as a Ray driver on the head (it reads the decode
replica's handoff counters through a Serve handle): sequential streamed completions of random tokens. Reported per
prompt length: TTFT, and for the object store the handoff's bytes, seconds, bytes/s and share of TTFT, beside
the single-host figures of ``bench/results/pd/handoff.json`` (same client, same lengths; prefill and decode there
on one host, the handoff never leaving it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

ENGINE = {"model": "tiny-llama", "max_model_len": 4096, "num_kv_blocks": 128}
LENGTHS = [256, 512, 1024, 2048, 4000]
APP = "bench"
SINGLE_HOST = {"object_store": "pd_object_store", "nixl": "pd_nixl"}  # labels in handoff.json


def serve_config(plan, transport: str) -> dict:
    from llmd_ray.cluster import node_resource

    args = {"engine": ENGINE, "pd": {"transport": transport, "decider": {"policy": "always"}},
            "variants": [{"name": "prefill", "role": "prefill", "resources": {node_resource("w1"): 1}},
                         {"name": "decode", "role": "decode", "resources": {node_resource("w2"): 1}}]}
    ingress = {"name": "OpenAIIngress", "ray_actor_options": {"num_cpus": 0, "resources": {node_resource("head"): 1}}}
    return {"proxy_location": "HeadOnly", "http_options": {"host": str(plan.head.ip), "port": plan.serve_port},
            "applications": [{"name": APP, "route_prefix": "/", "import_path": "llmd_ray:build_app", "args": args,
                              "deployments": [ingress]}]}


def deploy(cluster, config: dict, timeout_s: float = 900) -> float:
    """PUT the config (``serve deploy``'s REST call) and wait until the app runs; returns the seconds taken."""
    import httpx

    url = f"{cluster.plan.dashboard_url}/api/serve/applications/"
    t0 = time.perf_counter()
    r = httpx.put(url, json=config, timeout=60)
    r.raise_for_status()
    while time.perf_counter() - t0 < timeout_s:
        app = (httpx.get(url, timeout=10).json().get("applications") or {}).get(APP) or {}
        if app.get("status") == "RUNNING":
            return time.perf_counter() - t0
        if app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"app {app.get('status')}: {app.get('message')}")
        time.sleep(2)
    raise TimeoutError(f"app not running after {timeout_s:.0f}s")


def run_on_head(cluster, transport: str, lengths: list[int], trials: int) -> list[dict]:
    """The client, as a Ray driver on the head (see ``inside``); returns its rows."""
    spec = {"gcs": cluster.plan.gcs_address, "url": cluster.plan.serve_url, "transport": transport,
            "lengths": lengths, "trials": trials}
    out = cluster.exec("head", [sys.executable, str(Path(__file__).resolve()), "--inside", json.dumps(spec)],
                       stdout=subprocess.PIPE, text=True, timeout=3600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"client on the head failed ({out.returncode}): {out.stdout[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def inside(spec: dict) -> None:
    import ray
    from ray import serve

    ray.init(address=spec["gcs"], namespace="serve", log_to_driver=False)

    async def stats() -> dict:
        return await serve.get_deployment_handle("LLMServer-decode", app_name=APP).pd_stats.remote()

    # NIXL's transfer runs inside the decode engine after the prefill returns: no handoff figure of ours to read.
    fn = stats if spec["transport"] == "object_store" else None
    rows = asyncio.run(workloads.handoff_run(spec["url"], spec["lengths"], spec["trials"], fn, seed=1))
    print("RESULT " + json.dumps(rows), flush=True)


def beside(summary: dict, single: dict | None) -> dict:
    """Per prompt length: the cross-host figures, the single-host ones, and their ratios."""
    out = {}
    for n, s in summary.items():
        one = (single or {}).get(n, {})
        row = {"hosts": s, "single_host": one}
        for k in ("ttft_s", "handoff_s", "handoff_GBps", "handoff_share_of_ttft"):
            if s.get(k) and one.get(k):
                row[f"{k}_ratio"] = s[k] / one[k]
        out[n] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/pd")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--transports", default="object_store,nixl")
    ap.add_argument("--single-host", default="bench/results/pd/handoff.json", help="the single-host handoff run")
    ap.add_argument("--smoke", action="store_true", help="object store only, 256 and 1,024 tokens, one trial")
    ap.add_argument("--inside", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inside:
        return inside(json.loads(a.inside))
    from llmd_ray.cluster import Cluster, ClusterConfig

    lengths, trials, transports = LENGTHS, a.trials, a.transports.split(",")
    if a.smoke:
        lengths, trials, transports = [256, 1024], 1, ["object_store"]
    single = {}
    if Path(a.single_host).exists():
        single = json.loads(Path(a.single_host).read_text())["result"]
    # Each worker on a core of its own, as on hosts of their own (else both engines claim core 0 of their node)
    cluster = Cluster(ClusterConfig(prefix="llmdpb", subnet="10.213.9.0/24", workers=2, head_num_cpus=1,
                                    worker_num_cpus=1, node_cores={"w1": [0], "w2": [1]}))
    cluster.install_cleanup()
    result: dict = {}
    t0 = time.perf_counter()
    cluster.up()
    print(f"cluster up in {time.perf_counter() - t0:.0f}s: {cluster.node_ids()}", flush=True)
    try:
        for transport in transports:
            took = deploy(cluster, serve_config(cluster.plan, transport))
            print(f"{transport}: P/D app (prefill w1, decode w2) ready in {took:.0f}s", flush=True)
            rows = run_on_head(cluster, transport, lengths, trials)
            summary = workloads.summarize_handoff(rows)
            ref = (single.get(SINGLE_HOST[transport]) or {}).get("summary")
            result[transport] = {"deploy_s": took, "summary": summary, "beside_single_host": beside(summary, ref),
                                 "rows": rows}
            print(transport, json.dumps(result[transport]["beside_single_host"], indent=1), flush=True)
    finally:
        cluster.down()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "handoff_hosts.json").write_text(json.dumps({"args": vars(a), "result": result}, indent=2))
    print(f"wrote {out / 'handoff_hosts.json'}")


if __name__ == "__main__":
    main()
