import json

from llmd_ray.engine.types import GenerateChunk, TokenLogprob
from llmd_ray.serving.openai_format import SSE_DONE, ResponseBuilder, sse


def _chunks():
    return [
        GenerateChunk("r1", "Hel", [1], prompt_tokens=10, cached_tokens=0, completion_tokens=1,
                      logprobs=[TokenLogprob("Hel", -0.5, [("Hel", -0.5), ("X", -1.0)])]),
        GenerateChunk("r1", "lo", [2], prompt_tokens=10, cached_tokens=0, completion_tokens=2, finish_reason="length",
                      logprobs=[TokenLogprob("lo", -0.25, [("lo", -0.25)])]),
    ]


def test_full_chat_body():
    body = ResponseBuilder("chat", "m", "r1").full(_chunks())
    assert body["id"] == "chatcmpl-r1" and body["object"] == "chat.completion" and body["model"] == "m"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello"}
    assert choice["finish_reason"] == "length"
    assert [c["token"] for c in choice["logprobs"]["content"]] == ["Hel", "lo"]
    assert choice["logprobs"]["content"][0]["top_logprobs"][1] == {"token": "X", "logprob": -1.0, "bytes": [88]}
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                             "prompt_tokens_details": {"cached_tokens": 0}}


def test_full_completion_body_with_text_offsets():
    body = ResponseBuilder("completion", "m", "r1").full(_chunks())
    choice = body["choices"][0]
    assert body["object"] == "text_completion" and choice["text"] == "Hello"
    assert choice["logprobs"]["text_offset"] == [0, 3]
    assert choice["logprobs"]["top_logprobs"][0] == {"Hel": -0.5, "X": -1.0}


def test_chat_stream_role_first_then_deltas_then_usage():
    b = ResponseBuilder("chat", "m", "r1", include_usage=True)
    events = [e for c in _chunks() for e in b.stream_chunks(c)]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["delta"] == {"content": "Hel"}
    assert events[2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 2
    assert all(e["object"] == "chat.completion.chunk" for e in events)


def test_completion_stream_without_usage():
    b = ResponseBuilder("completion", "m", "r1")
    events = [e for c in _chunks() for e in b.stream_chunks(c)]
    assert [e["choices"][0]["text"] for e in events] == ["Hel", "lo"]
    assert events[1]["choices"][0]["logprobs"]["text_offset"] == [3]
    assert "usage" not in events[-1]


def test_sse_framing():
    assert sse({"a": 1}) == 'data: {"a":1}\n\n'
    assert SSE_DONE == "data: [DONE]\n\n"
    assert json.loads(sse({"x": "é"})[6:]) == {"x": "é"}
