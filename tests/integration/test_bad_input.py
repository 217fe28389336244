"""Every bad input gets an OpenAI-style 4xx naming the problem; never a 500,
and never harm to requests in flight. (What is bad is vLLM's call: see test_openai_parity.py.)"""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest

MODEL = "tiny-llama"
CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]

CASES = [
    # (path, json body or raw bytes, status, param)
    (CHAT, {"model": MODEL}, 400, "messages"),
    (CHAT, {"model": MODEL, "messages": []}, 400, "messages"),
    (CHAT, {"model": MODEL, "messages": "hello"}, 400, "messages"),
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": 42}]}, 400, "messages[0].content"),
    (CHAT, {"model": MODEL, "messages": MSG, "max_tokens": 0}, 400, "max_tokens"),
    (CHAT, {"model": MODEL, "messages": MSG, "max_tokens": "ten"}, 400, "max_tokens"),
    (CHAT, {"model": MODEL, "messages": MSG, "temperature": "hot"}, 400, "temperature"),
    (CHAT, {"model": MODEL, "messages": MSG, "n": 0}, 400, "n"),
    (CHAT, {"model": MODEL, "messages": MSG, "kv_transfer_params": {"do_remote_prefill": True}}, 400,
     "kv_transfer_params"),  # vLLM knows it; llmd-ray cannot honour it (P/D is the app's business)
    (CHAT, {"model": MODEL, "messages": MSG, "top_logprobs": 2}, 400, "top_logprobs"),
    (CHAT, {"model": "gpt-9", "messages": MSG}, 404, "model"),
    (CHAT, {"model": MODEL, "messages": MSG, "max_tokens": 5000}, 400, "max_tokens"),
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "word " * 5000}]}, 400, "messages"),
    (CMPL, {"model": MODEL, "prompt": "word " * 5000}, 400, "prompt"),
    (CMPL, {"model": MODEL, "prompt": [1, 2, 10**9]}, 400, "prompt"),
    (CMPL, {"model": MODEL}, 400, "prompt"),
    (CMPL, {"model": MODEL, "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    (CMPL, b'{"model": "tiny-llama", "prompt": "x"', 400, "body"),
    (CMPL, b"[1, 2, 3]", 400, "body"),
    (CMPL, b"\xff\xfe not json", 400, "body"),
    (CMPL, b'{"prompt": "' + b"a" * (2 << 20) + b'"}', 413, "body"),
]


@pytest.mark.parametrize("path,body,status,param", CASES, ids=[f"{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_a_clear_4xx(http, path, body, status, param):
    if isinstance(body, bytes):
        r = http.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = http.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["type"] in ("invalid_request_error", "not_found_error")
    assert err["message"] and (param == "body" or param.split("[")[0] in err["message"] or status == 404)


def test_oversized_body_without_content_length_is_refused(http):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = http.post(CMPL, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_streaming_bad_input_gets_status_not_a_broken_stream(http):
    r = http.post(CHAT, json={"model": MODEL, "messages": [], "stream": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_bad_requests_do_not_harm_one_in_flight(app):
    good_body = {"model": MODEL, "prompt": "steady", "max_tokens": 40, "temperature": 0, "ignore_eos": True}
    with httpx.Client(base_url=app, timeout=120) as c, cf.ThreadPoolExecutor(4) as pool:
        reference = c.post(CMPL, json=good_body).json()["choices"][0]["text"]
        good = pool.submit(c.post, CMPL, json=good_body)
        bad = [pool.submit(c.post, path, json=body) for path, body, *_ in CASES if isinstance(body, dict)]
        statuses = [f.result().status_code for f in bad]
        r = good.result()
    assert all(400 <= s < 500 for s in statuses)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == reference
