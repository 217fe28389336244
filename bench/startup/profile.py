"""Where an engine replica's start-up goes (issue 18 item 4): ``serve run`` of a config, timed from the user's
side (``serve run`` started -> the app's /health answering 200 -> first completion answered), with each engine replica's own marks and
phases (``LLMServer.startup_profile``) and vLLM's engine-core log lines, over ``--rounds`` fresh starts.

Phases per replica (seconds): ``scheduled`` (``serve run`` started -> the replica's process started: Ray and
Serve start, controller, worker process spawn), ``imports`` (process started -> ``LLMServer.__init__`` entered:
the worker's own imports and deserialising the deployment), ``resolve_model``, ``import_vllm``,
``build_engine`` (vLLM's AsyncLLM: engine-core process, model load, KV cache), ``warmup``, ``features``
(engine started -> replica ready), and ``to_running`` (the last replica ready -> the app's /health answering 200
to the client: health checks and the controller's notice).

    .venv/bin/python bench/startup/profile.py --config serve_configs/default.yaml --rounds 3 \\
        --out bench/results/startup/default.json

A benchmark: run it alone on the machine. ``serve_run_to_running_s`` is ``serve run`` -> /health 200 (the key
predates the wording). Compare two versions side by side with ``bench/startup/compare.py``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VLLM_LINES = {
    "vllm_init_engine_s": re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)"),
    "vllm_load_weights_s": re.compile(r"Loading weights took ([\d.]+)"),
}
DRIVER = """
import json, sys, ray
from ray import serve
ray.init(address="auto", namespace="serve", log_to_driver=False)
h = serve.get_deployment_handle(sys.argv[1], app_name=sys.argv[2])
seen = {}
for _ in range(60):
    p = h.startup_profile.remote().result(timeout_s=30)
    seen[p["pid"]] = p
    if len(seen) >= int(sys.argv[3]):
        break
print("RESULT " + json.dumps(list(seen.values())))
"""


def wait(cond, timeout_s: float, what: str, period_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            out = cond()
        except Exception:
            out = None
        if out:
            return out
        time.sleep(period_s)
    raise TimeoutError(f"{what} within {timeout_s} s")


def vllm_log_figures(session_logs: str) -> list[dict]:
    """vLLM's own start-up lines, one dict per engine-core process that logged them."""
    out = []
    for path in sorted(glob.glob(os.path.join(session_logs, "worker-*.err")) +
                       glob.glob(os.path.join(session_logs, "worker-*.out"))):
        text = Path(path).read_text(errors="replace")
        found = {k: float(m.group(1)) for k, rx in VLLM_LINES.items() if (m := rx.search(text))}
        if found:
            out.append(found)
    return out


def one_round(config: Path, deployment: str, app: str, replicas: int, port: int) -> dict:
    subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.time()
    proc = subprocess.Popen([str(BIN / "serve"), "run", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait(lambda: httpx.get(f"{url}/-/routes", timeout=2).status_code == 200, 300, "the proxy to answer")
        t_proxy = time.time()

        def running():  # the app's own health route (200 once its replicas run); no process per poll
            return httpx.get(f"{url}/health", timeout=5).status_code == 200

        wait(running, 300, "the app to run", period_s=0.2)
        t_running = time.time()
        models = httpx.get(f"{url}/v1/models", timeout=30).json()
        model = models["data"][0]["id"]
        r = httpx.post(f"{url}/v1/completions", json={"model": model, "prompt": "Hello", "max_tokens": 4},
                       timeout=120)
        r.raise_for_status()
        t_first = time.time()
        out = subprocess.run([sys.executable, "-c", DRIVER, deployment, app, str(replicas)],
                             capture_output=True, text=True, timeout=300)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        profiles = json.loads(line[-1][7:]) if line else []
        logs = vllm_log_figures("/tmp/ray/session_latest/logs")
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True)
    rows = []
    for p in sorted(profiles, key=lambda p: p["rank"] or 0):
        m, ph = p["marks"], p["phases"]
        rows.append({"rank": p["rank"], "scheduled": (m["process_started"] or m["init_entered"]) - t0,
                     "imports": m["init_entered"] - (m["process_started"] or m["init_entered"]),
                     **{k.removesuffix("_s"): v for k, v in ph.items()},
                     "features": m["ready"] - m["engine_started"],
                     "replica_total": m["ready"] - (m["process_started"] or m["init_entered"]),
                     "ready_after_serve_run": m["ready"] - t0})
    last_ready = max((r["ready_after_serve_run"] for r in rows), default=None)
    return {"serve_run_to_proxy_s": t_proxy - t0, "serve_run_to_running_s": t_running - t0,
            "serve_run_to_first_completion_s": t_first - t0,
            "to_running_after_last_ready_s": (t_running - t0 - last_ready) if last_ready else None,
            "replicas": rows, "vllm": logs}


def summarise(rounds: list[dict]) -> dict:
    def spread(xs):
        xs = [x for x in xs if x is not None]
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)} if xs else None

    keys = sorted({k for r in rounds for row in r["replicas"] for k in row if k != "rank"})
    vkeys = sorted({k for r in rounds for v in r["vllm"] for k in v})
    return {
        **{k: spread([r[k] for r in rounds]) for k in ("serve_run_to_proxy_s", "serve_run_to_running_s",
                                                        "serve_run_to_first_completion_s",
                                                        "to_running_after_last_ready_s")},
        "replica_phases_s": {k: spread([row.get(k) for r in rounds for row in r["replicas"]]) for k in keys},
        "vllm_phases_s": {k: spread([v.get(k) for r in rounds for v in r["vllm"]]) for k in vkeys},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "serve_configs/default.yaml")
    ap.add_argument("--deployment", default="LLMServer")
    ap.add_argument("--app", default="default")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rounds = []
    for i in range(a.rounds):
        load_before = os.getloadavg()[0]
        r = one_round(a.config, a.deployment, a.app, a.replicas, a.port)
        r["loadavg_1m_before"] = load_before
        rounds.append(r)
        print(f"round {i}: running {r['serve_run_to_running_s']:.1f}s, first completion "
              f"{r['serve_run_to_first_completion_s']:.1f}s; replicas "
              + "; ".join(", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "rank" and v is not None)
                          for row in r["replicas"]), flush=True)
    result = {"config": str(a.config), "rounds": rounds, "summary": summarise(rounds),
              "cpu_count": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
