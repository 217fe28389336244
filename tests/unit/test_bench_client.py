"""SSE parsing and request timing of the streaming client."""

import asyncio
import json

import pytest

from llmd_ray.bench.client import StreamResult, handle_event, make_http_client, stream_request


def _ev(obj):
    return json.dumps(obj).encode()


def test_completion_chunks_and_usage():
    r = StreamResult()
    handle_event(r, _ev({"choices": [{"index": 0, "text": "a", "finish_reason": None}]}), 0.1)
    handle_event(r, _ev({"choices": [{"index": 0, "text": "", "finish_reason": None}]}), 0.2)  # held-back token
    handle_event(r, _ev({"choices": [{"index": 0, "text": "bc", "finish_reason": "length"}]}), 0.3)
    handle_event(r, _ev({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4,
                                                  "prompt_tokens_details": {"cached_tokens": 5}}}), 0.31)
    assert handle_event(r, b"[DONE]", 0.32)
    assert r.ttft_s == 0.1 and r.chunk_times == [0.1, 0.2, 0.3] and r.text == "abc"
    assert (r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.usage_reported) == (7, 4, 5, True)


def test_chat_role_and_finish_only_chunks_are_not_tokens():
    r = StreamResult()
    handle_event(r, _ev({"choices": [{"delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}), 0.01)
    handle_event(r, _ev({"choices": [{"delta": {"content": "hi"}, "finish_reason": None}]}), 0.2)
    handle_event(r, _ev({"choices": [{"delta": {"reasoning_content": "think"}, "finish_reason": None}]}), 0.25)
    handle_event(r, _ev({"choices": [{"delta": {"content": ""}, "finish_reason": "stop"}]}), 0.3)
    handle_event(r, _ev({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}), 0.3)
    assert r.ttft_s == 0.2 and r.chunk_times == [0.2, 0.25] and r.text == "hithink"
    assert r.cached_tokens is None and r.usage_reported


def test_error_event():
    r = StreamResult()
    handle_event(r, _ev({"error": {"message": "boom", "code": 500}}), 0.1)
    assert r.error == "boom" and not r.ok


async def _raw_server(payload: bytes, fragment: int, status: str = "200 OK"):
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 {status}\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n".encode()
        writer.write(head)
        for i in range(0, len(payload), fragment):
            writer.write(payload[i:i + fragment])
            await writer.drain()
            await asyncio.sleep(0.002)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize("fragment", [1, 7, 10_000])
async def test_events_split_across_reads_and_crlf(fragment):
    events = [{"choices": [{"text": "x" * (i + 1), "finish_reason": None}]} for i in range(5)]
    events.append({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 5}})
    body = b"".join(b"data: " + _ev(e) + b"\r\n\r\n" for e in events) + b": keep-alive comment\r\n\r\ndata: [DONE]\r\n\r\n"
    server, url = await _raw_server(body, fragment)
    async with server, make_http_client(10) as client:
        r = await stream_request(client, url + "/v1/completions", {"prompt": "p"})
    assert r.ok, r.error
    assert len(r.chunk_times) == 5 and r.text == "xxxxxxxxxxxxxxx" and r.completion_tokens == 5
    assert r.chunk_times == sorted(r.chunk_times) and r.e2e_s >= r.chunk_times[-1]


async def test_http_error_and_truncated_stream():
    server, url = await _raw_server(b'{"error": "overloaded"}', 100, status="503 Service Unavailable")
    async with server, make_http_client(10) as client:
        r = await stream_request(client, url + "/v1/completions", {})
    assert r.status_code == 503 and "overloaded" in r.error and not r.ok
    server, url = await _raw_server(b'data: {"choices": [{"text": "a"}]}\n\n', 100)
    async with server, make_http_client(10) as client:
        r = await stream_request(client, url + "/v1/completions", {})
    assert not r.ok and "[DONE]" in r.error


async def test_connection_refused_is_a_failed_request():
    async with make_http_client(5) as client:
        r = await stream_request(client, "http://127.0.0.1:9/v1/completions", {})
    assert not r.ok and r.status_code is None and "Connect" in r.error
