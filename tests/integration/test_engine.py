"""The engine adapter on real vLLM, outside Ray, on a model given as a local HF directory."""

from __future__ import annotations

import asyncio

import pytest

from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.engine import Engine
from llmd_ray.engine.models import resolve_model
from llmd_ray.engine.types import GenerateRequest, SamplingOptions
from llmd_ray.errors import InvalidRequestError


@pytest.fixture(scope="module")
async def engine():
    path = resolve_model("tiny-llama")  # a plain local directory from here on
    eng = await Engine.start(EngineConfig(model=path, served_model_name="local-dir", cpu_bind="0"))
    yield eng
    eng.shutdown()


async def _collect(engine, request):
    return [c async for c in engine.generate(request)]


def _req(rid, ids, max_tokens=8, stream=True, **kw):
    return GenerateRequest(rid, ids, SamplingOptions(max_tokens=max_tokens, ignore_eos=True, temperature=0.0, **kw), stream=stream)


@pytest.mark.own_cluster
async def test_engine_reports_its_geometry(engine):
    assert engine.config.name == "local-dir"
    assert engine.block_size == 128 and engine.num_blocks > 100
    assert engine.cpu_bind == "0" and engine.device == "cpu"


@pytest.mark.own_cluster
async def test_stream_and_final_agree_and_prefix_cache_hits(engine):
    ids = [(7 * i) % 4000 for i in range(700)]
    streamed = await _collect(engine, _req("a", ids))
    final = await _collect(engine, _req("b", ids, stream=False))
    assert len(final) == 1 and final[0].finish_reason == "length"
    assert "".join(c.text for c in streamed) == final[0].text
    assert [t for c in streamed for t in c.token_ids] == final[0].token_ids
    assert streamed[-1].completion_tokens == final[0].completion_tokens == 8
    # Only full 128-token blocks are cached, and the last prompt token is always recomputed.
    assert streamed[0].cached_tokens == 0
    assert final[0].cached_tokens == (700 - 1) // 128 * 128
    stats = engine.stats()
    assert stats.prefix_cache_hits >= final[0].cached_tokens and stats.num_running == 0


@pytest.mark.own_cluster
async def test_closing_the_stream_aborts_the_request(engine):
    before = engine.stats().aborted_requests
    gen = engine.generate(_req("c", list(range(10, 60)), max_tokens=2000))
    async for chunk in gen:
        if chunk.completion_tokens >= 3:
            break
    await gen.aclose()
    for _ in range(50):
        if engine.stats().num_running == 0:
            break
        await asyncio.sleep(0.1)
    s = engine.stats()
    assert s.aborted_requests == before + 1 and s.num_running == 0


@pytest.mark.own_cluster
async def test_prompt_longer_than_context_is_refused(engine):
    with pytest.raises(InvalidRequestError):
        await _collect(engine, _req("d", [1] * engine.max_model_len))


@pytest.mark.own_cluster
async def test_logprobs_top_k(engine):
    chunks = await _collect(engine, _req("e", list(range(20, 40)), max_tokens=3, logprobs=2))
    items = [lp for c in chunks for lp in c.logprobs]
    assert len(items) == 3
    assert all(len(i.top) <= 2 and i.logprob <= 0 for i in items)
