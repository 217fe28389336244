"""Soak and overload: 2x the measured capacity, one replica killed every minute.

    python bench/reliability/soak.py --duration 300 --kill-every 60 --out bench/results/reliability/soak

Starts its own Ray cluster and the QoS app (serve_configs/qos.yaml: flow control
on, interactive/standard/batch classes) on a port of its own, then:

1. measures capacity: completed requests/s with a closed loop of 8 clients;
2. sends Poisson arrivals at ``--overload`` x that capacity for ``--duration``
   seconds, classes mixed 30% interactive / 40% standard / 30% batch, half of
   the requests streamed; every ``--kill-every`` seconds one LLMServer replica
   actor is killed (``ray.kill``), and Serve replaces it;
3. waits for every request to resolve and records each outcome: completed,
   429 (shed/rate limited, with Retry-After), 503 (stated reason), error (an
   SSE error event or another status) or hung (no answer within the client
   timeout: must be 0);
4. compares the memory of replica and engine processes, the object store and
   the app's state before and after.

Results: ``soak.json`` (every request, the summary) and ``soak.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLASSES = (("interactive", 0.3), ("standard", 0.4), ("batch", 0.3))


def _memory(index_stats: dict | None) -> dict:
    """RSS of the app's replica processes by deployment, of engine processes, the object store, the index."""
    import psutil
    import ray
    from ray._private.internal_api import memory_summary

    rss: dict[str, float] = {"engines": 0.0}
    for p in psutil.process_iter(["cmdline", "name"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            m = re.search(r"ServeReplica:soak:(\w+)", cmd)
            if m:
                rss[m.group(1)] = rss.get(m.group(1), 0.0) + p.memory_info().rss / 2**20
            elif "EngineCore" in (p.info["name"] or "") or "EngineCore" in cmd:
                rss["engines"] += p.memory_info().rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    text = memory_summary(stats_only=True)
    m = re.search(r"Plasma memory usage (\d+) MiB", text)
    return {"rss_mib": rss, "object_store_mib": float(m.group(1)) if m else None, "nodes": len(ray.nodes()),
            "kv_index": index_stats}


async def _index_stats() -> dict | None:
    from ray import serve

    try:
        s = await serve.get_deployment_handle("KVIndex", app_name="soak").stats.remote()
    except Exception as e:  # no precise index in this config
        return {"error": type(e).__name__}
    return {k: v for k, v in s.items() if isinstance(v, (int, float, str))}


async def _request(client: httpx.AsyncClient, rng: random.Random, qos: str, stream: bool, timeout: float) -> dict:
    prompt = [rng.randrange(10, 4000) for _ in range(rng.choice((200, 400, 800)))]
    body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": 32, "ignore_eos": True, "stream": stream}
    out = {"qos": qos, "stream": stream, "t": time.time(), "outcome": None, "status": None, "ttft_s": None,
           "e2e_s": None, "code": None, "retry_after": None}
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", "/v1/completions", json=body, headers={"x-llmd-qos": qos}) as r:
                out["status"] = r.status_code
                out["retry_after"] = r.headers.get("retry-after")
                if r.status_code != 200:
                    data = json.loads(await r.aread())
                    out["code"] = data.get("error", {}).get("code")
                    out["outcome"] = {429: "429", 503: "503"}.get(r.status_code, "error")
                elif not stream:
                    await r.aread()
                    out["ttft_s"] = time.perf_counter() - t0
                    out["outcome"] = "completed"
                else:
                    async for line in r.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        if line == "data: [DONE]":
                            out["outcome"] = out["outcome"] or "completed"
                            break
                        event = json.loads(line[6:])
                        if "error" in event:
                            out["outcome"], out["code"] = "error", event["error"].get("code")
                        elif out["ttft_s"] is None:
                            out["ttft_s"] = time.perf_counter() - t0
                    if out["outcome"] is None:
                        out["outcome"] = "error"  # stream closed without [DONE]
    except TimeoutError:
        out["outcome"] = "hung"
    except httpx.HTTPError as e:
        out["outcome"], out["code"] = "error", type(e).__name__
    out["e2e_s"] = time.perf_counter() - t0
    return out


async def _capacity(client: httpx.AsyncClient, seconds: float) -> float:
    rng = random.Random(0)
    done = 0
    stop = time.monotonic() + seconds

    async def worker():
        nonlocal done
        while time.monotonic() < stop:
            r = await _request(client, rng, "interactive", False, 300)
            done += r["outcome"] == "completed"

    t0 = time.monotonic()
    await asyncio.gather(*[worker() for _ in range(8)])
    return done / (time.monotonic() - t0)


async def _killer(app: str, every: float, until: float, log: list) -> None:
    import ray

    rng = random.Random(1)
    while time.monotonic() + every < until:
        await asyncio.sleep(every)
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith(f"SERVE_REPLICA::{app}#LLMServer#")]
        if names:
            victim = rng.choice(names)
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            log.append({"t": time.time(), "killed": victim})
            print(f"[soak] killed {victim}", file=sys.stderr)


async def main(args) -> dict:
    import ray
    from ray import serve

    from llmd_ray import build_app

    ray.init(num_cpus=4, include_dashboard=False, _system_config={"metrics_report_interval_ms": 1000})
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    cfg = yaml.safe_load((ROOT / args.config).read_text())["applications"][0]["args"]
    # No API keys: per-key rate limits would shed before flow control does (auth has its own tests).
    cfg.get("ingress", {}).pop("auth", None)
    if args.router_from:  # e.g. the precise index: its KVIndex is then part of the soak
        cfg["router"] = yaml.safe_load((ROOT / args.router_from).read_text())["applications"][0]["args"]["router"]
    serve.run(build_app(cfg), name="soak", route_prefix="/")
    base = f"http://127.0.0.1:{args.port}"
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=None, limits=limits) as client:
        capacity = args.capacity or await _capacity(client, args.capacity_seconds)
        rate = args.overload * capacity
        print(f"[soak] capacity {capacity:.2f} req/s -> offering {rate:.2f} req/s", file=sys.stderr)
        await asyncio.sleep(5)
        before = _memory(await _index_stats())
        rng = random.Random(42)
        kills: list = []
        t_end = time.monotonic() + args.duration
        killer = asyncio.create_task(_killer("soak", args.kill_every, t_end, kills))
        tasks = []
        while time.monotonic() < t_end:
            qos = rng.choices([c for c, _ in CLASSES], [w for _, w in CLASSES])[0]
            tasks.append(asyncio.create_task(_request(client, random.Random(rng.random()), qos, rng.random() < 0.5,
                                                      args.request_timeout)))
            await asyncio.sleep(rng.expovariate(rate))
        results = await asyncio.gather(*tasks)
        killer.cancel()
        await asyncio.sleep(args.cooldown)
        after = _memory(await _index_stats())
    serve.shutdown()
    ray.shutdown()
    return summarise(results, kills, capacity, rate, before, after, args)


def summarise(results, kills, capacity, rate, before, after, args) -> dict:
    outcomes = {k: sum(1 for r in results if r["outcome"] == k) for k in ("completed", "429", "503", "error", "hung")}
    per_class = {}
    for c, _ in CLASSES:
        rs = [r for r in results if r["qos"] == c]
        ok = sorted(r["ttft_s"] for r in rs if r["outcome"] == "completed" and r["ttft_s"] is not None)
        per_class[c] = {
            "requests": len(rs), **{k: sum(1 for r in rs if r["outcome"] == k) for k in outcomes},
            "ttft_p50_s": statistics.median(ok) if ok else None,
            "ttft_p90_s": ok[int(0.9 * (len(ok) - 1))] if ok else None,
        }
    return {"capacity_rps": capacity, "offered_rps": rate, "duration_s": args.duration, "kills": kills,
            "requests": len(results), "outcomes": outcomes, "lost_or_hung": outcomes["hung"],
            "unexplained": sum(1 for r in results if r["outcome"] is None),
            "retry_after_on_429": all(r["retry_after"] for r in results if r["outcome"] == "429"),
            "per_class": per_class, "memory_before": before, "memory_after": after, "results": results}


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = summary["results"]
    t0 = min(r["t"] for r in rs)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    colors = {"completed": "tab:green", "429": "tab:orange", "503": "tab:red", "error": "tab:purple", "hung": "black"}
    for outcome, color in colors.items():
        ts = [r["t"] - t0 for r in rs if r["outcome"] == outcome]
        if ts:
            a1.hist(ts, bins=60, histtype="step", color=color, label=f"{outcome} ({len(ts)})")
    for k in summary["kills"]:
        for ax in (a1, a2):
            ax.axvline(k["t"] - t0, color="grey", ls="--", lw=0.8)
    a1.set_ylabel("requests per bin (by arrival)")
    a1.legend()
    a1.set_title(f"soak: {summary['offered_rps']:.2f} req/s offered ({summary['offered_rps'] / summary['capacity_rps']:.1f}x capacity), "
                 f"replica killed at dashed lines")
    for c, _ in CLASSES:
        pts = [(r["t"] - t0, r["ttft_s"]) for r in rs if r["qos"] == c and r["ttft_s"] is not None]
        if pts:
            a2.scatter(*zip(*pts), s=4, label=c)
    a2.set_yscale("log")
    a2.set_ylabel("TTFT (s), completed")
    a2.set_xlabel("arrival time (s)")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="serve_configs/qos.yaml")
    ap.add_argument("--router-from", default="serve_configs/precise_routing.yaml",
                    help="take the router block from this config ('' keeps --config's)")
    ap.add_argument("--port", type=int, default=8300)
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--kill-every", type=float, default=60)
    ap.add_argument("--overload", type=float, default=2.0)
    ap.add_argument("--capacity", type=float, default=None, help="req/s; measured when omitted")
    ap.add_argument("--capacity-seconds", type=float, default=40)
    ap.add_argument("--request-timeout", type=float, default=900)
    ap.add_argument("--cooldown", type=float, default=30)
    ap.add_argument("--out", default="bench/results/reliability/soak")
    a = ap.parse_args()
    summary = asyncio.run(main(a))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(summary, indent=1))
    plot(summary, out / "soak.png")
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=1))
