"""Streams under replica kills: broken streams and the latency a migration adds, a replica killed every 30 s.

    python bench/reliability/migration.py --duration 300 --kill-every 30 --out bench/results/reliability/migration

Starts its own Ray cluster and the default app (``--replicas`` tiny-model engine replicas) on a port of its
own, then keeps ``--concurrency`` greedy streams of ``--tokens`` tokens (ignore_eos) running in a closed loop
for ``--duration`` seconds. Every ``--kill-every`` seconds the engine replica serving the most streams is
killed (``ray.kill``; Serve replaces it), so its streams must migrate (``llmd_ray/frontdoor/migrating.py``).

Per stream: the serving replica, each chunk's arrival time, the token count, finish reason and any error
event. Reported:

* ``broken``: streams that ended with an error event, a non-200 status, fewer tokens than asked or no
  finish (the target is 0);
* ``migrated``: streams whose replica was killed while they ran; for each, the gap the kill left
  (the longest inter-chunk gap after the kill minus the stream's median inter-chunk gap), p50/p90/max;
* the ingress's own figures from Ray's metrics port: ``llmd_stream_migrations_total`` by outcome and
  ``llmd_stream_migration_seconds`` (failure -> first token from the new replica), mean.

Results: ``migration.json`` (every stream, the summary).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

import httpx


async def stream(client: httpx.AsyncClient, i: int, tokens: int, live: dict) -> dict:
    body = {"model": "tiny-llama", "prompt": f"Request {i}: a long greedy story about moving streams",
            "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    rec = {"i": i, "start": time.time(), "replica": None, "times": [], "tokens": 0, "finish": None, "error": None,
           "status": None}
    live[i] = rec
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            rec["status"], rec["replica"] = r.status_code, r.headers.get("x-llmd-replica")
            if r.status_code != 200:
                rec["error"] = (await r.aread()).decode()[:300]
                return rec
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    rec["error"] = event["error"].get("message")
                for c in event.get("choices", []):
                    rec["times"].append(time.time())
                    rec["finish"] = c.get("finish_reason") or rec["finish"]
                if event.get("usage"):
                    rec["tokens"] = event["usage"]["completion_tokens"]
    except Exception as e:  # transport failure: a broken stream too
        rec["error"] = f"{type(e).__name__}: {e}"
    finally:
        rec["end"] = time.time()
        live.pop(i, None)
    return rec


async def client_loop(client, k: int, tokens: int, until: float, live: dict, out: list, counter: list) -> None:
    while time.monotonic() < until:
        counter[0] += 1
        out.append(await stream(client, counter[0] * 100 + k, tokens, live))


def kill_busiest(live: dict, app: str) -> dict | None:
    import ray

    by_replica: dict[str, int] = {}
    for rec in list(live.values()):
        if rec["replica"] and rec["times"]:
            by_replica[rec["replica"]] = by_replica.get(rec["replica"], 0) + 1
    if not by_replica:
        return None
    victim = max(by_replica, key=by_replica.get)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(f"SERVE_REPLICA::{app}#LLMServer#") and a["name"].endswith(f"#{victim}")]
    if not names:
        return None
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    print(f"[migration] killed {victim} serving {by_replica[victim]} streams", file=sys.stderr)
    return {"t": time.time(), "replica": victim, "streams": by_replica[victim]}


async def killer(live: dict, app: str, every: float, until: float, kills: list) -> None:
    while time.monotonic() + every < until:
        await asyncio.sleep(every)
        k = await asyncio.to_thread(kill_busiest, live, app)
        if k:
            kills.append(k)


def metrics(port: int) -> dict:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    outcomes: dict[str, float] = {}
    for labels, v in re.findall(r"^ray_llmd_stream_migrations_total(?:_total)?\{([^}]*)\} ([0-9.e+]+)$", text, re.M):
        o = re.search(r'outcome="(\w+)"', labels).group(1)
        outcomes[o] = outcomes.get(o, 0.0) + float(v)
    s = sum(float(v) for v in re.findall(r"^ray_llmd_stream_migration_seconds_sum\{[^}]*\} ([0-9.e+]+)$", text, re.M))
    n = sum(float(v) for v in re.findall(r"^ray_llmd_stream_migration_seconds_count\{[^}]*\} ([0-9.e+]+)$", text, re.M))
    return {"migrations_by_outcome": outcomes, "migration_seconds_mean": s / n if n else None, "observed": n}


def summarise(results: list[dict], kills: list[dict], tokens: int, args, server: dict) -> dict:
    broken = [r for r in results if r["error"] or r["status"] != 200 or r["tokens"] != tokens
              or r["finish"] != "length"]
    added = []
    for r in results:
        for k in kills:
            if r["replica"] == k["replica"] and r["start"] < k["t"] < r["end"] and len(r["times"]) > 2:
                gaps = [b - a for a, b in zip(r["times"], r["times"][1:])]
                after = [b - a for a, b in zip(r["times"], r["times"][1:]) if b >= k["t"]]
                if after:
                    added.append(max(after) - statistics.median(gaps))
                    r["migration_gap_s"] = added[-1]
    added.sort()
    q = (lambda p: added[int(p * (len(added) - 1))]) if added else (lambda p: None)
    return {"duration_s": args.duration, "kill_every_s": args.kill_every, "concurrency": args.concurrency,
            "tokens": tokens, "streams": len(results), "broken": len(broken),
            "broken_examples": [{"i": r["i"], "error": r["error"], "tokens": r["tokens"]} for r in broken[:5]],
            "kills": kills, "migrated_streams": len(added),
            "added_latency_s": {"p50": q(0.5), "p90": q(0.9), "max": added[-1] if added else None},
            "ingress": server, "results": results}


async def main(args) -> dict:
    import ray
    from ray import serve

    from llmd_ray import build_app

    ray.init(num_cpus=4, include_dashboard=False, _metrics_export_port=args.metrics_port,
             _system_config={"metrics_report_interval_ms": 1000}, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(build_app({"num_replicas": args.replicas, "engine": {"model": "tiny-llama", "max_model_len": 4096}}),
              name="migration", route_prefix="/")
    live: dict[int, dict] = {}
    results: list[dict] = []
    kills: list[dict] = []
    until = time.monotonic() + args.duration
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{args.port}", timeout=args.request_timeout,
                                 limits=limits) as client:
        counter = [0]
        loops = [asyncio.create_task(client_loop(client, k, args.tokens, until, live, results, counter))
                 for k in range(args.concurrency)]
        kill_task = asyncio.create_task(killer(live, "migration", args.kill_every, until, kills))
        await asyncio.gather(*loops)
        kill_task.cancel()
    await asyncio.sleep(5)  # the ingress's metrics reach the port every second
    server = metrics(args.metrics_port)
    serve.shutdown()
    ray.shutdown()
    return summarise(results, kills, args.tokens, args, server)


def compact(summary: dict) -> dict:
    """The summary with each stream's chunk times folded into chunks, first/last chunk and longest gap (the
    raw times of 8 x 400-token streams over 5 minutes are ~4 MB)."""
    results = []
    for r in summary.get("results", []):
        t = r.pop("times", [])
        gaps = [b - a for a, b in zip(t, t[1:])]
        results.append({**r, "chunks": len(t), "first_chunk": t[0] if t else None, "last_chunk": t[-1] if t else None,
                        "longest_gap_s": max(gaps) if gaps else None})
    return {**summary, "results": results}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8310)
    ap.add_argument("--metrics-port", type=int, default=8311)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--kill-every", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--request-timeout", type=float, default=600)
    ap.add_argument("--out", default="bench/results/reliability/migration")
    a = ap.parse_args()
    summary = asyncio.run(main(a))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "migration.json").write_text(json.dumps(compact(summary), indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=1))
