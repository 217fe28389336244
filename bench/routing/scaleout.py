"""Routers that scale out (issue 16 item 3): several ingress replicas, each with its own router.

Two modes, both over the engines of ``serve_llmd_pressure.yaml`` (2 replicas x 128 KV blocks: KV pressure)
and, by default, the ``shared_prefix.yaml`` workload (any harness workload file and flags can be given):

``load``: the same load against 1, 2 and 4 ingress replicas, with the routers sharing their decisions
(``router.share_decisions: true``, the default with more than one ingress replica) and each on its own
(``false``). One serve config per system (written to OUT/configs), run by the harness's N-systems compare
(``python -m llmd_ray.bench run --system ...``: interleaved rounds, each phase its own ``serve run``), then
a table of KV hit rate and TTFT p50 (median over rounds) per ingress count, shared vs alone.

``kill``: one ingress replica killed under load (``ray.kill`` of its actor, Serve replaces it). Reports the
requests that failed (they must be requests in flight at the kill, each ended with an error rather than
hanging) and the KV hit rate and TTFT p50 before the kill, in the ``--recover-s`` after it, and after that;
with ``--control`` (default) the same windows of a run without the kill, on a fresh server.

    .venv/bin/python bench/routing/scaleout.py load --ingress 1,2,4 --phases 3 --out bench/results/routing/scaleout
    .venv/bin/python bench/routing/scaleout.py kill --ingress 2 --kill-at 50 --out bench/results/routing/scaleout_kill

Arguments the script does not know go to the harness (``--rate 1.5``, ``--num-requests 16``, ``--warmup 0``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASE_CONFIG = HERE / "serve_llmd_pressure.yaml"
WORKLOAD = HERE / "shared_prefix.yaml"


# ------------------------------------------------------------------ serve configs
def serve_config(ingress: int, share: bool, base_url: str, base: Path = BASE_CONFIG) -> dict:
    cfg = yaml.safe_load(base.read_text())
    url = urlparse(base_url)
    cfg["http_options"] = {"host": url.hostname, "port": url.port or 80}
    args = cfg["applications"][0]["args"]
    args["ingress_replicas"] = ingress
    args.setdefault("router", {})["share_decisions"] = share
    return cfg


def label(ingress: int, share: bool) -> str:
    return f"ingress{ingress}" + ("" if ingress == 1 else "-shared" if share else "-alone")


def write_configs(out: Path, counts: list[int], base_url: str, base: Path, alone: bool = True) -> dict[str, Path]:
    (out / "configs").mkdir(parents=True, exist_ok=True)
    systems = {}
    for n in counts:
        for share in (False,) if n == 1 else (False, True) if alone else (True,):
            path = out / "configs" / f"{label(n, share)}.yaml"
            path.write_text(yaml.safe_dump(serve_config(n, share, base_url, base), sort_keys=False))
            systems[label(n, share)] = path
    return systems


# ------------------------------------------------------------------- load mode
def run_load(a: argparse.Namespace, harness: list[str]) -> int:
    systems = write_configs(a.out, a.ingress, a.base_url, a.base_config, a.alone)
    cmd = [sys.executable, "-m", "llmd_ray.bench", "run", str(a.workload), "--base-url", a.base_url,
           "--out", str(a.out), "--phases", str(a.phases), "--baseline", next(iter(systems))]
    for name, path in systems.items():
        cmd += ["--system", f"{name}=serve:{path}"]
    print("running:", " ".join(cmd + harness), file=sys.stderr, flush=True)
    rc = subprocess.run(cmd + harness, cwd=ROOT).returncode
    summary = summarize_load(a.out)
    (a.out / "scaleout.json").write_text(json.dumps(summary, indent=2))
    print(load_table(summary))
    return rc


def summarize_load(out: Path) -> dict:
    comp = json.loads((out / "compare_systems.json").read_text())
    rows = {}
    for s in comp["systems"]:
        hits, ttfts, failed = [], [], 0
        for rel in s["results"]:
            if rel is None:
                failed += 1
                continue
            summ = json.loads((out / rel).read_text())["summary"]
            if summ.get("cache_hit_rate") is not None:
                hits.append(summ["cache_hit_rate"])
            ttfts.append(summ["ttft_ms"]["p50"])
        rows[s["label"]] = {"kv_hit_rate": _median(hits), "ttft_p50_ms": _median(ttfts), "rounds": len(ttfts),
                            "kv_hit_rate_per_round": hits, "ttft_p50_ms_per_round": ttfts, "failed_phases": failed}
    return {"valid": comp.get("valid"), "invalid_reasons": comp.get("invalid_reasons", []), "systems": rows}


def load_table(summary: dict) -> str:
    lines = ["| system | KV hit rate | TTFT p50 (ms) | rounds |", "|---|---|---|---|"]
    for name, r in summary["systems"].items():
        lines.append(f"| {name} | {_fmt(r['kv_hit_rate'], '.1%')} | {_fmt(r['ttft_p50_ms'], '.0f')} | {r['rounds']} |")
    if summary.get("valid") is False:
        lines.insert(0, "!! INVALID COMPARISON: " + "; ".join(summary["invalid_reasons"]))
    return "\n".join(lines)


# ------------------------------------------------------------------- kill mode
def killer() -> int:
    """Subprocess: connect to the local Ray cluster, name an ingress replica, kill it on a line from stdin."""
    import ray

    ray.init(address="auto", namespace="serve", logging_level="ERROR", log_to_driver=False)
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["namespace"] == "serve" and "#OpenAIIngress#" in a["name"])
    if not names:
        print(json.dumps({"error": "no live OpenAIIngress replica"}), flush=True)
        return 1
    target = ray.get_actor(names[0], namespace="serve")
    print(json.dumps({"ready": names}), flush=True)
    sys.stdin.readline()
    at = time.time()
    ray.kill(target, no_restart=True)
    print(json.dumps({"killed": names[0], "at": at}), flush=True)
    return 0


async def _kill_after(started: asyncio.Event, delay_s: float, proc: subprocess.Popen) -> dict:
    await started.wait()
    await asyncio.sleep(delay_s)
    proc.stdin.write("kill\n")
    proc.stdin.flush()
    return json.loads(await asyncio.to_thread(proc.stdout.readline))


def one_run(a: argparse.Namespace, harness: list[str], out: Path, kill: bool) -> dict:
    from llmd_ray.bench.benchmark import RunRequest, run_benchmark
    from llmd_ray.bench.cli import build_parser
    from llmd_ray.bench.flags import config_from_args
    from llmd_ray.bench.report import load_records
    from llmd_ray.bench.runner import Runner
    from llmd_ray.bench.server import ServerProcess, serve_run_command

    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "serve.yaml"
    cfg_path.write_text(yaml.safe_dump(serve_config(a.ingress[0], a.share, a.base_url, a.base_config), sort_keys=False))
    bench_cfg = config_from_args(build_parser().parse_args(["run", str(a.workload), "--out", str(out), *harness]))
    server = ServerProcess(serve_run_command(str(cfg_path)), a.base_url, log_path=out / "server.log").start()
    proc = None
    try:
        if kill:
            proc = subprocess.Popen([sys.executable, __file__, "_killer"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, cwd=ROOT)
            ready = json.loads(proc.stdout.readline())
            if "ready" not in ready:
                raise RuntimeError(f"killer: {ready}")

        async def go():
            started, calls, plain = asyncio.Event(), [], Runner.run

            async def run(self, jobs):  # the harness's runs: the warmup's (if any), then the measured one
                calls.append(len(jobs))
                if len(calls) == (2 if bench_cfg.warmup_requests else 1):
                    started.set()
                return await plain(self, jobs)

            Runner.run = run
            try:
                killer_task = asyncio.ensure_future(_kill_after(started, a.kill_at, proc)) if kill else None
                result = await run_benchmark(bench_cfg, RunRequest(a.base_url, out, progress=False))
                if killer_task is not None and not killer_task.done():
                    raise RuntimeError(f"the run ended before --kill-at {a.kill_at} s: lower it or send more requests")
                return result, killer_task.result() if killer_task is not None else None
            finally:
                Runner.run = plain
                if kill and not killer_task.done():
                    killer_task.cancel()

        result, killed = asyncio.run(go())
    finally:
        if proc is not None:
            proc.kill()
        server.stop()
    t0 = datetime.fromisoformat(result.started_at).timestamp()
    kill_s = killed["at"] - t0 if killed else a.kill_at_run_s
    return {"killed": killed, "kill_s": kill_s,
            **analyze([r.model_dump() for r in load_records(out)], kill_s, a.recover_s)}


def analyze(records: list[dict], kill_s: float, recover_s: float) -> dict:
    """Failures (in flight at the kill or not) and per-window KV hit rate / TTFT p50 around ``kill_s``."""

    def end(r):
        return r["sent_s"] + (r["e2e_ms"] or 0.0) / 1e3

    in_flight = [r for r in records if r["sent_s"] <= kill_s <= end(r)]
    failed = [r for r in records if not r["ok"]]
    windows = {"before": lambda s: s < kill_s, "recovering": lambda s: kill_s <= s < kill_s + recover_s,
               "after": lambda s: s >= kill_s + recover_s}
    out = {"in_flight_at_kill": len(in_flight), "failed": len(failed),
           "failed_not_in_flight_at_kill": sum(1 for r in failed if r not in in_flight),
           "failed_without_error": sum(1 for r in failed if not r["error"] and r["status_code"] in (None, 200)),
           "failed_by_timeout": sum(1 for r in failed if "timeout" in (r["error"] or "").lower()),
           "failure_kinds": _kinds(failed),
           "failures": [{k: r[k] for k in ("id", "sent_s", "e2e_ms", "status_code", "error")} for r in failed],
           "windows": {}}
    for name, inside in windows.items():
        rs = [r for r in records if inside(r["sent_s"])]
        ok = [r for r in rs if r["ok"] and r["cached_tokens"] is not None and r["input_tokens"]]
        cached, total = sum(r["cached_tokens"] for r in ok), sum(r["input_tokens"] for r in ok)
        out["windows"][name] = {"requests": len(rs), "failed": sum(1 for r in rs if not r["ok"]),
                                "kv_hit_rate": cached / total if total else None,
                                "ttft_p50_ms": _median([r["ttft_ms"] for r in rs if r["ok"] and r["ttft_ms"] is not None])}
    return out


def _kinds(failed: list[dict]) -> dict[str, int]:
    """``http_error``: an error status; ``stream_cut``: 200, then the connection closed mid-stream (what a killed
    ingress replica's streams get from the proxy); ``timeout``; ``other``."""
    out: dict[str, int] = {}
    for r in failed:
        err = (r["error"] or "").lower()
        kind = ("timeout" if "timeout" in err else "http_error" if r["status_code"] not in (None, 200)
                else "stream_cut" if "incomplete" in err or "closed" in err else "other")
        out[kind] = out.get(kind, 0) + 1
    return out


def run_kill(a: argparse.Namespace, harness: list[str]) -> int:
    report = {"ingress": a.ingress[0], "shared": a.share, "kill": one_run(a, harness, a.out / "kill", kill=True)}
    if a.control:
        a.kill_at_run_s = report["kill"]["kill_s"]  # the same windows, no kill
        report["control"] = one_run(a, harness, a.out / "control", kill=False)
    (a.out / "scaleout_kill.json").write_text(json.dumps(report, indent=2))
    print(kill_table(report))
    k = report["kill"]
    clean = k["failed_not_in_flight_at_kill"] == k["failed_without_error"] == k["failed_by_timeout"] == 0
    return 0 if clean else 1


def kill_table(report: dict) -> str:
    k = report["kill"]
    lines = [f"ingress replicas {report['ingress']} (shared: {report['shared']}); killed "
             f"{(k['killed'] or {}).get('killed')} at {k['kill_s']:.1f} s",
             f"in flight at the kill {k['in_flight_at_kill']}, failed {k['failed']} (not in flight at the kill: "
             f"{k['failed_not_in_flight_at_kill']}, without an error: {k['failed_without_error']}, by timeout: "
             f"{k['failed_by_timeout']}); kinds {k['failure_kinds']}",
             "| run | window | requests | failed | KV hit rate | TTFT p50 (ms) |", "|---|---|---|---|---|---|"]
    for run in ("kill", "control"):
        for name, w in report.get(run, {}).get("windows", {}).items():
            lines.append(f"| {run} | {name} | {w['requests']} | {w['failed']} | {_fmt(w['kv_hit_rate'], '.1%')} | "
                         f"{_fmt(w['ttft_p50_ms'], '.0f')} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------ util
def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_killer"]:
        return killer()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("load", "kill"))
    p.add_argument("--ingress", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="ingress replica counts (load: default 1,2,4; kill: one count, default 2)")
    p.add_argument("--workload", type=Path, default=WORKLOAD, help="harness workload file")
    p.add_argument("--base-config", type=Path, default=BASE_CONFIG, help="serve config the systems derive from")
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--phases", type=int, default=3, help="load: interleaved rounds")
    p.add_argument("--alone", action=argparse.BooleanOptionalAction, default=True,
                   help="load: also the routers not sharing (ingressN-alone) beside the sharing ones")
    p.add_argument("--share", action=argparse.BooleanOptionalAction, default=True, help="kill: routers share decisions")
    p.add_argument("--kill-at", type=float, default=50.0, help="kill: seconds after the run is started")
    p.add_argument("--recover-s", type=float, default=10.0, help="kill: the window after the kill reported apart")
    p.add_argument("--control", action=argparse.BooleanOptionalAction, default=True, help="kill: also a run without it")
    a, harness = p.parse_known_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.mode == "load":
        a.ingress = a.ingress or [1, 2, 4]
        return run_load(a, harness)
    a.ingress = a.ingress or [2]
    return run_kill(a, harness)


if __name__ == "__main__":
    sys.exit(main())
