"""A worker node lost under streaming load, and back (issue 16 item 5), on the multi-host cluster.

    python bench/reliability/node_loss.py --out bench/results/reliability/node_loss      # the measurement
    python bench/reliability/node_loss.py --smoke --out /tmp/node-loss-smoke             # end to end, small

The cluster is ``llmd_ray.cluster``'s (a head and two workers, each its own network namespace), started here under
a prefix and subnet of its own and removed at the end. The app is the precise-routing app (the router config of
``serve_configs/precise_routing.yaml``) with one engine replica on each worker (`worker: 1` per replica), the
ingress and the KVIndex on the head. Closed-loop streaming load from the host over the bridge; once streams run on
both workers, every process of worker ``--victim`` is SIGKILLed at once (``Cluster.kill_node``). Recorded as a
timeline (seconds from the kill): the streams in flight on the lost node and how they ended (migrated to the other
node's engine, or broken), every error, when the GCS marked the node dead, when a request started after the kill
was first served (on the remaining node), when the KVIndex dropped the lost replica's blocks, when the node was
back (``Cluster.restart_node``), when Serve's replacement replica ran on it, and the first request it served.

``run(cluster, ...)`` is also what ``tests/integration/multihost/test_node_loss.py`` runs and asserts on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import httpx

APP = "nodeloss"
DEPLOYMENT = "LLMServer-gen"
ROOT = Path(__file__).resolve().parents[2]
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def serve_config(plan) -> dict:
    """The precise-routing app: 2 engine replicas, one per worker; ingress and KVIndex on the head."""
    import yaml

    from llmd_ray.cluster import node_resource

    base = yaml.safe_load((ROOT / "serve_configs" / "precise_routing.yaml").read_text())["applications"][0]["args"]
    args = {"engine": {"model": "tiny-llama", "max_model_len": 4096, "kv_cache_space_gib": 1},
            "router": base["router"],
            "variants": [{"name": "gen", "num_replicas": 2, "resources": {"worker": 1}}]}
    head = {"num_cpus": 0, "resources": {node_resource("head"): 0.01}}
    return {"proxy_location": "HeadOnly", "http_options": {"host": str(plan.head.ip), "port": plan.serve_port},
            "applications": [{"name": APP, "route_prefix": "/", "import_path": "llmd_ray:build_app", "args": args,
                              "deployments": [{"name": "OpenAIIngress", "ray_actor_options": head},
                                              {"name": "KVIndex", "ray_actor_options": head}]}]}


def app_status(cluster) -> dict:
    url = f"{cluster.plan.dashboard_url}/api/serve/applications/"
    return (httpx.get(url, timeout=10).json().get("applications") or {}).get(APP) or {}


def engine_replicas(cluster) -> dict[str, dict]:
    """Replica id -> {state, node} of the engine deployment (Serve's REST API; node by the plan's addresses)."""
    names = {str(n.ip): n.name for n in cluster.plan.nodes}
    reps = ((app_status(cluster).get("deployments") or {}).get(DEPLOYMENT) or {}).get("replicas") or []
    return {r["replica_id"]: {"state": r["state"], "node": names.get(r.get("node_ip"), r.get("node_ip"))}
            for r in reps}


def head_log_lines(cluster, needle: str, pattern: str = "serve/replica_*.log") -> list[str]:
    session = cluster.session_dir("head")
    out = []
    for path in sorted(session.joinpath("logs").glob(pattern)) if session else []:
        out += [ln for ln in path.read_text(errors="replace").splitlines() if needle in ln]
    return out


def engine_pids(netns: str) -> list[int]:
    """The vLLM processes in a node's namespace (the engine cores, when vLLM runs them as processes)."""
    from llmd_ray.cluster.netns import netns_pids

    out = []
    for pid in netns_pids(netns):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            title += " " + Path(f"/proc/{pid}/comm").read_text(errors="replace")  # a forked engine core's title
        except OSError:
            continue
        if "VLLM" in title or "EngineCore" in title:
            out.append(pid)
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs: a killed process whose parent died too stays a zombie until init reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Load:
    """Closed-loop streamed completions: ``concurrency`` clients, each sends its next request when one ends."""

    def __init__(self, url: str, concurrency: int, max_tokens: int, seed: int = 0):
        self.url, self.concurrency, self.max_tokens = url, concurrency, max_tokens
        self.rng, self.records, self.stop = random.Random(seed), [], False

    async def one(self, client: httpx.AsyncClient, i: int) -> dict:
        prompt = f"Request {i}: " + " ".join(self.rng.choice(WORDS) for _ in range(60))
        rec = {"i": i, "id": None, "start": time.time(), "first": None, "end": None, "replica": None, "tokens": 0,
               "error": None, "max_gap_s": 0.0, "gap_at": None}
        body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": self.max_tokens, "ignore_eos": True,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        self.records.append(rec)
        last = None
        try:
            async with client.stream("POST", "/v1/completions", json=body) as r:
                rec["replica"] = r.headers.get("x-llmd-replica")
                if r.status_code != 200:
                    rec["error"] = f"HTTP {r.status_code}: {(await r.aread()).decode()[:200]}"
                    return rec
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event, now = json.loads(line[6:]), time.time()
                    rec["id"] = rec["id"] or event.get("id")  # the id the ingress names it by in its logs
                    if "error" in event:
                        rec["error"] = str(event["error"].get("message"))[:300]
                    if event.get("choices"):
                        rec["first"] = rec["first"] or now
                        if last is not None and now - last > rec["max_gap_s"]:
                            rec["max_gap_s"], rec["gap_at"] = now - last, last
                        last = now
                    if event.get("usage"):
                        rec["tokens"] = event["usage"]["completion_tokens"]
        except httpx.HTTPError as e:
            rec["error"] = f"{type(e).__name__}: {e}"[:300]
        finally:
            rec["end"] = time.time()
        if rec["error"] is None and rec["tokens"] != self.max_tokens:
            rec["error"] = f"ended after {rec['tokens']} of {self.max_tokens} tokens"
        return rec

    async def client(self, client: httpx.AsyncClient, k: int) -> None:
        n = 0
        while not self.stop:
            await self.one(client, k * 100_000 + n)
            n += 1

    def ok(self, rec: dict) -> bool:
        return rec["end"] is not None and rec["error"] is None


async def wait(cond, timeout_s: float, what: str, period_s: float = 0.5):
    """Poll ``cond`` (run in a thread) until truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(cond)
        if value:
            return value
        await asyncio.sleep(period_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


async def run(cluster, victim: str = "w1", concurrency: int = 4, max_tokens: int = 300,
              timeout_s: float = 300) -> dict:
    """The node-loss timeline (see the module docstring). The victim is restarted before returning, also on
    failure; a step that times out is recorded (``failed``) and ends the run."""
    load = Load(cluster.plan.serve_url, concurrency, max_tokens)
    victim_ns, victim_ip = cluster.plan.node(victim).netns, str(cluster.plan.node(victim).ip)
    t: dict = {"victim": victim, "concurrency": concurrency, "max_tokens": max_tokens}
    async with httpx.AsyncClient(base_url=load.url, timeout=httpx.Timeout(600, connect=10)) as http:
        tasks = [asyncio.create_task(load.client(http, k)) for k in range(concurrency)]
        try:
            await _timeline(cluster, load, t, victim, victim_ns, victim_ip, timeout_s)
        except (TimeoutError, AssertionError) as e:
            t["failed"] = str(e)
        finally:
            if victim_ip not in await asyncio.to_thread(cluster.alive_nodes):
                try:
                    await asyncio.to_thread(cluster.restart_node, victim, timeout_s)
                except Exception as e:  # noqa: BLE001 - recorded; the caller checks the node is back
                    t["restart_failed"] = str(e)
            load.stop = True
            await asyncio.wait(tasks, timeout=timeout_s)
    return summarize(load, t)


async def _timeline(cluster, load: Load, t: dict, victim: str, victim_ns: str, victim_ip: str,
                    timeout_s: float) -> None:
    def streams_on_both():
        reps = engine_replicas(cluster)
        live = [r for r in load.records if r["end"] is None and r["first"] and r["replica"] in reps]
        return {reps[r["replica"]]["node"] for r in live} >= {"w1", "w2"} and reps

    reps = await wait(streams_on_both, timeout_s, "streams in flight on both workers")
    t["lost_replica"] = next(rid for rid, r in reps.items() if r["node"] == victim)
    t["engine_pids_before"] = engine_pids(victim_ns)
    t["kill"] = time.time()
    in_flight = [r for r in load.records if r["end"] is None and r["replica"] == t["lost_replica"]]
    t["in_flight_on_lost_node"] = [r["i"] for r in in_flight]
    t["killed_processes"] = await asyncio.to_thread(cluster.kill_node, victim)
    t["killed_in_s"] = time.time() - t["kill"]
    t["processes_left_on_node"] = len(await asyncio.to_thread(engine_pids, victim_ns))
    t["engine_pids_alive_after"] = [p for p in t["engine_pids_before"] if alive(p)]
    rel = lambda: time.time() - t["kill"]  # noqa: E731

    def first_after_kill():
        done = [r for r in load.records if r["start"] > t["kill"] and load.ok(r)]
        return min((r["end"] for r in done), default=None)

    pending = {"node_dead": lambda: victim_ip not in cluster.alive_nodes(),
               "in_flight_ended": lambda: all(r["end"] for r in in_flight),
               "index_dropped": lambda: head_log_lines(cluster, f"KVIndex: dropped {t['lost_replica']}"),
               "served_after_kill": first_after_kill}
    deadline = time.monotonic() + timeout_s
    while pending:
        for name, cond in list(pending.items()):
            value = await asyncio.to_thread(cond)
            if value:
                t[name] = (value - t["kill"]) if isinstance(value, float) else rel()
                del pending[name]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {sorted(pending)}")
        await asyncio.sleep(0.25)
    t["app_status_while_lost"] = (await asyncio.to_thread(app_status, cluster)).get("status")
    t["restart_begin"] = rel()
    await asyncio.to_thread(cluster.restart_node, victim, timeout_s)
    t["node_back"] = rel()

    def replica_back():
        reps = engine_replicas(cluster)
        new = [rid for rid, r in reps.items() if r["node"] == victim and r["state"] == "RUNNING"]
        return new and sum(r["state"] == "RUNNING" for r in reps.values()) == 2 and new[0]

    t["new_replica"] = await wait(replica_back, timeout_s, f"a replica running on {victim} again")
    t["replica_back"] = rel()

    def served_by_new():
        return min((r["end"] for r in load.records if r["replica"] == t["new_replica"] and load.ok(r)), default=None)

    t["first_served_by_new"] = await wait(served_by_new, timeout_s, "a request served by the new replica") - t["kill"]


def summarize(load: Load, t: dict) -> dict:
    kill = t.get("kill")
    recs = load.records
    lost = set(t.get("in_flight_on_lost_node", []))
    moved = [r for r in recs if r["i"] in lost]
    errors = [r for r in recs if r["end"] is not None and r["error"] is not None]
    t["requests"] = {"sent": len(recs), "completed": sum(load.ok(r) for r in recs), "errors": len(errors),
                     "unfinished": sum(r["end"] is None for r in recs)}
    t["completed_of_in_flight"] = sum(load.ok(r) for r in moved)
    t["in_flight_ids"] = {str(r["i"]): r["id"] for r in moved if load.ok(r)}
    t["in_flight_ended_s"] = {str(r["i"]): round(r["end"] - kill, 3) for r in moved if load.ok(r) and kill}
    t["broken"] = [{"i": r["i"], "error": r["error"]} for r in moved if not load.ok(r)]
    t["migration_gaps_s"] = sorted(round(r["max_gap_s"], 3) for r in moved if load.ok(r))
    t["error_examples"] = [{"i": r["i"], "t": round(r["end"] - kill, 3) if kill else None, "error": r["error"]}
                           for r in errors[:10]]
    return t


def with_ingress_migrations(cluster, t: dict) -> dict:
    """The ingress's own record of the migrations (its warning per migrated stream, in the head's Serve logs):
    ``migrated`` counts the streams in flight on the lost node that it moved and that then completed; a stream
    that finished on the lost node before its engine was gone (the kill takes ~1 s) is in
    ``finished_before_engine_gone``, not a migration."""
    lines = head_log_lines(cluster, "serving replica failed after", f"serve/replica_{APP}_OpenAIIngress_*.log")
    t["ingress_migrations_logged"] = len(lines)
    ids = t.get("in_flight_ids", {})
    moved = sorted(i for i, rid in ids.items() if rid and any(rid in ln for ln in lines))
    t["migrated"] = len(moved)
    t["finished_before_engine_gone"] = sorted(set(ids) - set(moved))
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/reliability/node_loss")
    ap.add_argument("--victim", default="w1")
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--timeout-s", type=float, default=300)
    ap.add_argument("--smoke", action="store_true", help="2 streams of 150 tokens")
    a = ap.parse_args()
    if a.smoke:
        a.concurrency, a.max_tokens = 2, 150
    from llmd_ray.cluster import Cluster, ClusterConfig, teardown

    cfg = ClusterConfig(prefix="llmdn", subnet="10.213.9.0/24", workers=2, head_num_cpus=1, worker_num_cpus=1,
                        worker_resources={"worker": 1}, node_cores={"w1": [0], "w2": [1]})  # as hosts of their own
    teardown(cfg.prefix, str(cfg.resolved_run_dir))
    cluster = Cluster(cfg)
    cluster.install_cleanup()
    try:
        cluster.up()
        t0 = time.perf_counter()
        httpx.put(f"{cluster.plan.dashboard_url}/api/serve/applications/", json=serve_config(cluster.plan),
                  timeout=60).raise_for_status()
        while app_status(cluster).get("status") != "RUNNING":
            if time.perf_counter() - t0 > 900 or app_status(cluster).get("status") == "DEPLOY_FAILED":
                raise RuntimeError(f"app not running: {app_status(cluster).get('message')}")
            time.sleep(2)
        deploy_s = time.perf_counter() - t0
        result = asyncio.run(run(cluster, a.victim, a.concurrency, a.max_tokens, a.timeout_s))
        result["deploy_s"] = deploy_s
        with_ingress_migrations(cluster, result)
    finally:
        cluster.down()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "node_loss.json").write_text(json.dumps(result, indent=2))
    keys = ("failed", "killed_in_s", "node_dead", "served_after_kill", "in_flight_ended", "index_dropped",
            "node_back", "replica_back", "first_served_by_new", "migrated", "broken", "requests")
    print(json.dumps({k: result.get(k) for k in keys}, indent=2))


if __name__ == "__main__":
    main()
