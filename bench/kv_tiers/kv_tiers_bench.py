"""KV tiers benchmark (issue 9): no tiers / local / shared / both / LMCache, and the load-vs-recompute crossover.

    python bench/kv_tiers/kv_tiers_bench.py compare   --out bench/results/kv_tiers
    python bench/kv_tiers/kv_tiers_bench.py crossover --out bench/results/kv_tiers

compare: the shared-prefix workload of ``bench/kv_tiers/workload.yaml`` (prefix working set ~1.8x the
    cluster's engine caches: 2 replicas x 48 blocks) through the benchmark harness, against one app per
    system, in rounds (none, local, shared, both[, lmcache], none, ...). Every system has the same engines
    and the same precise-index router (``serve_configs/kv_tiers.yaml``'s); only the tiers differ. Each phase
    starts its own Ray cluster (the LMCache phase needs its own environment), deploys the app, runs the
    workload, scrapes the ``llmd_kv_tier_*`` metrics (bytes moved, hits per tier) and shuts down.
crossover: one replica with the memory tier. For prompts of L full blocks (+16 tokens), the TTFT when
    the engine computes the prefix (cold) against the TTFT when the engine's own cache was flushed and the
    blocks come from the tier; then a check that ``min_load_blocks`` above L skips the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
PORT, METRICS_PORT = 18741, 18742
MiB = 1 << 20
ENGINE = {"model": "tiny-llama", "max_model_len": 4096, "num_kv_blocks": 48}
LMCACHE_OVERLAY = Path.home() / ".cache/llmd_ray/lmcache-overlay"  # pip install --target ... lmcache==0.5.6 (see README)


def router() -> dict:
    cfg = yaml.safe_load((ROOT / "serve_configs/kv_tiers.yaml").read_text())
    return cfg["applications"][0]["args"]["router"]


def systems(disk_root: str) -> dict[str, dict]:
    """label -> app args (``env``: extra environment of the phase's Ray cluster)."""
    local = {"memory_bytes": 32 * MiB, "disk_dir": f"{disk_root}/disk", "disk_bytes": 512 * MiB}
    return {
        "none": {},
        "local": {"kv_tiers": local},
        # The shared tier uploads from the local pool, so it needs one: a small staging pool (~21 blocks).
        "shared": {"kv_tiers": {"memory_bytes": 8 * MiB, "shared": True, "shared_bytes": 256 * MiB}},
        "both": {"kv_tiers": {**local, "shared": True, "shared_bytes": 256 * MiB}},
        "lmcache": {
            "engine": {"engine_kwargs": {"kv_transfer_config": {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}}},
            "env": {"PYTHONPATH": f"{LMCACHE_OVERLAY}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"),
                    "LMCACHE_CHUNK_SIZE": "128", "LMCACHE_LOCAL_CPU": "True", "LMCACHE_MAX_LOCAL_CPU_SIZE": "0.5"},
        },
    }


def app_args(spec: dict, replicas: int = 2) -> dict:
    engine = {**ENGINE, **spec.get("engine", {})}
    out = {"num_replicas": replicas, "engine": engine, "router": router()}
    if "kv_tiers" in spec:
        out["kv_tiers"] = {"min_load_blocks": 1, **spec["kv_tiers"]}
    return out


def start_cluster(env: dict) -> None:
    import ray
    from ray import serve

    os.environ.update(env)  # the raylet and its workers inherit the driver's environment
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _metrics_export_port=METRICS_PORT,
             _system_config={"metrics_report_interval_ms": 1000}, runtime_env={"env_vars": {"PYTHONHASHSEED": "0", **env}})
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})


def stop_cluster(env: dict) -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        for k in env:
            os.environ.pop(k, None)


def deploy(args: dict) -> float:
    from ray import serve

    from llmd_ray import build_app

    t0 = time.perf_counter()
    serve.run(build_app(args), name="kvb", route_prefix="/")
    return time.perf_counter() - t0


def scrape_tiers() -> dict[str, float]:
    """``metric[tier]`` -> cluster sum of the llmd_kv_tier_* series (counters and gauges)."""
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"ray_llmd_kv_tier_(\w+?)(?:_total)?\{(.*)\}\s+(\S+)$", line)
        if not m or m.group(1).endswith("_created"):
            continue
        tier = re.search(r'tier="([^"]*)"', m.group(2))
        key = f"{m.group(1)}[{tier.group(1) if tier else ''}]"
        out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


async def run_phase(label: str, spec: dict, cfg, out: Path, salt: int) -> dict:
    from llmd_ray.bench.benchmark import RunRequest, run_benchmark

    env = spec.get("env", {})
    start_cluster(env)
    try:
        startup = deploy(app_args(spec))
        res = await run_benchmark(cfg, RunRequest(base_url=f"http://127.0.0.1:{PORT}", out_dir=out, salt=salt,
                                                  label=label, progress=False))
        await asyncio.sleep(3)  # one more metrics report
        tiers = scrape_tiers() if "kv_tiers" in spec else {}
    finally:
        stop_cluster(env)
    s = res.summary
    return {"system": label, "startup_s": startup, "cache_hit_rate": s.cache_hit_rate,
            "ttft_p50_ms": s.ttft_ms.p50, "ttft_p90_ms": s.ttft_ms.p90, "request_throughput": s.request_throughput,
            "output_throughput": s.output_throughput, "goodput": s.goodput, "success_rate": s.success_rate,
            "tiers": tiers}


def ceiling(w) -> float:
    """Cached fraction with one unbounded cache: each group's first prompt misses, the rest hit the prefix."""
    full = w.system_prompt_len // 128 * 128
    n = w.num_groups * w.prompts_per_group
    return (n - w.num_groups) * full / (n * (w.system_prompt_len + w.question_len))


def cmd_compare(a) -> dict:
    from llmd_ray.bench.config import load_config_file, validate_config

    cfg = validate_config(load_config_file(a.workload), a.workload)
    out = Path(a.out) / "compare"
    labels = a.systems.split(",")
    specs = systems(a.disk_root)
    rows = []
    if a.merge and (out / "rows.json").exists():  # re-run some systems, keep the others' rows
        rows = [r for r in json.loads((out / "rows.json").read_text()) if r["system"] not in labels]
        labels_all = list(dict.fromkeys([r["system"] for r in rows] + labels))
    else:
        labels_all = labels
    for i in range(a.rounds):
        for label in labels:
            shutil.rmtree(a.disk_root, ignore_errors=True)
            print(f"[kv_tiers] round {i} {label}", file=sys.stderr, flush=True)
            try:
                row = asyncio.run(run_phase(label, specs[label], cfg, out / f"{label}_phase{i}", i))
            except Exception as e:  # noqa: BLE001 - recorded, the other systems still run
                row = {"system": label, "error": f"{type(e).__name__}: {e}"[:2000]}
            row["round"] = i
            rows.append(row)
            print(f"[kv_tiers] {json.dumps({k: v for k, v in row.items() if k != 'tiers'})}", file=sys.stderr, flush=True)
            (out / "rows.json").parent.mkdir(parents=True, exist_ok=True)
            (out / "rows.json").write_text(json.dumps(rows, indent=1))
    base = {r["round"]: r for r in rows if r["system"] == "none" and "error" not in r}
    ratios: dict[str, dict] = {}
    for label in labels_all:
        rs = [r for r in rows if r["system"] == label and "error" not in r and r["round"] in base]
        ratios[label] = {k: statistics.fmean(r[k] / base[r["round"]][k] for r in rs) if rs else None
                         for k in ("ttft_p50_ms", "ttft_p90_ms", "request_throughput", "cache_hit_rate")}
    return {"workload": a.workload, "engine": ENGINE, "ceiling_cache_hit_rate": ceiling(cfg.workload),
            "vs_none": ratios, "rows": rows}


async def _ttft(client: httpx.AsyncClient, prompt: list[int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = await client.post("/v1/completions", json={"model": "tiny-llama", "prompt": prompt, "max_tokens": 1})
    r.raise_for_status()
    return time.perf_counter() - t0, r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]


async def crossover_run(lengths: list[int], trials: int, seed: int) -> list[dict]:
    from ray import serve

    server = serve.get_deployment_handle("LLMServer", app_name="kvb")
    rng = random.Random(seed)
    rows = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=300) as c:
        await _ttft(c, [rng.randrange(10, 4000) for _ in range(300)])  # warm-up
        for L in lengths:
            for t in range(trials):
                prompt = [rng.randrange(10, 4000) for _ in range(L * 128 + 16)]
                cold, cached0 = await _ttft(c, prompt)
                await asyncio.sleep(1.0)  # the asynchronous save lands
                await server.reset_prefix_cache.remote()
                loaded, cached1 = await _ttft(c, prompt)
                rows.append({"blocks": L, "trial": t, "recompute_s": cold, "load_s": loaded,
                             "cached_cold": cached0, "cached_loaded": cached1})
    return rows


def cmd_crossover(a) -> dict:
    lengths = [int(x) for x in a.lengths.split(",")]
    out: dict = {"lengths_blocks": lengths}
    for min_load, key in ((1, "rows"), (a.skip_check_min_load, "skip_check")):
        start_cluster({})
        try:
            deploy(app_args({"kv_tiers": {"memory_bytes": 256 * MiB, "min_load_blocks": min_load}}, replicas=1))
            ls = lengths if key == "rows" else [x for x in lengths if x < min_load][:2]
            out[key] = asyncio.run(crossover_run(ls, a.trials if key == "rows" else 1, a.seed))
        finally:
            stop_cluster({})
    per = {}
    for L in lengths:
        rs = [r for r in out["rows"] if r["blocks"] == L]
        per[L] = {"recompute_ms": 1000 * statistics.median(r["recompute_s"] for r in rs),
                  "load_ms": 1000 * statistics.median(r["load_s"] for r in rs),
                  "all_loaded": all(r["cached_loaded"] >= L * 128 for r in rs)}
    out["per_length"] = per
    out["crossover_blocks"] = next((L for L in lengths if per[L]["load_ms"] < per[L]["recompute_ms"]), None)
    out["skip_check_min_load_blocks"] = a.skip_check_min_load
    out["skip_check_ok"] = all(r["cached_loaded"] == 0 for r in out["skip_check"])
    return out


def plot(result: dict, out: Path, which: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if which == "crossover":
        per = {int(k): v for k, v in result["per_length"].items()}  # JSON keys are strings after a round trip
        ls = sorted(per)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([128 * L for L in ls], [per[L]["recompute_ms"] for L in ls], "o-", label="recompute (cold)")
        ax.plot([128 * L for L in ls], [per[L]["load_ms"] for L in ls], "s-", label="load from memory tier")
        ax.set_xlabel("prefix tokens (full 128-token blocks)")
        ax.set_ylabel("TTFT p50 (ms)")
        ax.set_title("KV tier load vs recompute, tiny-llama float32, 1 CPU core")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "crossover.png", dpi=110)
        return
    rows = [r for r in result["rows"] if "error" not in r]
    order = ["none", "local", "shared", "both", "lmcache"]
    labels = sorted(dict.fromkeys(r["system"] for r in rows), key=lambda x: order.index(x) if x in order else len(order))
    figs = (("cache_hit_rate", "cached fraction of prompt tokens"), ("ttft_p50_ms", "TTFT p50 (ms)"),
            ("ttft_p90_ms", "TTFT p90 (ms)"), ("request_throughput", "requests/s"))
    fig, axes = plt.subplots(1, len(figs), figsize=(4 * len(figs), 4))
    for ax, (key, title) in zip(axes, figs):
        vals = [statistics.fmean(r[key] for r in rows if r["system"] == s) for s in labels]
        ax.bar(labels, vals, color=["grey", "tab:blue", "tab:purple", "tab:orange", "tab:red"][: len(labels)])
        if key.startswith("ttft"):
            ax.set_yscale("log")  # a broken system (LMCache on CPU) is minutes, the others under seconds
        if key == "cache_hit_rate":
            ax.axhline(result["ceiling_cache_hit_rate"], color="k", ls="--", lw=0.8, label="one unbounded cache")
            ax.legend(fontsize=8)
        ax.set_title(title)
    fig.suptitle("KV tiers under KV pressure (prefix working set ~1.8x the cluster's engine caches)")
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--workload", default=str(ROOT / "bench/kv_tiers/workload.yaml"))
    c.add_argument("--systems", default="none,local,shared,both,lmcache")
    c.add_argument("--rounds", type=int, default=1)
    c.add_argument("--merge", action="store_true", help="keep rows.json's rows of systems not run now")
    c.add_argument("--disk-root", default="/tmp/llmd-kv-tiers-bench")
    x = sub.add_parser("crossover")
    x.add_argument("--lengths", default="1,2,3,4,6,8,12,16,24")
    x.add_argument("--trials", type=int, default=3)
    x.add_argument("--skip-check-min-load", type=int, default=4)
    x.add_argument("--seed", type=int, default=3)
    for p in (c, x):
        p.add_argument("--out", default=str(ROOT / "bench/results/kv_tiers"))
    a = ap.parse_args()
    out = Path(a.out)
    result = cmd_compare(a) if a.cmd == "compare" else cmd_crossover(a)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.cmd}.json").write_text(json.dumps(result, indent=1, default=str))
    plot(result, out, a.cmd)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "skip_check")}, indent=1, default=str))


if __name__ == "__main__":
    main()
