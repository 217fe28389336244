"""A stream whose engine replica is killed mid-stream goes on on another replica (``frontdoor/migrating.py``):
the real OpenAIIngress over two replicas of a fake engine whose token at each position depends only on the
position (as greedy decoding does), so a continuation from prompt + streamed tokens is the uninterrupted text.
The client sees one response: no error event, every token once, usage counting the client's prompt and all
generated tokens, cached_tokens from the first replica. n > 1 is refused with a clean error event."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import ray
from ray import serve

from llmd_ray.engine.types import GenerateChunk, GenerateRequest
from llmd_ray.serving.ingress import OpenAIIngress
from tests.conftest import HTTP_PORT

APP, PREFIX, DEPLOYMENT = "migration-component", "/migration", "PositionLLM"
PROMPT = [11, 12, 13, 14, 15]
CACHED = 3


def token_at(position: int) -> int:
    return 1000 + position % 500


@serve.deployment(name=DEPLOYMENT, num_replicas=2, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
class PositionLLM:
    """Streams max_tokens one-token deltas, ``delay_s`` apart; the token at position p is ``token_at(p)``."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.prompts: list[int] = []

    async def generate(self, request: GenerateRequest):
        from vllm.outputs import CompletionOutput, RequestOutput

        params = request.sampling.vllm.params
        start = len(request.prompt_token_ids)
        self.prompts.append(start)
        for i in range(params.max_tokens):
            await asyncio.sleep(self.delay_s)
            tid, last = token_at(start + i), i == params.max_tokens - 1
            outs = [CompletionOutput(index=k, text=f" w{tid}", token_ids=[tid], cumulative_logprob=None, logprobs=None,
                                     finish_reason="length" if last else None) for k in range(params.n)]
            cached = CACHED if start == len(PROMPT) else start  # the continuation's hits are not the client's
            out = RequestOutput(request.request_id, None, None, None, outs, finished=last, num_cached_tokens=cached)
            yield GenerateChunk(request.request_id, f" w{tid}", [tid], start, cached, i + 1,
                                "length" if last else None, replica=self.replica, output=out)

    def seen_prompts(self) -> tuple[str, list[int]]:
        return self.replica, list(self.prompts)

    def stats(self) -> dict:
        return {"rank": 0, "num_waiting": 0, "num_running": 0, "kv_cache_usage": 0.0, "updated_at": time.time()}


@pytest.fixture(scope="module")
def url(serve_instance):
    engine = {"model": "tiny-llama", "max_model_len": 4096}
    serve.run(OpenAIIngress.bind(PositionLLM.bind(0.05), engine, {}, {}), name=APP, route_prefix=PREFIX)
    yield f"http://127.0.0.1:{HTTP_PORT}{PREFIX}"
    serve.delete(APP)


def kill(replica: str) -> None:
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("SERVE_REPLICA::") and a["name"].endswith(f"#{replica}")]
    assert names, f"replica {replica} not found"
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)


async def stream_and_kill(client: httpx.AsyncClient, body: dict, kill_after: int) -> tuple[list[dict], int, str]:
    """Stream ``body``; kill the serving replica once ``kill_after`` content events arrived.

    Returns (events, content events before the kill, killed replica)."""
    events, before, killed = [], 0, ""
    async with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200, await r.aread()
        replica = r.headers["x-llmd-replica"]
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            events.append(json.loads(line[6:]))
            if not killed and len(events) >= kill_after:
                before, killed = len(events), replica
                await asyncio.to_thread(kill, replica)
    return events, before, killed


@pytest.fixture
async def client(url):
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        yield c


async def test_a_stream_survives_the_death_of_its_replica(client):
    tokens = 60
    body = {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    events, before, killed = await stream_and_kill(client, body, kill_after=10)
    assert not [e for e in events if "error" in e], events[-3:]
    texts = [c["text"] for e in events for c in e.get("choices", [])]
    assert 10 <= before < tokens  # the replica died mid-stream
    want = "".join(f" w{token_at(len(PROMPT) + i)}" for i in range(tokens))
    assert "".join(texts) == want  # every token once, in order
    finishes = [c["finish_reason"] for e in events for c in e.get("choices", []) if c.get("finish_reason")]
    assert finishes == ["length"]
    usage = events[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (len(PROMPT), tokens)
    assert usage["prompt_tokens_details"]["cached_tokens"] == CACHED
    # the other replica received the continuation: the prompt plus the tokens streamed before the kill
    handle = serve.get_deployment_handle(DEPLOYMENT, app_name=APP)
    prompts: dict[str, list[int]] = {}
    for _ in range(20):
        replica, seen = await handle.seen_prompts.remote()
        prompts[replica] = seen
    continued = [p for r, seen in prompts.items() if r != killed for p in seen if p > len(PROMPT)]
    assert continued and all(len(PROMPT) + before <= p < len(PROMPT) + tokens for p in continued), (before, prompts)


async def test_n_above_one_is_not_migrated_and_ends_with_a_clean_error(client):
    await wait_two_replicas()
    body = {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 60, "n": 2, "stream": True}
    events, before, _ = await stream_and_kill(client, body, kill_after=6)
    assert before and "error" in events[-1], events[-3:]
    message = events[-1]["error"]["message"]
    assert "mid-stream" in message and "n > 1" in message, message


async def wait_two_replicas(timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = serve.status().applications[APP].deployments[DEPLOYMENT]
        if dep.replica_states.get("RUNNING", 0) == 2:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the killed replica was not replaced")
