"""OpenAI response bodies and stream chunks built from engine chunks (pure)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Literal

from llmd_ray.engine.types import GenerateChunk, TokenLogprob

Kind = Literal["completion", "chat"]


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion_logprobs(items: list[TokenLogprob], offset: int = 0) -> dict:
    """The legacy completions ``logprobs`` object."""
    offsets, pos = [], offset
    for it in items:
        offsets.append(pos)
        pos += len(it.token)
    return {
        "tokens": [it.token for it in items],
        "token_logprobs": [it.logprob for it in items],
        "top_logprobs": [dict(it.top) for it in items],
        "text_offset": offsets,
    }


def chat_logprobs(items: list[TokenLogprob]) -> dict:
    """The chat ``logprobs`` object: ``{"content": [...]}``."""

    def entry(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {
        "content": [
            {**entry(it.token, it.logprob), "top_logprobs": [entry(t, lp) for t, lp in it.top]} for it in items
        ]
    }


@dataclass(slots=True)
class ResponseBuilder:
    """Builds one request's response: a full body, or SSE chunks as deltas arrive."""

    kind: Kind
    model: str
    request_id: str
    include_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    text_offset: int = 0
    sent_role: bool = False

    @property
    def object_id(self) -> str:
        return ("chatcmpl-" if self.kind == "chat" else "cmpl-") + self.request_id

    def _envelope(self, obj: str, choices: list[dict]) -> dict:
        return {"id": self.object_id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def full(self, chunks: list[GenerateChunk]) -> dict:
        """A non-streaming response from every chunk of the request."""
        last = chunks[-1]
        text = "".join(c.text for c in chunks)
        items = [lp for c in chunks for lp in (c.logprobs or [])]
        has_lp = any(c.logprobs is not None for c in chunks)
        if self.kind == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": chat_logprobs(items) if has_lp else None,
                "finish_reason": last.finish_reason,
            }
            body = self._envelope("chat.completion", [choice])
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": completion_logprobs(items) if has_lp else None,
                "finish_reason": last.finish_reason,
                "stop_reason": last.stop_reason,
            }
            body = self._envelope("text_completion", [choice])
        body["usage"] = usage(last.prompt_tokens, last.completion_tokens, last.cached_tokens)
        return body

    def stream_chunks(self, chunk: GenerateChunk) -> list[dict]:
        """The stream events (as dicts) for one engine chunk, usage chunk last."""
        events: list[dict] = []
        if self.kind == "chat":
            if not self.sent_role:
                self.sent_role = True
                events.append(
                    self._envelope(
                        "chat.completion.chunk",
                        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
                    )
                )
            if chunk.text or chunk.finished:
                delta = {"content": chunk.text} if chunk.text else {}
                lp = chat_logprobs(chunk.logprobs) if chunk.logprobs else None
                events.append(
                    self._envelope(
                        "chat.completion.chunk",
                        [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": chunk.finish_reason}],
                    )
                )
            obj = "chat.completion.chunk"
        else:
            if chunk.text or chunk.finished:
                lp = completion_logprobs(chunk.logprobs, self.text_offset) if chunk.logprobs else None
                events.append(
                    self._envelope(
                        "text_completion",
                        [{"index": 0, "text": chunk.text, "logprobs": lp, "finish_reason": chunk.finish_reason}],
                    )
                )
            self.text_offset += len(chunk.text)
            obj = "text_completion"
        if chunk.finished and self.include_usage:
            final = self._envelope(obj, [])
            final["usage"] = usage(chunk.prompt_tokens, chunk.completion_tokens, chunk.cached_tokens)
            events.append(final)
        return events


def sse(event: dict | str) -> str:
    """One server-sent event line."""
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    return f"data: {data}\n\n"


SSE_DONE = sse("[DONE]")
