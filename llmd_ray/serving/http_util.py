"""HTTP helpers of the OpenAI ingress: errors as OpenAI-style JSON responses, and bounded JSON bodies.

``as_llmd_error`` maps any failure to an ``LLMDRayError`` with a status (Ray's
failures become 503, anything unexpected a logged 500 that quotes no request
text); ``read_json_body`` reads a body under a byte limit (413 above it) and
requires a JSON object, naming ``body`` in its errors.
"""

from __future__ import annotations

import json
import logging
import traceback

from fastapi import Request
from fastapi.responses import JSONResponse

from llmd_ray.errors import EngineError, InvalidRequestError, LLMDRayError, RequestTooLargeError

logger = logging.getLogger("llmd_ray.serving.ingress")


def error_response(err: LLMDRayError) -> JSONResponse:
    return JSONResponse(err.to_openai(), status_code=err.status_code, headers=err.headers())


def as_llmd_error(exc: BaseException) -> LLMDRayError:
    """Any failure as an error with a status: ours keep theirs, Ray's become 503."""
    if isinstance(exc, LLMDRayError):
        return exc
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LLMDRayError):
        return cause
    if type(exc).__module__.startswith("ray"):
        return EngineError(f"serving replica failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    # The message may quote request text: log the type and the stack only.
    logger.error("unexpected error %s\n%s", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
    return LLMDRayError(f"internal error: {type(exc).__name__}")


async def read_json_body(request: Request, limit: int) -> dict:
    """The request body as a JSON object, read under a byte limit."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"request body is {declared} bytes; the limit is {limit}", param="body")
    buf = bytearray()
    async for part in request.stream():
        buf += part
        if len(buf) > limit:
            raise RequestTooLargeError(f"request body exceeds the limit of {limit} bytes", param="body")
    try:
        data = json.loads(buf)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InvalidRequestError(f"malformed JSON body: {str(e)[:200]}", param="body") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object", param="body")
    return data
