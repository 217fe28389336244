"""Run on the head as a Ray driver (``test_precise_hosts.py``): the precise index's prediction of cached tokens
against vLLM's ``cached_tokens``, for a sequence of prompts sent over HTTP to the app (as
``tests/integration/test_precise_routing.py`` does on one host). Prints ``RESULT <json>``: per prompt the
replica that served, the index's prediction for it, vLLM's count and whether it was the best holder."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import httpx
import ray
from ray import serve

BLOCK = 128


def tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(10, 4000) for _ in range(n)]


def sequence() -> list[list[int]]:
    rng = random.Random(21)
    a, b = tokens(rng, 3 * BLOCK), tokens(rng, 5 * BLOCK + 17)
    return [a + tokens(rng, 40), a + tokens(rng, 40), a[:BLOCK] + tokens(rng, 300), b, b[:4 * BLOCK],
            b + tokens(rng, 200), tokens(rng, 100), a[:2 * BLOCK] + b[:BLOCK],
            # cold prompts two at a time: the second goes to the other replica (the first holds one busy)
            *[tokens(rng, 2 * BLOCK + 5) for _ in range(4)]]


async def main(url: str, app: str) -> list[dict]:
    index = serve.get_deployment_handle("KVIndex", app_name=app)

    async def indexed(prompt):
        want, deadline = len(prompt) // BLOCK * BLOCK, time.monotonic() + 15
        while time.monotonic() < deadline:
            held = await index.lookup.remote(prompt, BLOCK, "0")
            if held and max(held.values()) >= want:
                return
            await asyncio.sleep(0.1)

    async def one(client, prompt):
        held = await index.lookup.remote(prompt, BLOCK, "0")
        r = await client.post("/v1/completions", json={"model": "tiny-llama", "prompt": prompt, "max_tokens": 2,
                                                       "ignore_eos": True})
        assert r.status_code == 200, r.text
        replica = r.headers.get("x-llmd-replica")
        return {"replica": replica, "len": len(prompt), "held": held,
                "predicted": min(held.get(replica, 0), (len(prompt) - 1) // BLOCK * BLOCK),
                "observed": r.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
                "followed": held.get(replica, 0) == max(held.values(), default=0)}

    out = []
    seq = sequence()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for prompt in seq[:8]:
            out.append(await one(client, prompt))
            await indexed(prompt)
        for k in range(8, len(seq), 2):
            out += await asyncio.gather(one(client, seq[k]), one(client, seq[k + 1]))
            await asyncio.gather(indexed(seq[k]), indexed(seq[k + 1]))
        for prompt in seq[8:]:  # again: each now cached on the replica that served it, wherever that runs
            out.append(await one(client, prompt))
    return out


if __name__ == "__main__":
    gcs, url, app = sys.argv[1:4]
    ray.init(address=gcs, namespace="serve", log_to_driver=False)
    print("RESULT " + json.dumps(asyncio.run(main(url, app))), flush=True)
