"""`serve run serve_configs/kv_tiers.yaml` smoke: the config serves, and a prefix the engines evicted comes back from the tiers.

    python bench/kv_tiers/serve_run_smoke.py > bench/results/kv_tiers/serve_run_smoke.json

Starts the config with the venv's `serve run` (its own Ray cluster, port 8000), sends 10 prompts of 20
blocks (210 blocks against the engines' 2 x 64), then the first prompt again, and reports each answer's
status, cached tokens and serving replica. Stops the server (SIGINT) at the end.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from llmd_ray.bench.server import ServerProcess, health_path_for, serve_run_command  # noqa: E402

URL = "http://127.0.0.1:8000"
CONFIG = str(ROOT / "serve_configs/kv_tiers.yaml")


def main() -> None:
    rng = random.Random(5)
    prompts = [[rng.randrange(10, 4000) for _ in range(20 * 128 + 8)] for _ in range(10)]
    out: dict = {"config": "serve_configs/kv_tiers.yaml", "requests": []}
    t0 = time.monotonic()
    with ServerProcess(serve_run_command(CONFIG), URL, health_path=health_path_for(CONFIG), startup_timeout_s=600,
                       log_path="/tmp/kv_tiers_serve_run.log"):
        out["startup_s"] = round(time.monotonic() - t0, 1)
        with httpx.Client(base_url=URL, timeout=300) as c:
            for i, p in enumerate(prompts + prompts[:1]):
                time.sleep(1.0)  # background saves land
                r = c.post("/v1/completions", json={"model": "tiny-llama", "prompt": p, "max_tokens": 4})
                body = r.json()
                out["requests"].append({"i": i, "status": r.status_code, "prompt_tokens": len(p),
                                        "cached_tokens": body.get("usage", {}).get("prompt_tokens_details", {}).get("cached_tokens"),
                                        "replica": r.headers.get("x-llmd-replica")})
    last = out["requests"][-1]
    out["ok"] = all(r["status"] == 200 for r in out["requests"])
    out["resent_first_prompt_cached_tokens"] = last["cached_tokens"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
