"""P/D benchmarks on this machine (1 prefill + 1 decode vs aggregated), one Ray cluster, apps run in turn.

    python bench/pd/pd_bench.py handoff --out bench/results/pd     # handoff cost vs prompt length
    python bench/pd/pd_bench.py mixed   --out bench/results/pd     # decode ITL under long prefills

handoff: sequential streamed completions of random token ids (nothing cached) at each length,
    on P/D with the decider forced on (`always`, object store and NIXL), P/D with the prefix
    decider (split at >= 512 uncached tokens), and aggregated (one LLMServer). Per request: TTFT
    (client), and for the object store the handoff time and bytes the decode replica measured
    (everything between the prefill engine finishing and the decode engine receiving the
    request: export read, object store, import write, Serve calls).
mixed: a closed loop of short chat-like requests (64 in / 64 out, 3 at a time) plus a long
    request (2,000 in / 100 out, 20:1) every few seconds; inter-token latency of the short
    requests, P/D (prefix decider) vs aggregated (2 LLMServer replicas), same engines and cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

import httpx

PORT = 18731
ENGINE = {"model": "tiny-llama", "max_model_len": 4096}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


async def stream(client: httpx.AsyncClient, prompt: list[int], max_tokens: int) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    t0 = time.perf_counter()
    times = []
    async with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"text"' in line:
                times.append(time.perf_counter())
    return {"ttft_s": times[0] - t0, "itl_s": [b - a for a, b in zip(times, times[1:])], "e2e_s": times[-1] - t0}


def start(ray_port: int = PORT):
    import ray
    from ray import serve

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}})
    serve.start(http_options={"host": "127.0.0.1", "port": ray_port})


def deploy(kind: str, **kw) -> str:
    from ray import serve

    from llmd_ray import build_app, build_pd_app

    t0 = time.perf_counter()
    if kind == "aggregated":
        app = build_app({"num_replicas": kw.get("replicas", 1), "engine": ENGINE, "router": {"policy": "pow2"}})
    else:
        app = build_pd_app({"engine": ENGINE, "pd": {"transport": kw.get("transport", "object_store"),
                                                     "decider": {"policy": kw.get("policy", "always")}}})
    serve.run(app, name="bench", route_prefix="/")
    print(f"{kind} {kw} ready in {time.perf_counter() - t0:.0f}s", flush=True)
    return f"http://127.0.0.1:{PORT}"


def undeploy() -> None:
    from ray import serve

    serve.delete("bench")
    time.sleep(3)


async def pd_stats() -> dict:
    from ray import serve

    return await serve.get_deployment_handle("DecodeServer", app_name="bench").pd_stats.remote()


async def handoff_run(url: str, lengths: list[int], trials: int, is_pd: bool, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        await stream(c, [rng.randrange(10, 4000) for _ in range(300)], 4)  # warm the path
        for n in lengths:
            for _ in range(trials):
                before = await pd_stats() if is_pd else None
                r = await stream(c, [rng.randrange(10, 4000) for _ in range(n)], 4)
                row = {"prompt_tokens": n, "ttft_s": r["ttft_s"]}
                if is_pd:
                    after = await pd_stats()
                    row["handoff_bytes"] = after["handoff_bytes"] - before["handoff_bytes"]
                    row["handoff_s"] = after["handoff_seconds"] - before["handoff_seconds"]
                    row["split"] = after["counts"].get("handoffs", 0) > before["counts"].get("handoffs", 0)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def summarize_handoff(rows: list[dict]) -> dict:
    out = {}
    for n in sorted({r["prompt_tokens"] for r in rows}):
        rs = [r for r in rows if r["prompt_tokens"] == n]
        s = {"ttft_s": statistics.median(r["ttft_s"] for r in rs)}
        if "handoff_s" in rs[0]:
            s["handoff_s"] = statistics.median(r["handoff_s"] for r in rs)
            s["handoff_bytes"] = statistics.median(r["handoff_bytes"] for r in rs)
            s["split_fraction"] = sum(r["split"] for r in rs) / len(rs)
            if s["handoff_s"] > 0 and s["handoff_bytes"] > 0:
                s["handoff_GBps"] = s["handoff_bytes"] / s["handoff_s"] / 1e9
                s["handoff_share_of_ttft"] = s["handoff_s"] / s["ttft_s"]
        out[str(n)] = s
    return out


def cmd_handoff(a) -> dict:
    lengths = [256, 512, 1024, 2048, 4000]
    systems = [("pd_object_store", "pd", {"transport": "object_store", "policy": "always"}),
               ("pd_nixl", "pd", {"transport": "nixl", "policy": "always"}),
               ("pd_prefix_decider", "pd", {"transport": "object_store", "policy": "prefix"}),
               ("aggregated", "aggregated", {"replicas": 1})]
    result = {}
    for label, kind, kw in systems:
        if a.systems and label not in a.systems.split(","):
            continue
        if label == "pd_nixl":
            try:
                import nixl  # noqa: F401
            except ImportError:
                continue
        url = deploy(kind, **kw)
        rows = asyncio.run(handoff_run(url, lengths, a.trials, kind == "pd" and kw["transport"] == "object_store", seed=1))
        undeploy()
        result[label] = {"summary": summarize_handoff(rows), "rows": rows}
    return result


async def mixed_run(url: str, seconds: float, long_every_s: float, seed: int) -> dict:
    rng = random.Random(seed)
    short, long_ = [], []
    stop = time.perf_counter() + seconds

    async def short_loop(c):
        while time.perf_counter() < stop:
            short.append(await stream(c, [rng.randrange(10, 4000) for _ in range(64)], 64))

    async def long_loop(c):
        tasks = []
        while time.perf_counter() < stop:
            tasks.append(asyncio.create_task(stream(c, [rng.randrange(10, 4000) for _ in range(2000)], 100)))
            await asyncio.sleep(long_every_s)
        long_.extend(await asyncio.gather(*tasks))

    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        await stream(c, [rng.randrange(10, 4000) for _ in range(300)], 4)
        await asyncio.gather(*(short_loop(c) for _ in range(3)), long_loop(c))
    itl = [x for r in short for x in r["itl_s"]]
    return {
        "short_requests": len(short), "long_requests": len(long_),
        "short_itl_p50_s": pct(itl, 50), "short_itl_p99_s": pct(itl, 99),
        "short_ttft_p50_s": pct([r["ttft_s"] for r in short], 50),
        "long_ttft_p50_s": pct([r["ttft_s"] for r in long_], 50),
        "long_itl_p99_s": pct([x for r in long_ for x in r["itl_s"]], 99),
    }


def cmd_mixed(a) -> dict:
    result = {}
    for label, kind, kw in [("aggregated_2", "aggregated", {"replicas": 2}),
                            ("pd_1p1d", "pd", {"transport": "object_store", "policy": "prefix"})]:
        url = deploy(kind, **kw)
        result[label] = asyncio.run(mixed_run(url, a.seconds, a.long_every_s, seed=2))
        if kind == "pd":
            result[label]["pd_stats"] = asyncio.run(pd_stats())
        print(label, json.dumps(result[label]), flush=True)
        undeploy()
    result["itl_p99_ratio_pd_over_aggregated"] = result["pd_1p1d"]["short_itl_p99_s"] / result["aggregated_2"]["short_itl_p99_s"]
    return result


def plot(result: dict, out: Path, which: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if which == "handoff":
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for label, r in result.items():
            xs = [int(n) for n in r["summary"]]
            ax1.plot(xs, [r["summary"][str(n)]["ttft_s"] for n in xs], marker="o", label=label)
        os_ = result.get("pd_object_store", {}).get("summary", {})
        xs = [int(n) for n in os_ if "handoff_share_of_ttft" in os_[n]]
        ax2.plot(xs, [100 * os_[str(n)]["handoff_share_of_ttft"] for n in xs], marker="o", label="handoff % of TTFT")
        ax2b = ax2.twinx()
        ax2b.plot(xs, [os_[str(n)]["handoff_GBps"] for n in xs], marker="s", color="tab:red", label="GB/s")
        ax1.set(xlabel="prompt tokens", ylabel="TTFT median (s)", title="TTFT")
        ax2.set(xlabel="prompt tokens", ylabel="% of TTFT", title="object-store handoff")
        ax2b.set_ylabel("effective GB/s")
        ax1.legend()
        fig.tight_layout()
        fig.savefig(out / "handoff.png", dpi=120)
    else:
        labels = ["aggregated_2", "pd_1p1d"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar([f"{l}\np50" for l in labels], [1e3 * result[l]["short_itl_p50_s"] for l in labels])
        ax.bar([f"{l}\np99" for l in labels], [1e3 * result[l]["short_itl_p99_s"] for l in labels])
        ax.set(ylabel="short-request ITL (ms)", title=f"ITL p99 ratio P/D / aggregated = {result['itl_p99_ratio_pd_over_aggregated']:.2f}")
        fig.tight_layout()
        fig.savefig(out / "mixed_itl.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["handoff", "mixed"])
    ap.add_argument("--out", default="bench/results/pd")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--long-every-s", type=float, default=4.0)
    ap.add_argument("--systems", default="", help="handoff: comma-separated subset of pd_object_store,pd_nixl,pd_prefix_decider,aggregated")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    start()
    result = cmd_handoff(a) if a.which == "handoff" else cmd_mixed(a)
    (out / f"{a.which}.json").write_text(json.dumps({"args": vars(a), "result": result}, indent=2))
    plot(result, out, a.which)
    print(json.dumps({k: v.get("summary", v) if isinstance(v, dict) else v for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
