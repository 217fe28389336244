"""Client disconnects abort the engine request; the DeploymentHandle path works."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.integration.conftest import replica_stats

MODEL = "tiny-llama"


async def _settled(llm_handle, timeout: float = 30.0) -> dict[int, dict]:
    deadline = time.monotonic() + timeout
    while True:
        stats = await replica_stats(llm_handle)
        busy = sum(s["num_running"] + s["num_waiting"] for s in stats.values())
        if busy == 0 or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.5)


@pytest.mark.asyncio
async def test_client_disconnect_aborts_the_engine_request(app, llm_handle):
    before = await _settled(llm_handle)
    aborted_before = sum(s["aborted_requests"] for s in before.values())
    body = {"model": MODEL, "prompt": "go on and on", "max_tokens": 3000, "ignore_eos": True, "stream": True}
    async with httpx.AsyncClient(base_url=app, timeout=60) as c:
        async with c.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            got = 0
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    got += 1
                    if got == 3:
                        break  # leave mid-stream: closing the response disconnects
    after = await _settled(llm_handle)
    assert sum(s["num_running"] + s["num_waiting"] for s in after.values()) == 0
    assert sum(s["aborted_requests"] for s in after.values()) == aborted_before + 1
    # A 3000-token generation takes far longer than this test; it was cut short.
    assert sum(s["generation_tokens"] for s in after.values()) - sum(s["generation_tokens"] for s in before.values()) < 3000


@pytest.mark.asyncio
async def test_non_streaming_disconnect_aborts_too(app, llm_handle):
    before = await _settled(llm_handle)
    body = {"model": MODEL, "prompt": "long answer", "max_tokens": 3000, "ignore_eos": True}
    async with httpx.AsyncClient(base_url=app, timeout=2.0) as c:
        with pytest.raises(httpx.TimeoutException):
            await c.post("/v1/completions", json=body)
    after = await _settled(llm_handle)
    assert sum(s["num_running"] + s["num_waiting"] for s in after.values()) == 0
    assert sum(s["aborted_requests"] for s in after.values()) == sum(s["aborted_requests"] for s in before.values()) + 1


@pytest.mark.asyncio
async def test_deployment_handle_chat_and_stream(app):
    from ray import serve

    handle = serve.get_app_handle("default")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0,
            "ignore_eos": True}
    full = await handle.chat.remote(body)
    assert full["object"] == "chat.completion" and full["usage"]["completion_tokens"] == 6
    events = [e async for e in handle.options(stream=True).chat_stream.remote(body)]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == full["choices"][0]["message"]["content"]
    cmpl = await handle.completions.remote({"prompt": "abc", "max_tokens": 2, "ignore_eos": True}, session_id="s")
    assert cmpl["usage"]["completion_tokens"] == 2


@pytest.mark.asyncio
async def test_deployment_handle_raises_typed_errors(app):
    from ray import serve

    from llmd_ray.errors import InvalidRequestError

    handle = serve.get_app_handle("default")
    with pytest.raises(InvalidRequestError) as e:
        await handle.chat.remote({"messages": []})
    assert "messages" in str(e.value)


@pytest.mark.asyncio
async def test_each_replica_is_pinned_to_its_own_core(llm_handle):
    stats = await replica_stats(llm_handle)
    assert sorted(stats) == [0, 1]
    infos = {}
    for _ in range(40):
        info = await llm_handle.model_info.remote()
        infos[info["rank"]] = info
        if len(infos) == 2:
            break
    assert {infos[0]["cpu_bind"], infos[1]["cpu_bind"]} == {"0", "1"}
    assert all(i["block_size"] > 0 and i["num_blocks"] > 0 for i in infos.values())


def test_sse_ends_with_done(http):
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3,
                           "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(json.loads(line[6:])["object"] == "chat.completion.chunk" for line in lines[:-1])
