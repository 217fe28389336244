"""Errors between vLLM's serving layer and llmd-ray's (pure where it can be).

vLLM decides whether a request is bad and with which status; llmd-ray keeps
its own error body: OpenAI-style ``{"error": {message, type, param, code}}``
with an OpenAI ``type`` and ``param`` naming the request field in
``a.b[0].c`` form. So:

* :func:`from_vllm` turns a vLLM ``ErrorResponse`` (or its dict) into the
  ``LLMDRayError`` of the same status, its param cleaned up;
* :func:`format_validation_error` names the field of a pydantic error the way
  vLLM's handler finds it (a ``VLLMValidationError``'s parameter first),
  without pydantic's union-branch labels;
* :func:`to_vllm_error` goes the other way for failures on the backend path
  (Ray, replicas, llmd-ray's engine errors), so that vLLM's serving code
  reports them with the right status inside a stream;
* :func:`sse_error` rewrites a stream's error event into llmd-ray's body.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llmd_ray.errors import (
    AuthenticationError,
    EngineError,
    InvalidRequestError,
    LLMDRayError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestError,
    RequestTooLargeError,
)

_BY_STATUS: dict[int, type[LLMDRayError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: ModelNotFoundError,
    413: RequestTooLargeError, 429: RateLimitError, 503: EngineError,
}
# pydantic's internal loc segments (union branches, wrappers): not request fields
_INTERNAL = {"function-wrap", "function-after", "function-before", "function-plain", "json-or-python",
             "lax-or-strict", "chain", "default", "nullable", "tagged-union", "union", "call", "arguments",
             "is-instance", "str", "int", "float", "bool", "bytes", "list", "tuple", "dict", "set", "none"}
# words of a vLLM message that place a param-less 400 on the prompt (template, vocabulary, modality errors)
_MUST = re.compile(r"^([a-z][a-z_]*) must ")
_PROMPT_WORDS = re.compile(r"template|conversation|vocabulary|multimodal|prompt|message|image|audio|video")


def clean_param(loc: Any, prompt_param: str = "prompt") -> str | None:
    """``body.messages.0.SomeUnionBranch.content`` -> ``messages[0].content``; vLLM's ``input_tokens`` is the prompt."""
    if loc is None:
        return None
    parts = loc.split(".") if isinstance(loc, str) else list(loc)
    out = ""
    for i, part in enumerate(parts):
        text = str(part)
        if i == 0 and text == "body" and len(parts) > 1:
            continue
        if isinstance(part, int) or text.isdigit():
            out += f"[{text}]"
        elif not text or text[0].isupper() or any(c in text for c in "[]()") or text.lower() in _INTERNAL:
            continue  # a union branch or wrapper, not a field
        else:
            out += f".{text}" if out else text
    if out in ("input_tokens", "prompt_tokens"):
        return prompt_param
    return out or None


def format_validation_error(errors: list[dict], prompt_param: str = "prompt") -> tuple[str, str | None]:
    """(message, param) of a pydantic error list."""
    for err in errors:  # a validator's VLLMValidationError names its parameter: vLLM's handler prefers it
        ctx_error = (err.get("ctx") or {}).get("error")
        if getattr(ctx_error, "parameter", None):
            param = clean_param(ctx_error.parameter, prompt_param)
            return f"{param}: {ctx_error}", param
    # Of a union's failed branches, the deepest location is the most specific (``content[0].text``, not ``content``).
    params = [clean_param(tuple(err.get("loc", ())), prompt_param) for err in errors]
    depth = [p.count(".") + p.count("[") if p else -1 for p in params]
    best = depth.index(max(depth))
    first, param = errors[best], params[best]
    msg = "field required" if first.get("type") == "missing" else str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    parts = [f"{param}: {msg}" if param else msg]
    if len(errors) > 1:
        parts.append(f"(and {len(errors) - 1} more error(s))")
    return " ".join(parts), param


def from_vllm(error: Any, prompt_param: str = "prompt") -> LLMDRayError:
    """A vLLM ``ErrorResponse`` (model or dict, with or without the ``error`` wrapper) as an LLMDRayError."""
    if hasattr(error, "model_dump"):
        error = error.model_dump()
    info = error.get("error", error) if isinstance(error, dict) else {}
    status = int(info.get("code") or 500)
    message = str(info.get("message") or "error")
    param = clean_param(info.get("param"), prompt_param)
    if param is None and status == 400:
        named = _MUST.match(message)  # SamplingParams' own checks: "n must be at least 1, got 0."
        param = named.group(1) if named else prompt_param if _PROMPT_WORDS.search(message.lower()) else None
    if param and param.split("[")[0] not in message:
        message = f"{param}: {message}"  # llmd-ray's messages start with the field they are about
    cls = _BY_STATUS.get(status) or (InvalidRequestError if 400 <= status < 500 else LLMDRayError)
    err = cls(message, param=param)
    if err.status_code != status:
        err.status_code = status  # e.g. 422 (unprocessable), 501 (not implemented) keep theirs
    return err


def to_vllm_error(exc: BaseException) -> BaseException:
    """A failure on the backend path as the exception vLLM's serving code would meet in its own engine."""
    from vllm.exceptions import RetryableRequestError, VLLMError, VLLMValidationError

    from llmd_ray.serving.http_util import as_llmd_error

    cause = getattr(exc, "cause", None)  # Ray wraps a replica's exception; its cause is the original
    if isinstance(cause, BaseException) and not isinstance(cause, type):
        exc = cause
    if isinstance(exc, (VLLMError, ValueError, TypeError)) and not isinstance(exc, LLMDRayError):
        return exc
    err = as_llmd_error(exc) if not isinstance(exc, LLMDRayError) else exc
    if isinstance(err, RequestError):
        return VLLMValidationError(err.message, parameter=err.param)
    return RetryableRequestError(err.message)  # replica or engine failure: 503, retry


def sse_error(event: str, prompt_param: str = "prompt") -> tuple[str, LLMDRayError | None]:
    """A stream event with a vLLM error body rewritten in llmd-ray's shape (others unchanged)."""
    if not event.startswith('data: {"error"'):
        return event, None
    try:
        body = json.loads(event[len("data: "):])
    except ValueError:
        return event, None
    err = from_vllm(body, prompt_param)
    return f"data: {json.dumps(err.to_openai(), separators=(',', ':'))}\n\n", err
