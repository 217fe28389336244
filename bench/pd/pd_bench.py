"""P/D benchmarks on this machine, one run, systems deployed one after another (at most two engines, one per core).

    python bench/pd/pd_bench.py handoff --out bench/results/pd   # KV handoff cost against prompt length
    python bench/pd/pd_bench.py mixed   --out bench/results/pd   # short-request ITL under long prefills
    python bench/pd/pd_bench.py decider --out bench/results/pd   # where splitting loses, and the deciders

handoff: sequential streamed completions of random token ids (nothing cached) at 256..4,000 tokens on
    P/D with splitting forced (`always`; object store and NIXL), P/D with the prefix decider, and
    aggregated (one LLMServer). Per request: TTFT at the client, and for the object store the handoff
    the decode replica measured (bytes, and the time from sending the prefill to the import buffer
    being written, minus the prefill engine's own time).
mixed: 3 closed-loop short requests (64 in / 64 out) plus a long one (2,000 in / 100 out, 20:1) every
    4 s, for 60 s: short-request ITL and TTFT, on aggregated (2 LLMServer replicas, pow2), llmd-ray
    P/D 1P+1D with each decider (prefix, cost, always, never) and with NIXL, and Ray Serve LLM's own
    `build_pd_openai_app` (NixlConnector, CPU buffers; bench/pd/peers/ray_serve_llm_pd.py).
decider: on an idle system, TTFT against the tokens the decode replica lacks: fresh prompts of 64..2,048
    tokens, and a second chat turn (2,000 tokens held, 128 new); `always` vs `never` vs the deciders.
Engines everywhere: the tiny model, float32, eager, max_model_len 4,096, 128 KV blocks of 128 tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # noqa: E402

PORT = 18731
PEER_PORT = 18741
PEER = Path(__file__).resolve().parent / "peers" / "ray_serve_llm_pd.py"
ENGINE = {"model": "tiny-llama", "max_model_len": 4096, "num_kv_blocks": 128}
OUT = Path("bench/results/pd")


def start(ray_port: int = PORT):
    import ray
    from ray import serve

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}})
    serve.start(http_options={"host": "127.0.0.1", "port": ray_port})


def deploy(kind: str, **kw) -> str:
    from ray import serve

    from llmd_ray import build_app

    t0 = time.perf_counter()
    if kind == "aggregated":
        app = build_app({"num_replicas": kw.get("replicas", 1), "engine": ENGINE, "router": {"policy": "pow2"}})
    else:
        app = build_app({"engine": ENGINE, "pd": {"transport": kw.get("transport", "object_store"),
                                                  "decider": {"policy": kw.get("policy", "always")}},
                         "variants": [{"name": "prefill", "role": "prefill"}, {"name": "decode", "role": "decode"}]})
    serve.run(app, name="bench", route_prefix="/")
    print(f"{kind} {kw} ready in {time.perf_counter() - t0:.0f}s", flush=True)
    return f"http://127.0.0.1:{PORT}"


def undeploy() -> None:
    from ray import serve

    serve.delete("bench")
    time.sleep(3)


async def pd_stats() -> dict:
    from ray import serve

    return await serve.get_deployment_handle("LLMServer-decode", app_name="bench").pd_stats.remote()


def object_store_stats(kind: str, kw: dict):
    """The decode replica's handoff counters, where there are any (object-store P/D)."""
    return pd_stats if kind == "pd" and kw.get("transport", "object_store") == "object_store" else None


class Peer:
    """A peer system in a process of its own (own Ray cluster), ready once its log says `ready on`."""

    def __init__(self, cmd: list[str], port: int, log: Path, timeout_s: float = 1500):
        self.log = log
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd + ["--port", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
        while "ready on" not in log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.perf_counter() - t0 > timeout_s:
                self.stop()
                raise RuntimeError(f"peer {cmd} did not start (exit {self.proc.returncode}); see {log}")
            time.sleep(2)
        self.start_s = time.perf_counter() - t0
        self.url = f"http://127.0.0.1:{port}"
        print(f"peer {cmd[-1]} ready in {self.start_s:.0f}s", flush=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(180)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def each_system(systems: list[tuple[str, str, dict]], only: str, run) -> dict:
    """Run `run(url, stats)` on each system in turn (deployed alone); a system that fails is recorded, not fatal."""
    result = {}
    for label, kind, kw in systems:
        if only and label not in only.split(","):
            continue
        if kw.get("transport") == "nixl" or kind == "peer":
            try:
                import nixl  # noqa: F401
            except ImportError:
                result[label] = {"skipped": "nixl is not installed"}
                continue
        peer = None
        try:
            if kind == "peer":
                peer = Peer(kw["cmd"], PEER_PORT, OUT / f"{label}.log")
                url, stats = peer.url, None
            else:
                url, stats = deploy(kind, **kw), object_store_stats(kind, kw)
            result[label] = asyncio.run(run(url, stats))
            if stats is not None:
                result[label]["pd_stats"] = asyncio.run(pd_stats())
            if peer is not None:
                result[label]["start_s"] = peer.start_s
        except Exception as exc:  # noqa: BLE001 - one failed system must not lose the others' figures
            result[label] = {"failed": f"{type(exc).__name__}: {exc}"}
        finally:
            peer.stop() if peer is not None else undeploy()
        print(label, json.dumps({k: v for k, v in result[label].items() if k != "rows"})[:800], flush=True)
    return result


def cmd_handoff(a) -> dict:
    lengths = [256, 512, 1024, 2048, 4000]

    async def run(url, stats):
        rows = await workloads.handoff_run(url, lengths, a.trials, stats, seed=1)
        return {"summary": workloads.summarize_handoff(rows), "rows": rows}

    return each_system([("pd_object_store", "pd", {"transport": "object_store", "policy": "always"}),
                        ("pd_nixl", "pd", {"transport": "nixl", "policy": "always"}),
                        ("pd_prefix_decider", "pd", {"transport": "object_store", "policy": "prefix"}),
                        ("aggregated", "aggregated", {"replicas": 1})], a.systems, run)


def cmd_mixed(a) -> dict:
    async def run(url, stats):
        return await workloads.mixed_run(url, a.seconds, a.long_every_s, seed=2)

    result = each_system([("aggregated_2", "aggregated", {"replicas": 2}),
                          ("pd_prefix", "pd", {"transport": "object_store", "policy": "prefix"}),
                          ("pd_cost", "pd", {"transport": "object_store", "policy": "cost"}),
                          ("pd_always", "pd", {"transport": "object_store", "policy": "always"}),
                          ("pd_never", "pd", {"transport": "object_store", "policy": "never"}),
                          ("pd_nixl_prefix", "pd", {"transport": "nixl", "policy": "prefix"}),
                          ("ray_serve_llm_pd", "peer", {"cmd": [sys.executable, str(PEER)]})], a.systems, run)
    base = result.get("aggregated_2", {}).get("short_itl_p99_s")
    if base:
        result["itl_p99_ratio_over_aggregated"] = {
            k: v["short_itl_p99_s"] / base for k, v in result.items() if isinstance(v, dict) and "short_itl_p99_s" in v}
    ray_pd = result.get("ray_serve_llm_pd", {}).get("short_itl_p99_s")
    if ray_pd:
        result["itl_p99_ratio_over_ray_serve_llm_pd"] = {
            k: v["short_itl_p99_s"] / ray_pd for k, v in result.items() if isinstance(v, dict) and "short_itl_p99_s" in v}
    return result


def cmd_decider(a) -> dict:
    lengths = [64, 256, 512, 1024, 2048]

    async def run(url, stats):
        rows = await workloads.decider_run(url, lengths, a.trials, stats, seed=3)
        return {"summary": workloads.summarize_decider(rows), "rows": rows}

    return each_system([("pd_always", "pd", {"transport": "object_store", "policy": "always"}),
                        ("pd_never", "pd", {"transport": "object_store", "policy": "never"}),
                        ("pd_prefix", "pd", {"transport": "object_store", "policy": "prefix"}),
                        ("pd_cost", "pd", {"transport": "object_store", "policy": "cost"})], a.systems, run)


def plot(result: dict, out: Path, which: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = {k: v for k, v in result.items() if isinstance(v, dict) and ("summary" in v or "short_itl_p99_s" in v)}
    if which == "handoff":
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for label, r in ok.items():
            xs = [int(n) for n in r["summary"]]
            ax1.plot(xs, [r["summary"][str(n)]["ttft_s"] for n in xs], marker="o", label=label)
        os_ = ok.get("pd_object_store", {}).get("summary", {})
        xs = [int(n) for n in os_ if "handoff_share_of_ttft" in os_[n]]
        ax2.plot(xs, [100 * os_[str(n)]["handoff_share_of_ttft"] for n in xs], marker="o", label="handoff % of TTFT")
        ax2b = ax2.twinx()
        ax2b.plot(xs, [os_[str(n)]["handoff_GBps"] for n in xs], marker="s", color="tab:red", label="GB/s")
        ax1.set(xlabel="prompt tokens", ylabel="TTFT median (s)", title="TTFT")
        ax2.set(xlabel="prompt tokens", ylabel="% of TTFT", title="object-store handoff")
        ax2b.set_ylabel("effective GB/s")
        ax1.legend()
    elif which == "mixed":
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
        labels = list(ok)
        width = 0.8 / 3
        for j, (key, name) in enumerate((("short_itl_p50_s", "p50"), ("short_itl_p99_s", "p99"),
                                         ("short_itl_p999_s", "p99.9"))):
            ax1.bar([i + (j - 1) * width for i in range(len(labels))],
                    [1e3 * ok[k].get(key, float("nan")) for k in labels], width, label=name)
        for j, (key, name) in enumerate((("short_ttft_p50_s", "p50"), ("short_ttft_p99_s", "p99"))):
            ax2.bar([i + (j - 0.5) * 0.4 for i in range(len(labels))], [1e3 * ok[k][key] for k in labels], 0.4,
                    label=name)
        for ax, title in ((ax1, "short-request ITL"), (ax2, "short-request TTFT")):
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
            ax.set(title=title, ylabel="ms (log)", yscale="log")
            ax.legend()
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for label, r in ok.items():
            keys = list(r["summary"])
            ax.plot(range(len(keys)), [1e3 * r["summary"][k]["ttft_s"] for k in keys], marker="o", label=label)
        ax.set_xticks(range(len(keys)), [k.replace("fresh:", "") .replace("second_turn:", "2nd turn +") for k in keys])
        ax.set(xlabel="tokens the decode replica lacks", ylabel="TTFT median (ms)", yscale="log",
               title="idle TTFT: split (always) vs local (never) vs the deciders")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{which}.png", dpi=120)


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["handoff", "mixed", "decider"])
    ap.add_argument("--out", default="bench/results/pd")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--long-every-s", type=float, default=4.0)
    ap.add_argument("--systems", default="", help="comma-separated subset of the command's systems")
    a = ap.parse_args()
    OUT = Path(a.out)
    OUT.mkdir(parents=True, exist_ok=True)
    start()
    result = {"handoff": cmd_handoff, "mixed": cmd_mixed, "decider": cmd_decider}[a.which](a)
    (OUT / f"{a.which}.json").write_text(json.dumps({"args": vars(a), "result": result}, indent=2))
    plot(result, OUT, a.which)
    print(json.dumps({k: v.get("summary", v) if isinstance(v, dict) else v for k, v in result.items()}, indent=1)[:6000])


if __name__ == "__main__":
    main()
