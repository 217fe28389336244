"""`serve run serve_configs/pd.yaml` smoke: the P/D config serves correct output through the OpenAI API.

    python bench/pd/serve_run_smoke.py > bench/results/pd/serve_run_smoke.json

Starts the config with the venv's `serve run` (its own Ray cluster, port 8000), then:
1. a fresh 2,000-token prompt (greedy, 16 tokens): above the prefix decider's 512 uncached tokens, so the
   decode replica has it prefilled remotely; its `cached_tokens` are the blocks imported from the prefill
   replica (vLLM counts connector-loaded tokens as cached);
2. the same prompt again: now held by the decode replica, so it prefills locally (nothing to move); the
   text must be identical to 1 (remote prefill + KV handoff == local prefill, token for token);
3. a 100-token prompt (below the threshold: local);
4. a streamed chat completion through the unmodified `openai` client.
Stops the server (SIGINT) at the end.
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
CONFIG = str(ROOT / "serve_configs/pd.yaml")


def complete(c: httpx.Client, prompt: list[int], n: int) -> dict:
    t0 = time.perf_counter()
    r = c.post("/v1/completions", json={"model": "tiny-llama", "prompt": prompt, "max_tokens": n, "temperature": 0,
                                        "ignore_eos": True})
    body = r.json()
    usage = body.get("usage", {})
    return {"status": r.status_code, "prompt_tokens": usage.get("prompt_tokens"),
            "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            "completion_tokens": usage.get("completion_tokens"), "e2e_s": round(time.perf_counter() - t0, 3),
            "text": body["choices"][0]["text"] if r.status_code == 200 else body}


def main() -> None:
    from openai import OpenAI

    rng = random.Random(11)
    long_prompt = [rng.randrange(10, 4000) for _ in range(2000)]
    short_prompt = [rng.randrange(10, 4000) for _ in range(100)]
    out: dict = {"config": "serve_configs/pd.yaml"}
    t0 = time.monotonic()
    with ServerProcess(serve_run_command(CONFIG), URL, health_path=health_path_for(CONFIG), startup_timeout_s=600,
                       log_path="/tmp/pd_serve_run.log"):
        out["startup_s"] = round(time.monotonic() - t0, 1)
        with httpx.Client(base_url=URL, timeout=300) as c:
            out["remote_prefill"] = complete(c, long_prompt, 16)
            out["local_prefill_same_prompt"] = complete(c, long_prompt, 16)
            out["short_local"] = complete(c, short_prompt, 16)
        client = OpenAI(base_url=f"{URL}/v1", api_key="none")
        stream = client.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "Say hello to P/D."}], max_tokens=12,
            temperature=0, stream=True)
        chunks = [ch.choices[0].delta.content or "" for ch in stream if ch.choices]
        out["chat_stream"] = {"chunks": len(chunks), "text": "".join(chunks)}
    a, b = out["remote_prefill"], out["local_prefill_same_prompt"]
    out["identical_text_remote_vs_local_prefill"] = a["text"] == b["text"]
    out["ok"] = (all(r["status"] == 200 for r in (a, b, out["short_local"])) and out["identical_text_remote_vs_local_prefill"]
                 and (a["cached_tokens"] or 0) > 0 and out["chat_stream"]["chunks"] > 0)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
