"""Streaming OpenAI client: one pooled httpx.AsyncClient, SSE parsed by hand.

Timing rules (the same as `vllm bench serve` unless noted):
  * t0 is taken just before the request is handed to the connection pool;
    the request (JSON body, headers) is built before t0, so encoding a long
    prompt is not counted in TTFT (vLLM's client encodes inside its timing);
  * a *token chunk* is an SSE event whose choice carries generated text
    (`text`, `delta.content`, or reasoning). A chat role-only chunk
    (`{"role": "assistant", "content": ""}`) and a finish-only chunk with
    empty text are not tokens. vLLM may stream an empty-text chunk for a
    token the detokenizer holds back; that counts (no role, no finish);
  * TTFT = first token chunk - t0; ITL = gaps between token chunks (one
    per chunk: a chunk can carry several tokens, so ITLs are per chunk);
  * e2e = end of stream (after `data: [DONE]`) - t0. vLLM's bench stops at
    the last token chunk instead; the usage chunk and [DONE] follow it in
    the same write, so the two agree to microseconds;
  * every event read in one network read gets that read's timestamp.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class StreamResult:
    status_code: int | None = None
    error: str | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    chunk_times: list[float] = field(default_factory=list)  # seconds after t0
    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    usage_reported: bool = False
    request_id: str | None = None  # the server's: the x-request-id response header, else the body's id

    @property
    def ok(self) -> bool:
        return self.status_code == 200 and self.error is None and bool(self.chunk_times)


def make_http_client(timeout_s: float) -> httpx.AsyncClient:
    """No pool limits: the arrival schedule and max_concurrency decide concurrency."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=30.0)
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0))
    return httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False)


def _token_text(choice: dict) -> str | None:
    """Generated text of a chunk's choice, None when the chunk carries no token."""
    if "delta" in choice:
        d = choice["delta"] or {}
        text = d.get("content")
        for key in ("reasoning_content", "reasoning"):
            if d.get(key):
                text = (text or "") + d[key]
        if text is None or (text == "" and ("role" in d or choice.get("finish_reason"))):
            return None
        return text
    text = choice.get("text")
    if text is None or (text == "" and choice.get("finish_reason")):
        return None
    return text


def _apply_usage(res: StreamResult, usage: dict) -> None:
    res.usage_reported = True
    res.prompt_tokens = usage.get("prompt_tokens", res.prompt_tokens)
    res.completion_tokens = usage.get("completion_tokens", res.completion_tokens)
    details = usage.get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        res.cached_tokens = int(details["cached_tokens"])


def handle_event(res: StreamResult, data: bytes, now: float) -> bool:
    """Apply one SSE data payload; returns True on [DONE]."""
    if data == b"[DONE]":
        return True
    msg = json.loads(data)
    if res.request_id is None and isinstance(msg.get("id"), str):
        res.request_id = msg["id"]
    if "error" in msg and not msg.get("choices"):
        err = msg["error"]
        res.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        return False
    for choice in msg.get("choices") or ():
        text = _token_text(choice)
        if text is not None:
            if res.ttft_s is None:
                res.ttft_s = now
            res.chunk_times.append(now)
            res.text += text
            break
    if msg.get("usage"):
        _apply_usage(res, msg["usage"])
    return False


def _feed(res: StreamResult, buf: bytes, now: float) -> tuple[bytes, bool]:
    """Apply every complete SSE event in `buf`; returns (rest, saw [DONE])."""
    done = False
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    while b"\n\n" in buf:
        event, buf = buf.split(b"\n\n", 1)
        for line in event.split(b"\n"):  # ":" comments and other fields are skipped
            if line.startswith(b"data:"):
                done = handle_event(res, line[5:].strip(), now) or done
    return buf, done


async def stream_request(client: httpx.AsyncClient, url: str, payload: dict, headers: dict | None = None) -> StreamResult:
    """POST `payload` with stream=True and time the SSE response."""
    res = StreamResult()
    request = client.build_request("POST", url, json=payload, headers=headers)
    resp, buf, done = None, b"", False
    t0 = time.perf_counter()
    try:
        resp = await client.send(request, stream=True)
        res.status_code = resp.status_code
        res.request_id = resp.headers.get("x-request-id")
        if resp.status_code != 200:
            body = (await resp.aread()).decode("utf-8", "replace")
            res.error = f"HTTP {resp.status_code}: {body[:500]}"
        else:
            async for raw in resp.aiter_bytes():
                buf, saw_done = _feed(res, buf + raw, time.perf_counter() - t0)
                done = done or saw_done
            if buf.strip():  # the stream closed without a trailing blank line
                _, saw_done = _feed(res, buf.strip() + b"\n\n", time.perf_counter() - t0)
                done = done or saw_done
        res.e2e_s = time.perf_counter() - t0
        if res.error is None and not res.chunk_times:
            res.error = "stream ended without any token chunk"
        elif res.error is None and not done:
            res.error = "stream ended without data: [DONE]"
    except Exception as exc:  # noqa: BLE001 - transport errors, timeouts, bad JSON: a failed request
        res.e2e_s = time.perf_counter() - t0
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        if resp is not None:
            await resp.aclose()
    return res


def _payload(model: str, body: dict, max_tokens: int, ignore_eos: bool, temperature: float | None,
             extra: dict) -> dict:
    p = {"model": model, **body, "max_tokens": max_tokens, "stream": True,
         "stream_options": {"include_usage": True}}
    if ignore_eos:
        p["ignore_eos"] = True
    if temperature is not None:
        p["temperature"] = temperature
    p.update(extra)
    return p


def completions_payload(model: str, prompt: str, max_tokens: int, ignore_eos: bool,
                        temperature: float | None, extra: dict) -> dict:
    return _payload(model, {"prompt": prompt}, max_tokens, ignore_eos, temperature, extra)


def chat_payload(model: str, messages: list[dict], max_tokens: int, ignore_eos: bool,
                 temperature: float | None, extra: dict) -> dict:
    return _payload(model, {"messages": messages}, max_tokens, ignore_eos, temperature, extra)
