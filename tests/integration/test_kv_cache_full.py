"""A full KV cache: vLLM preempts, nothing deadlocks, every request completes.

One replica whose engine has only 16 KV blocks (2,048 tokens; vLLM needs a
max_model_len below that, 1,024 here) takes 6
concurrent requests needing ~5,000 tokens of KV between them.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from tests.conftest import HTTP_PORT

APP = "tight"


@pytest.fixture(scope="module")
def tight_app(serve_instance):
    from ray import serve

    from llmd_ray import build_app

    serve.run(build_app({"num_replicas": 1, "engine": {"model": "tiny-llama", "max_model_len": 1024,
                                                       "num_kv_blocks": 16}}),
              name=APP, route_prefix=f"/{APP}")
    yield f"http://127.0.0.1:{HTTP_PORT}/{APP}"
    serve.delete(APP)


async def test_preemption_under_a_full_kv_cache_completes_every_request(tight_app):
    from ray import serve

    rng = random.Random(3)
    prompts = [[rng.randrange(10, 4000) for _ in range(600)] for _ in range(6)]
    async with httpx.AsyncClient(base_url=tight_app, timeout=300) as client:
        responses = await asyncio.wait_for(asyncio.gather(*[
            client.post("/v1/completions", json={"model": "tiny-llama", "prompt": p, "max_tokens": 200,
                                                 "ignore_eos": True})
            for p in prompts
        ]), timeout=400)
    assert [r.status_code for r in responses] == [200] * 6, [r.text[:200] for r in responses]
    assert all(r.json()["usage"]["completion_tokens"] == 200 for r in responses)
    stats = await serve.get_deployment_handle("LLMServer", app_name=APP).stats.remote()
    assert stats["num_blocks"] == 16
    assert stats["preemptions"] > 0, stats  # the cache really was over-committed
