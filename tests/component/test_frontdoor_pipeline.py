"""The front door's pipeline in one process (vLLM's serving layer, no Ray, no engine): a fake engine behind a
LocalBackend records what reaches it. Permits are released exactly once, an abandoned stream cancels its engine
requests, llmd-ray's limits and refusals are 400s naming the field, and a prompt batch becomes one engine
request per prompt, each with its token ids."""

from __future__ import annotations

import asyncio

import pytest

from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.models import resolve_model
from llmd_ray.engine.types import GenerateChunk
from llmd_ray.errors import InvalidRequestError
from llmd_ray.frontdoor.backend import LocalBackend
from llmd_ray.frontdoor.config import IngressConfig, OpenAIServerConfig
from llmd_ray.frontdoor.pipeline import Caller, Pipeline
from llmd_ray.topology.qos import QoSConfig
from tests.support.sim_llm import vllm_output

MSG = [{"role": "user", "content": "hi"}]


class FakeEngine:
    """Yields ``tokens`` one-token deltas (all at once when not streaming); records requests and early ends."""

    def __init__(self, tokens: int = 3, delay_s: float = 0.0):
        self.tokens, self.delay_s = tokens, delay_s
        self.requests, self.cancelled = [], []

    async def generate(self, request):
        self.requests.append(request)
        params = request.sampling.vllm.params
        n, done = min(self.tokens, params.max_tokens), False
        try:
            for i in range(n):
                await asyncio.sleep(self.delay_s)
                last = i == n - 1
                if not request.stream and not last:
                    continue
                k = 1 if request.stream else n
                done = last  # a consumer stops at the final chunk
                yield GenerateChunk(request.request_id, " x" * k, [7] * k, len(request.prompt_token_ids), 0, i + 1,
                                    "length" if last else None, output=vllm_output(request.request_id, params.n, k,
                                                                                   params.logprobs, last))
        finally:
            if not done:  # cancelled or closed before its last token: the engine would abort it
                self.cancelled.append(request.request_id)


class FakeAdmission:
    def __init__(self):
        self.acquired, self.finished_calls = 0, []

    async def acquire(self, qos, tenant):
        self.acquired += 1
        return object()

    def finished(self, permit, timing, ok):
        if permit is not None:
            self.finished_calls.append(ok)


@pytest.fixture(scope="module")
async def frontend():
    from llmd_ray.frontdoor.vllm_state import start_frontend

    engine = FakeEngine()
    cfg = EngineConfig(model="tiny-llama", max_model_len=4096)
    fe = await start_frontend(cfg, resolve_model(cfg.model), OpenAIServerConfig(), LocalBackend(engine))
    return fe, engine


def make(frontend, **ingress):
    fe, engine = frontend
    engine.requests.clear(), engine.cancelled.clear()
    admission = FakeAdmission()
    return Pipeline(fe, admission, IngressConfig(**ingress), QoSConfig(), "tiny-llama"), admission, engine


async def test_full_response_releases_its_permit_once_and_names_the_replica(frontend):
    pipe, adm, engine = make(frontend)
    reply = await pipe.run("chat", {"messages": MSG, "max_tokens": 3, "n": 2, "temperature": 0.5}, Caller())
    assert [c["message"]["content"] for c in reply.body["choices"]] == [" x x x", " x x x"]
    assert reply.headers["x-llmd-replica"] == "local" and reply.headers["x-llmd-qos"] == "standard"
    assert adm.finished_calls == [True] and len(engine.requests) == 1
    request = engine.requests[0]
    assert request.prompt_token_ids[0] == 4090 and request.sampling.vllm.params.n == 2  # BOS, then the template


async def test_stream_releases_after_done_and_abandoning_it_cancels_the_engine(frontend):
    pipe, adm, engine = make(frontend)
    reply = await pipe.run("completion", {"prompt": "a b", "max_tokens": 3, "stream": True}, Caller())
    events = [e async for e in reply.events]
    assert events[-1] == "data: [DONE]\n\n" and adm.finished_calls == [True]
    engine.tokens, engine.delay_s = 50, 0.01
    try:
        pipe, adm, engine = make(frontend)
        reply = await pipe.run("completion", {"prompt": "a b", "max_tokens": 50, "stream": True}, Caller())
        await reply.events.__anext__()
        await reply.events.aclose()  # the client went away
        for _ in range(100):
            if engine.cancelled:
                break
            await asyncio.sleep(0.01)
        assert engine.cancelled == [engine.requests[0].request_id] and adm.finished_calls == [False]
    finally:
        engine.tokens, engine.delay_s = 3, 0.0


async def test_a_prompt_batch_is_one_engine_request_per_prompt(frontend):
    pipe, _, engine = make(frontend)
    reply = await pipe.run("completion", {"prompt": [[5, 6, 7], [8, 9]], "max_tokens": 2}, Caller(session_id="s1"))
    assert len(reply.body["choices"]) == 2
    assert sorted(r.prompt_token_ids for r in engine.requests) == [[5, 6, 7], [8, 9]]
    assert {r.session_id for r in engine.requests} == {"s1"} and len({r.request_id for r in engine.requests}) == 2


@pytest.mark.parametrize("kind,body,param", [
    ("completion", {"prompt": "word " * 100}, "prompt"),
    ("chat", {"messages": [{"role": "user", "content": "word " * 100}]}, "messages"),
    ("chat", {"messages": MSG, "max_tokens": 9}, "max_tokens"),
    ("chat", {"messages": MSG, "kv_transfer_params": {"do_remote_prefill": True}}, "kv_transfer_params"),
])
async def test_llmd_limits_and_refusals_are_400s_naming_the_field(frontend, kind, body, param):
    pipe, adm, engine = make(frontend, max_prompt_tokens=50, max_tokens_limit=5)
    with pytest.raises(InvalidRequestError) as e:
        await pipe.run(kind, body, Caller())
    assert e.value.param == param and not engine.requests and adm.finished_calls in ([], [False])


async def test_an_omitted_max_tokens_is_capped_to_the_limit(frontend):
    pipe, _, engine = make(frontend, max_tokens_limit=5)
    await pipe.run("chat", {"messages": MSG}, Caller())
    assert engine.requests[0].sampling.vllm.params.max_tokens == 5


async def test_unknown_fields_are_refused_by_default_and_served_as_vllm_with_ignore(frontend):
    body = {"messages": MSG, "max_tokens": 2, "some_unknown_field": {"x": 1}}
    pipe, adm, engine = make(frontend)
    with pytest.raises(InvalidRequestError) as e:
        await pipe.run("chat", body, Caller())
    assert e.value.status_code == 400 and e.value.param == "some_unknown_field" and not engine.requests
    pipe, adm, engine = make(frontend, unknown_fields="ignore")  # vLLM's own server answers 200
    reply = await pipe.run("chat", body, Caller())
    assert reply.body["choices"][0]["message"]["content"] and adm.finished_calls == [True]
