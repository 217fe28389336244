"""Property-based fuzzing of the HTTP API: no generated request gets a status >= 500.

Generated requests (hypothesis) mix near-valid OpenAI bodies whose fields take
good, boundary and wrong-typed values (unicode with lone surrogates, huge
ints, NaN, nested junk), raw byte bodies (truncated or deeply nested JSON,
binary), odd paths and methods, and good, wrong or missing API keys and QoS
headers. They go through the Serve proxy to the real OpenAIIngress (auth and
flow control on, vLLM's serving layer) in front of a simulated LLMServer (SimLLM). A 200 stream
must end with ``[DONE]`` and carry no internal error. CI sends 2,000;
``bench/reliability/fuzz.py`` reuses :func:`run_fuzz` for 10,000 or more.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

KEY = "sk-fuzz-key-0001"
MODEL = "tiny-llama"
BATCH = 50

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20))
junk = st.recursive(_scalar, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
                    max_leaves=12)
text = st.one_of(st.text(max_size=200), st.sampled_from(["", " ", "hi", "\ud800", "\x00", "word " * 900, "é" * 300]))
small_int = st.one_of(st.integers(1, 8), st.sampled_from([0, -1, 4095, 4096, 10**6, 2**64]))


def field(good, bad=junk):
    return st.one_of(good, good, good, bad)  # mostly plausible values


SAMPLING = {
    "model": field(st.sampled_from([MODEL, f"{MODEL}:batch", f"{MODEL}:interactive", "gpt-9", f"{MODEL}:", ""])),
    "max_tokens": field(small_int),
    "temperature": field(st.one_of(st.floats(-1, 3), st.sampled_from([0, 1, float("nan"), float("inf")]))),
    "top_p": field(st.floats(-0.5, 1.5)),
    "seed": field(st.integers(-(2**70), 2**70)),
    "stop": field(st.one_of(text, st.lists(text, max_size=6))),
    "n": field(st.integers(0, 3)),
    "stream": field(st.booleans()),
    "stream_options": field(st.fixed_dictionaries({"include_usage": st.booleans()})),
    "user": field(text),
    "ignore_eos": field(st.booleans()),
    "min_tokens": field(small_int),
}
content_part = st.fixed_dictionaries({"type": field(st.just("text")), "text": field(text)})
message = st.fixed_dictionaries({
    "role": field(st.sampled_from(["system", "developer", "user", "assistant", "tool"])),
    "content": field(st.one_of(text, st.lists(content_part, max_size=3), st.none())),
}, optional={"name": field(text)})
CHAT = {**SAMPLING, "messages": field(st.lists(message, max_size=4)), "max_completion_tokens": field(small_int),
        "logprobs": field(st.booleans()), "top_logprobs": field(st.integers(-1, 25))}
CMPL = {**SAMPLING, "prompt": field(st.one_of(text, st.lists(st.integers(-5, 5000), max_size=20),
                                               st.lists(text, max_size=2), st.lists(st.lists(st.integers(0, 4095)), max_size=2))),
        "logprobs": field(st.integers(-1, 25)), "echo": field(st.booleans()), "suffix": field(text)}


VALID_MESSAGE = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(min_size=1, max_size=50)})
VALID = {
    "chat": st.fixed_dictionaries({"messages": st.lists(VALID_MESSAGE, min_size=1, max_size=3)},
                                  optional={"model": st.sampled_from([MODEL, f"{MODEL}:batch"]),
                                            "max_tokens": st.integers(1, 8), "stream": st.booleans()}),
    "cmpl": st.fixed_dictionaries({"prompt": st.one_of(st.text(min_size=1, max_size=50),
                                                       st.lists(st.integers(0, 4095), min_size=1, max_size=20))},
                                  optional={"model": st.just(MODEL), "max_tokens": st.integers(1, 8),
                                            "stream": st.booleans()}),
}


@st.composite
def mutated(draw, kind: str) -> dict:
    """A valid body with up to two fields replaced by generated (often invalid) values."""
    fields = CHAT if kind == "chat" else CMPL
    body = draw(VALID[kind])
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=2, unique=True)):
        body[name] = draw(fields[name])
    return body


def _body(kind: str) -> st.SearchStrategy[bytes]:
    obj = st.one_of(mutated(kind), mutated(kind), st.fixed_dictionaries({}, optional=CHAT if kind == "chat" else CMPL))
    return st.one_of(
        obj.map(lambda d: json.dumps(d).encode()),
        obj.map(lambda d: json.dumps(d).encode()),
        obj.map(lambda d: json.dumps(d).encode()),
        obj.map(lambda d: json.dumps(d).encode()[: max(1, len(json.dumps(d)) // 2)]),  # truncated
        junk.map(lambda d: json.dumps(d).encode()),
        st.binary(max_size=64),
        st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
        st.sampled_from([b"", b"null", b"{}", b'{"prompt": 1e999}', b'{"prompt": NaN}', b"\xff\xfe{}",
                         b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}']),
    )


headers = st.fixed_dictionaries({}, optional={
    "authorization": st.one_of(st.just(f"Bearer {KEY}"), st.just(f"Bearer {KEY}"), st.just(f"Bearer {KEY}"),
                               st.sampled_from(["Bearer", "Bearer x", f"Basic {KEY}", KEY, ""]),
                               st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)),
    "x-llmd-qos": st.one_of(st.sampled_from(["interactive", "standard", "batch", "BATCH", "gold", ""]),
                            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)),
    "x-session-id": st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    "content-type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
})


@st.composite
def http_request(draw) -> tuple[str, str, dict, bytes]:
    """(method, path, headers, body)."""
    h = {k: v.strip(" \t") for k, v in draw(headers).items()}  # valid HTTP: no surrounding whitespace
    if draw(st.sampled_from([True, True, True, False])):
        h["authorization"] = f"Bearer {KEY}"  # mostly authenticated, so bodies reach validation
    kind = draw(st.sampled_from(["chat", "chat", "cmpl", "cmpl", "other"]))
    if kind == "other":
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
        path = draw(st.sampled_from(["/v1/models", "/health", "/openapi.json", "/v1/embeddings", "/v1/completions",
                                     "/v1/chat/completions", "/v1//completions", "/%00", "/v1/models/../health"]))
        return method, path, h, draw(st.binary(max_size=32))
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    return "POST", path, h, draw(_body(kind))


async def send(client: httpx.AsyncClient, req: tuple[str, str, dict, bytes]) -> tuple[int, str | None]:
    """(status, problem): a problem is a broken stream or an internal error inside one."""
    method, path, h, content = req
    async with client.stream(method, path, headers=h, content=content) as r:
        raw = await r.aread()
    if r.status_code != 200 or "text/event-stream" not in r.headers.get("content-type", ""):
        return r.status_code, None
    text_ = raw.decode("utf-8", "replace")
    if not text_.endswith("data: [DONE]\n\n"):
        return r.status_code, "stream did not end with [DONE]"
    if '"internal_error"' in text_:
        return r.status_code, "internal error event in the stream"
    return r.status_code, None


async def send_all(url: str, batch: list, concurrency: int = 16) -> list[tuple[int, str | None]]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def one(req):
            async with sem:
                return await send(client, req)
        return await asyncio.gather(*(one(r) for r in batch))


def run_fuzz(url: str, total: int, concurrency: int = 16, on_batch=None) -> Counter:
    """Send ``total`` generated requests (in batches of 50); fail on any status >= 500 or broken stream."""
    statuses: Counter = Counter()

    @settings(max_examples=max(1, total // BATCH), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])  # the failing request is reported whole
    @given(st.lists(http_request(), min_size=BATCH, max_size=BATCH))
    def check(batch):
        results = asyncio.run(send_all(url, batch, concurrency))
        for req, (status, problem) in zip(batch, results):
            statuses[status] += 1
            assert status < 500 and problem is None, (status, problem, req[0], req[1], req[2], req[3][:300])
        if on_batch is not None:
            on_batch(statuses)

    check()
    return statuses


INGRESS = {
    "flow_control": {"enabled": True, "max_inflight": 64, "stats_period_s": 0.2},
    "auth": {"api_keys": [{"name": "fuzz", "key": KEY}]},
}


def deploy(name: str = "fuzz-component", prefix: str = "/fuzz") -> str:
    """The fuzz target: the real ingress (auth + flow control) over SimLLM, on the running Serve."""
    from ray import serve

    from tests.support.sim_llm import SimLLM
    from llmd_ray.serving.ingress import OpenAIIngress

    engine = {"model": MODEL, "max_model_len": 4096}
    serve.run(OpenAIIngress.bind(SimLLM.options(name="SimLLM").bind(), engine, INGRESS, {}), name=name,
              route_prefix=prefix)
    return prefix


@pytest.fixture(scope="module")
def url(serve_instance):
    from ray import serve

    from tests.conftest import HTTP_PORT

    prefix = deploy()
    yield f"http://127.0.0.1:{HTTP_PORT}{prefix}"
    serve.delete("fuzz-component")


def test_2000_generated_requests_get_no_5xx(url):
    statuses = run_fuzz(url, 2000)
    print(dict(statuses))
    assert sum(statuses.values()) >= 2000
    assert statuses[200] >= 100 and statuses[400] >= 200 and statuses[401] >= 20  # the mix reaches every layer


def test_openapi_schema_describes_the_request_bodies(url):
    doc = httpx.get(url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, model, field in [("/v1/completions", "CompletionRequest", "prompt"),  # (or prompt_embeds)
                               ("/v1/chat/completions", "ChatCompletionRequest", "messages")]:
        op = doc["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        props = schemas[model]["properties"]
        assert {field, "max_tokens", "tools" if "chat" in path else "echo", "logit_bias", "n"} <= set(props)
        assert {"400", "401", "429", "503"} <= set(op["responses"])
        assert {p["name"] for p in op["parameters"]} == {"x-llmd-qos", "x-session-id"}
    assert "messages" in schemas["ChatCompletionRequest"]["required"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
