"""Comparing llmd-ray's answers with vLLM's own server's (pure; used by tests/integration/test_openai_parity.py).

A :class:`Case` is one request. :func:`outcome` reduces a response (status,
JSON body or SSE events) to what parity is judged on; :func:`differences`
lists how two outcomes differ:

* the status class (2xx, 4xx, 5xx);
* the set of fields, recursively (dict keys; list items by position; for a
  stream, the union over its chunks, plus the error events);
* when the case is deterministic (greedy or seeded): each choice's text,
  finish reason, tool calls, token counts, and logprob tokens (values within
  ``LOGPROB_TOL``).

A case with ``by_design`` is a documented, intended difference: the test
checks llmd-ray's own answer for it and the parity table says "differs by
design" with the reason. Values that differ by nature (ids, timestamps, fingerprints, cached-token
counts, error messages) are not compared; fields llmd-ray adds are headers,
which are not compared either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

LOGPROB_TOL = 0.05


@dataclass(slots=True)
class Case:
    name: str
    path: str
    body: dict | None = None  # None: GET
    deterministic: bool = True  # compare text, tool calls, counts
    raw: bytes | None = None  # a raw body instead of JSON
    by_design: str | None = None  # the reason llmd-ray's answer differs from vLLM's on purpose (then checked apart)


@dataclass(slots=True)
class Outcome:
    status: int
    fields: set[str] = field(default_factory=set)
    choices: dict[int, dict] = field(default_factory=dict)  # index -> {text, finish_reason, tool_calls, logprobs}
    usage: dict | None = None
    errors: list[dict] = field(default_factory=list)
    other: Any = None  # a non-choice body's comparable values (tokenize, models)


def field_paths(obj: Any, prefix: str = "") -> set[str]:
    """Every field path of a JSON value: ``choices[].message.content``."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{prefix}.{k}" if prefix else str(k)
            out.add(p)
            out |= field_paths(v, p)
    elif isinstance(obj, list):
        for v in obj:
            out |= field_paths(v, prefix + "[]")
    return out


def _choice_values(choice: dict, stream: bool) -> dict:
    msg = choice.get("delta" if stream else "message") or {}
    text = choice.get("text") if "text" in choice else msg.get("content")
    lp = choice.get("logprobs")
    tokens = None
    if isinstance(lp, dict):
        if "content" in lp and lp["content"] is not None:
            tokens = [(t["token"], t["logprob"]) for t in lp["content"]]
        elif "tokens" in lp:
            tokens = list(zip(lp["tokens"], lp["token_logprobs"]))
    calls = [(c.get("function", {}).get("name"), c.get("function", {}).get("arguments"))
             for c in msg.get("tool_calls") or []]
    return {"text": text or "", "finish_reason": choice.get("finish_reason"), "tool_calls": calls,
            "logprobs": tokens or [], "reasoning": msg.get("reasoning") or ""}


def outcome(status: int, content_type: str, text: str) -> Outcome:
    """What parity judges of one response."""
    out = Outcome(status)
    if "text/event-stream" in content_type:
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        for ev in events:
            if ev == "[DONE]":
                out.fields.add("[DONE]")
                continue
            body = json.loads(ev)
            out.fields |= field_paths(body)
            if "error" in body:
                out.errors.append(body["error"])
                continue
            if body.get("usage"):
                out.usage = body["usage"]
            for ch in body.get("choices") or []:
                acc = out.choices.setdefault(ch["index"], {"text": "", "finish_reason": None, "tool_calls": [],
                                                           "logprobs": [], "reasoning": ""})
                vals = _choice_values(ch, stream=True)
                acc["text"] += vals["text"]
                acc["reasoning"] += vals["reasoning"]
                acc["logprobs"] += vals["logprobs"]
                acc["finish_reason"] = vals["finish_reason"] or acc["finish_reason"]
                for name, args in vals["tool_calls"]:  # streamed tool calls: name first, then argument pieces
                    if name:
                        acc["tool_calls"].append([name, args or ""])
                    elif acc["tool_calls"]:
                        acc["tool_calls"][-1][1] += args or ""
        for acc in out.choices.values():
            acc["tool_calls"] = [tuple(c) for c in acc["tool_calls"]]
        return out
    try:
        body = json.loads(text)
    except ValueError:
        out.fields.add("<not json>")
        return out
    out.fields = field_paths(body)
    if isinstance(body, dict) and "error" in body:
        out.errors.append(body["error"])
    elif isinstance(body, dict) and "choices" in body:
        out.choices = {ch["index"]: _choice_values(ch, stream=False) for ch in body["choices"]}
        out.usage = body.get("usage")
    elif isinstance(body, dict):
        out.other = {k: v for k, v in body.items() if k in ("tokens", "count", "prompt", "max_model_len", "version")}
        if "data" in body:
            out.other["ids"] = [m.get("id") for m in body["data"]]
    return out


def _close(a: list, b: list) -> bool:
    if [t for t, _ in a] != [t for t, _ in b]:
        return False
    return all(x is None and y is None or (x is not None and y is not None and abs(x - y) <= LOGPROB_TOL)
               for (_, x), (_, y) in zip(a, b))


def differences(ref: Outcome, got: Outcome, deterministic: bool = True) -> list[str]:
    """How ``got`` (llmd-ray) differs from ``ref`` (vLLM); empty when they agree."""
    diffs = []
    if ref.status // 100 != got.status // 100:
        diffs.append(f"status {ref.status} vs {got.status}")
    if ref.fields != got.fields:
        diffs.append(f"fields only in vLLM {sorted(ref.fields - got.fields)}, "
                     f"only in llmd-ray {sorted(got.fields - ref.fields)}")
    if bool(ref.errors) != bool(got.errors):
        diffs.append(f"errors {ref.errors} vs {got.errors}")
    if sorted(ref.choices) != sorted(got.choices):
        diffs.append(f"choice indexes {sorted(ref.choices)} vs {sorted(got.choices)}")
    if ref.other != got.other and not (isinstance(ref.other, dict) and "ids" in ref.other
                                       and ref.other.get("ids") == (got.other or {}).get("ids")):
        diffs.append(f"body {ref.other} vs {got.other}")
    if not deterministic:
        return diffs
    for i in sorted(set(ref.choices) & set(got.choices)):
        a, b = ref.choices[i], got.choices[i]
        for key in ("text", "finish_reason", "tool_calls", "reasoning"):
            if a[key] != b[key]:
                diffs.append(f"choice {i} {key}: {a[key]!r} vs {b[key]!r}")
        if not _close(a["logprobs"], b["logprobs"]):
            diffs.append(f"choice {i} logprobs: {a['logprobs'][:4]} vs {b['logprobs'][:4]}")
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if (ref.usage or {}).get(key) != (got.usage or {}).get(key):
            diffs.append(f"usage.{key}: {(ref.usage or {}).get(key)} vs {(got.usage or {}).get(key)}")
    return diffs
