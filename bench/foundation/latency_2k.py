"""TTFT and decode tokens/s of one 2,000-token prompt on a running llmd-ray app.

    python bench/foundation/latency_2k.py --base-url http://127.0.0.1:8000 --out bench/results/foundation

Sequential requests (one at a time, random token ids so nothing is cached),
streamed through the unmodified `openai` client; prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from openai import OpenAI


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--prompt-len", type=int, default=2000)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--out", default="bench/results/foundation")
    a = ap.parse_args()
    client = OpenAI(base_url=a.base_url + "/v1", api_key="unused")
    rng = random.Random(0)
    trials = []
    for _ in range(a.trials):
        ids = [rng.randrange(0, 4000) for _ in range(a.prompt_len)]
        t0, ttft, n, cached = time.perf_counter(), None, 0, 0
        for ch in client.completions.create(model="tiny-llama", prompt=ids, max_tokens=a.output_len, stream=True,
                                            temperature=0, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}):
            if ttft is None and ch.choices and ch.choices[0].text:
                ttft = time.perf_counter() - t0
            if ch.usage:
                n, cached = ch.usage.completion_tokens, ch.usage.prompt_tokens_details.cached_tokens
        e2e = time.perf_counter() - t0
        trials.append({"ttft_s": ttft, "decode_tok_s": (n - 1) / (e2e - ttft), "e2e_s": e2e, "cached_tokens": cached})
        print(json.dumps(trials[-1]))
    summary = {k: statistics.median(t[k] for t in trials) for k in ("ttft_s", "decode_tok_s", "e2e_s")}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency_2k.json").write_text(json.dumps({"args": vars(a), "median": summary, "trials": trials}, indent=2))
    print("median:", json.dumps(summary))


if __name__ == "__main__":
    main()
