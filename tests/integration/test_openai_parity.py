"""Parity with vLLM's own OpenAI server: the acceptance test of the front door (issue 14).

vLLM's ``api_server`` is started beside the app on the same tiny model, with the
very command line the front door derives from the app's EngineConfig
(``vllm_cli_args``: same dtype, max_model_len, seed, max_logprobs, tool-call
parser). Every case goes to both; they must agree on the status class, the
response's fields and, where the case is deterministic (greedy or seeded), the
text, tool calls, finish reasons, token counts and logprob tokens
(``tests/support/parity.py``). The app may add headers; it may not change the
body. A self-check shows the comparison catches a different answer. A case marked ``by_design`` is an
intended difference (an unknown field: vLLM ignores it, llmd-ray answers 400 naming it); its line in the
parity table says "differs by design" and why.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.parity import Case, differences, outcome

M = "tiny-llama"
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
CHAT, CMPL = "/v1/chat/completions", "/v1/completions"
G = {"temperature": 0}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 8}, "n": {"type": "integer"}},
          "required": ["answer", "n"], "additionalProperties": False}
UNKNOWN_FIELD = ("vLLM ignores a field neither OpenAI nor vLLM declares (200); llmd-ray never silently drops what a "
                 "client asked for: 400 naming it, as OpenAI's API answers (ingress.unknown_fields: ignore behaves "
                 "as vLLM: tests/component/test_frontdoor_pipeline.py)")
LORA_ENGINE = {"enable_lora": True, "max_loras": 2, "max_lora_rank": 8,
               "lora_modules": {"tiny-lora-0": "tiny-lora-0"}}  # declared; tiny-lora-1 is loaded at run time
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def chat(name, deterministic=True, **kw):
    return Case(name, CHAT, {"model": M, "messages": MSG, "max_tokens": 8, **kw}, deterministic)


def cmpl(name, deterministic=True, **kw):
    return Case(name, CMPL, {"model": M, "prompt": "Once upon a time", "max_tokens": 8, **kw}, deterministic)


CASES = [
    chat("chat", **G), chat("chat-stream", stream=True, stream_options={"include_usage": True}, **G),
    cmpl("completion", **G), cmpl("completion-stream", stream=True, **G),
    chat("chat-n3-seeded", n=3, temperature=0.9, seed=7), cmpl("completion-n2-stream", n=2, temperature=1.0,
                                                                  seed=3, stream=True),
    Case("prompt-batch", CMPL, {"model": M, "prompt": ["The cat", "A dog barks"], "max_tokens": 5, **G}),
    Case("prompt-batch-ids", CMPL, {"model": M, "prompt": [[5, 6, 7], [8, 9]], "max_tokens": 4, **G}),
    cmpl("echo-logprobs", echo=True, logprobs=2, **G), cmpl("prompt-logprobs", prompt_logprobs=1, **G),
    chat("chat-logprobs", logprobs=True, top_logprobs=3, **G),
    chat("chat-logprobs-stream", logprobs=True, top_logprobs=2, stream=True, **G),
    chat("json-mode", response_format={"type": "json_object"}, max_tokens=12, **G),
    chat("json-schema", response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
         max_tokens=40, **G),
    chat("structured-choice", structured_outputs={"choice": ["sunny", "rainy"]}, **G),
    chat("tool-named", tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
         max_tokens=40, **G),
    chat("tool-named-stream", tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
         max_tokens=40, stream=True, **G),
    chat("tool-required", tools=[WEATHER], tool_choice="required", max_tokens=40, **G),
    chat("tool-auto", tools=[WEATHER], tool_choice="auto", **G),
    chat("tool-none", tools=[WEATHER], tool_choice="none", **G),
    chat("penalties", presence_penalty=1.5, frequency_penalty=1.0, repetition_penalty=1.3, max_tokens=12, **G),
    cmpl("top-k-min-p-seeded", top_k=5, min_p=0.1, temperature=1.0, seed=11),
    cmpl("logit-bias", logit_bias={"300": 100}, **G),
    cmpl("stop-token-ids-min-tokens", stop_token_ids=[300], logit_bias={"300": 100}, min_tokens=3, **G),
    cmpl("ignore-eos-seed", ignore_eos=True, seed=5, temperature=0.7),
    cmpl("stop-string", stop=["e"], max_tokens=16, **G),
    chat("max-completion-tokens", max_completion_tokens=3, **G),
    Case("unknown-field", CHAT, {"model": M, "messages": MSG, "max_tokens": 8, "some_unknown_field": {"x": 1}, **G},
         by_design=UNKNOWN_FIELD),
    Case("image-to-text-model", CHAT, {"model": M, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, IMAGE]}], "max_tokens": 4}),
    chat("max-tokens-overflow", max_tokens=5000), cmpl("prompt-too-long", prompt="word " * 5000),
    cmpl("max-tokens-fills-context", prompt="word " * 4080, max_tokens=100, **G),
    Case("messages-missing", CHAT, {"model": M}), chat("max-tokens-wrong-type", max_tokens="ten"),
    chat("unknown-model", model="gpt-9"), chat("top-logprobs-without-logprobs", top_logprobs=2),
    chat("stream-options-without-stream", stream_options={"include_usage": True}),
    chat("n-greedy", n=2, **G), cmpl("logprobs-too-many", logprobs=30),
    cmpl("logprobs-too-many-stream", logprobs=30, stream=True), cmpl("empty-prompt", prompt=""),
    Case("token-out-of-vocab", CMPL, {"model": M, "prompt": [1, 2, 10**9], "max_tokens": 2}),
    Case("tokenize", "/tokenize", {"model": M, "prompt": "hello world"}),
    Case("tokenize-chat", "/tokenize", {"model": M, "messages": MSG}),
    Case("detokenize", "/detokenize", {"model": M, "tokens": [300, 301, 302]}),
    Case("version", "/version"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """vLLM's own OpenAI server on the tiny model, configured like the app's engines and front door (stopped
    after this module: it holds a core's worth of engine)."""
    from llmd_ray.engine.config import EngineConfig
    from llmd_ray.engine.models import resolve_model
    from llmd_ray.frontdoor.config import OpenAIServerConfig, vllm_cli_args

    # As tests/integration/conftest.py's app, plus LoRA as the module's lora_app (base-model cases go to the
    # shared app: an engine's LoRA support leaves base-model outputs as they are)
    engine = EngineConfig(model="tiny-llama", max_model_len=4096, **LORA_ENGINE)
    port = _free_port()
    args = vllm_cli_args(engine, resolve_model(engine.model), OpenAIServerConfig())
    env = {**os.environ, **engine.environment("cpu", "nobind"), "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
           "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    log = open(tmp_path_factory.mktemp("vllm") / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args,
                             "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    try:
        while True:
            assert proc.poll() is None, f"vLLM's server exited ({proc.returncode}); see {log.name}"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "vLLM's server did not come up in 600 s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def record(case: Case, vllm_status: int, llmd_status: int, verdict: str, detail) -> None:
    """Print one row of the parity table; with LLMD_PARITY_TABLE=FILE also append it to FILE as markdown
    (case | vLLM status | llmd-ray status | same/differs | what llmd-ray answered)."""
    print(f"\nPARITY {case.name}: vLLM {vllm_status} llmd-ray {llmd_status} {verdict} {detail}")
    path = os.environ.get("LLMD_PARITY_TABLE")
    if path:
        with open(path, "a") as f:
            shown = str(detail)[:80].replace("|", "/")
            f.write(f"| {case.name} | {vllm_status} | {llmd_status} | {verdict} | {shown} |\n")


def ask(base: str, case: Case):
    with httpx.Client(base_url=base, timeout=300) as c:
        if case.body is None and case.raw is None:
            r = c.get(case.path)
        else:
            r = c.post(case.path, json=case.body) if case.raw is None else c.post(
                case.path, content=case.raw, headers={"content-type": "application/json"})
    return r, outcome(r.status_code, r.headers.get("content-type", ""), r.text)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_answer_as_vllm(case, vllm_server, app):
    ref_r, ref = ask(vllm_server, case)
    got_r, got = ask(app, case)
    if case.by_design:  # an intended difference: vLLM accepts, llmd-ray refuses naming the field
        record(case, ref_r.status_code, got_r.status_code, "differs by design", case.by_design)
        extra = sorted(set(case.body) - {"model", "messages", "prompt", "max_tokens", "temperature"})
        assert ref_r.status_code == 200 and got_r.status_code == 400, (ref_r.text[:300], got_r.text[:300])
        assert got.errors and got.errors[0]["param"] == extra[0] and extra[0] in got.errors[0]["message"]
        return
    diffs = differences(ref, got, case.deterministic)
    texts = [c["text"][:40] or c["tool_calls"] for c in got.choices.values()]
    record(case, ref_r.status_code, got_r.status_code, "differs" if diffs else "same", texts)
    assert not diffs, f"{case.name}: vLLM {ref_r.status_code} {ref_r.text[:300]!r}\n" \
                      f"llmd-ray {got_r.status_code} {got_r.text[:300]!r}\n" + "\n".join(diffs)
    if got.errors:  # llmd-ray's error body names the field at fault
        assert all(e["type"] and e["message"] for e in got.errors)


def test_comparison_catches_a_different_answer(vllm_server, app):
    """The check can fail: a shorter answer, another prompt, a missing field are all caught."""
    _, ref = ask(vllm_server, chat("a", **G))
    _, shorter = ask(app, chat("b", max_tokens=3, **G))
    assert any("text" in d or "usage" in d for d in differences(ref, shorter))
    _, other = ask(app, cmpl("c", prompt="Something else entirely", **G))
    assert differences(ref, other)
    ref.fields.add("choices[].message.extra_field")
    _, same = ask(app, chat("d", **G))
    assert any("fields only in vLLM" in d for d in differences(ref, same))


@pytest.fixture(scope="module")
def lora_app(app):
    """A second app in the session's Serve instance, at /lora: one replica with LoRA, the adapters of
    ``LORA_ENGINE`` declared and the admin routes on (the shared app stays as every other test expects it)."""
    from ray import serve

    from llmd_ray import build_app

    serve.run(build_app({
        "num_replicas": 1, "replica_num_cpus": 0, "engine": {"model": M, "max_model_len": 4096, **LORA_ENGINE},
        "ingress": {"allow_runtime_lora_updating": True},
    }), name="lora", route_prefix="/lora")
    try:
        yield app + "/lora"
    finally:
        serve.delete("lora")


def lora_steps() -> list[Case]:
    """In order: adapters served, a second one loaded and used, unloaded, then asked for."""
    from llmd_ray.engine.tiny_lora import resolve_adapter

    second = {"lora_name": "tiny-lora-1", "lora_path": resolve_adapter("tiny-lora-1")}
    return [
        Case("models-with-adapter", "/v1/models"),
        chat("lora-chat", model="tiny-lora-0", **G), cmpl("lora-completion", model="tiny-lora-0", **G),
        cmpl("lora-completion-stream", model="tiny-lora-0", stream=True, **G),
        Case("lora-load", "/v1/load_lora_adapter", second),
        Case("lora-load-again", "/v1/load_lora_adapter", second),
        Case("lora-load-missing-path", "/v1/load_lora_adapter", {"lora_name": "nope", "lora_path": "/nonexistent"}),
        Case("models-after-load", "/v1/models"), chat("lora-loaded-chat", model="tiny-lora-1", **G),
        Case("lora-unload", "/v1/unload_lora_adapter", {"lora_name": "tiny-lora-1"}),
        Case("lora-unload-unknown", "/v1/unload_lora_adapter", {"lora_name": "tiny-lora-1"}),
        chat("lora-unloaded-chat", model="tiny-lora-1", **G), Case("models-after-unload", "/v1/models"),
    ]


def test_lora_same_answers_as_vllm(vllm_server, lora_app):
    """Adapters through both servers, step by step (each step changes the adapters served)."""
    for case in lora_steps():
        ref_r, ref = ask(vllm_server, case)
        got_r, got = ask(lora_app, case)
        diffs = differences(ref, got, case.deterministic)
        if case.path.endswith("_lora_adapter") and ref_r.status_code != got_r.status_code:  # same status exactly
            diffs.append(f"status {ref_r.status_code} vs {got_r.status_code}")
        record(case, ref_r.status_code, got_r.status_code, "differs" if diffs else "same",
               [c["text"][:40] for c in got.choices.values()] or got.other)
        assert not diffs, f"{case.name}: vLLM {ref_r.text[:300]!r}\nllmd-ray {got_r.text[:300]!r}\n" + "\n".join(diffs)


def test_lora_changes_greedy_output_and_admin_routes_are_off_by_default(lora_app, app):
    base = ask(app, chat("base", **G))[1].choices[0]["text"]
    adapted = ask(lora_app, chat("a", model="tiny-lora-0", **G))[1].choices[0]["text"]
    assert base and adapted and adapted != base
    r = httpx.post(app + "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/tmp"})
    assert r.status_code == 404  # the shared app does not allow runtime loading
