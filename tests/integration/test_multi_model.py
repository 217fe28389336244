"""Two different tiny models in one app (``AppArgs.models``, as ``serve_configs/multi_model.yaml``), one app
start for every case: each model answers greedy chat with its own weights, ``/v1/models`` lists both, an
unknown model is a 404 naming both, ``/tokenize`` uses each model's own tokenizer, and the two engines are
pinned to different cores."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.conftest import HTTP_PORT

APP = "multimodel"
A, B = "tiny-llama", "tiny-llama-b"
CONFIG = Path(__file__).resolve().parents[2] / "serve_configs" / "multi_model.yaml"


@pytest.fixture(scope="module")
def multi_app(serve_instance):
    from ray import serve

    from llmd_ray import build_app

    args = yaml.safe_load(CONFIG.read_text())["applications"][0]["args"]  # the shipped config's models
    serve.run(build_app(args), name=APP, route_prefix=f"/{APP}")
    yield f"http://127.0.0.1:{HTTP_PORT}/{APP}"
    serve.delete(APP)


@pytest.fixture
def http(multi_app):
    with httpx.Client(base_url=multi_app, timeout=120) as client:
        yield client


def chat(http, model, content="Tell me about Paris.", **kw):
    return http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}],
                                                   "max_tokens": 12, "temperature": 0, **kw})


def test_each_model_answers_greedy_chat_with_its_own_weights(http):
    a1, b1, a2 = chat(http, A), chat(http, B), chat(http, A)
    assert a1.status_code == b1.status_code == a2.status_code == 200, (a1.text[:300], b1.text[:300])
    assert a1.json()["model"] == A and b1.json()["model"] == B
    text_a, text_b = (r.json()["choices"][0]["message"]["content"] for r in (a1, b1))
    assert text_a and text_b and text_a != text_b  # different weights and vocabularies
    assert a2.json()["choices"][0]["message"]["content"] == text_a  # greedy: the same again
    assert a1.json()["usage"]["completion_tokens"] == b1.json()["usage"]["completion_tokens"] == 12
    streamed = http.post("/v1/completions", json={"model": B, "prompt": "Once upon a time", "max_tokens": 4,
                                                  "temperature": 0, "stream": True})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")


def test_models_lists_both_as_vllm_does(http):
    body = http.get("/v1/models").json()
    cards = {c["id"]: c for c in body["data"]}
    assert body["object"] == "list" and list(cards) == [A, B]
    for name, card in cards.items():
        assert card["object"] == "model" and card["max_model_len"] == 4096
        assert card["root"].endswith(name)  # each model's own directory


def test_an_unknown_model_is_a_404_naming_both(http):
    r = chat(http, "gpt-9")
    err = r.json()["error"]
    assert r.status_code == 404 and err["param"] == "model" and err["type"] == "not_found_error"
    assert "gpt-9" in err["message"] and f"'{A}'" in err["message"] and f"'{B}'" in err["message"]
    r = http.post("/tokenize", json={"model": "gpt-9", "prompt": "x"})
    assert r.status_code == 404 and f"'{B}'" in r.json()["error"]["message"]


def test_tokenize_and_detokenize_use_each_models_own_tokenizer(http):
    from transformers import AutoTokenizer

    from llmd_ray.engine.models import resolve_model

    text = "hello world, the weather in Paris"
    got = {m: http.post("/tokenize", json={"model": m, "prompt": text}).json() for m in (A, B)}
    for m in (A, B):
        own = AutoTokenizer.from_pretrained(resolve_model(m))(text)["input_ids"]
        assert got[m]["tokens"] == own and got[m]["max_model_len"] == 4096
        back = http.post("/detokenize", json={"model": m, "tokens": own[1:]}).json()
        assert back["prompt"] == text
    assert got[A]["tokens"] != got[B]["tokens"]
    # A QoS-class name of the second model is that model too.
    assert http.post("/tokenize", json={"model": f"{B}:batch", "prompt": text}).json()["tokens"] == got[B]["tokens"]


async def test_the_two_engines_are_pinned_to_different_cores(multi_app):
    from ray import serve

    infos = [await serve.get_deployment_handle(f"LLMServer-{m}", app_name=APP).model_info.remote() for m in (A, B)]
    assert [i["name"] for i in infos] == [A, B]
    assert [i["rank"] for i in infos] == [0, 1]  # the second model's ranks follow the first's
    assert infos[0]["cpu_bind"] != infos[1]["cpu_bind"], infos
