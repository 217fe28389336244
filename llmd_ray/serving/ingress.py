"""The OpenAI-compatible ingress: FastAPI routes and a Python API on one deployment.

Per request: read the body under a size limit, validate it (a 4xx naming the
field on failure), tokenize once with the model's tokenizer and chat
template, then stream :class:`GenerateChunk` deltas from an ``LLMServer``
replica and format them as an OpenAI body or SSE events. A client
disconnect cancels the downstream call, which aborts the engine request.

Python API (through ``serve.get_app_handle(name)``)::

    await handle.chat.remote({"messages": [...]})                          # -> dict
    async for c in handle.options(stream=True).chat_stream.remote({...}):  # -> chunk dicts
    ...
    # and completions / completions_stream alike.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.tiny import resolve_model
from llmd_ray.engine.types import GenerateChunk, GenerateRequest, SamplingOptions
from llmd_ray.errors import (
    EngineError,
    InvalidRequestError,
    LLMDRayError,
    ModelNotFoundError,
    RequestTooLargeError,
)
from llmd_ray.serving.openai_format import SSE_DONE, ResponseBuilder, sse
from llmd_ray.serving.protocol import ChatCompletionRequest, CompletionRequest, format_validation_error
from llmd_ray.serving.tokenizer import PromptRenderer

logger = logging.getLogger(__name__)
Kind = Literal["completion", "chat"]
SESSION_HEADER = "x-session-id"


class IngressConfig(BaseModel):
    """Limits and behaviour of the OpenAI ingress."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body accepted (413 above).")
    max_tokens_limit: int | None = Field(
        default=None, ge=1, description="Largest max_tokens accepted; None means the model's context."
    )


app = FastAPI(title="llmd-ray OpenAI API", version="1")


def error_response(err: LLMDRayError) -> JSONResponse:
    return JSONResponse(err.to_openai(), status_code=err.status_code)


def as_llmd_error(exc: BaseException) -> LLMDRayError:
    """Any failure as an error with a status: ours keep theirs, Ray's become 503."""
    if isinstance(exc, LLMDRayError):
        return exc
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LLMDRayError):
        return cause
    if type(exc).__module__.startswith("ray"):
        return EngineError(f"serving replica failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    logger.exception("unexpected error", exc_info=exc)
    err = LLMDRayError(f"internal error: {type(exc).__name__}")
    return err


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
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"malformed JSON body: {e}", param="body") from e
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object", param="body")
    return data


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(app)
class OpenAIIngress:
    def __init__(self, llm: DeploymentHandle, engine_config: EngineConfig | dict, ingress_config: dict | None = None):
        self.llm = llm
        self.engine_config = EngineConfig.model_validate(engine_config)
        self.config = IngressConfig.model_validate(ingress_config or {})
        path = resolve_model(self.engine_config.tokenizer or self.engine_config.model)
        self.renderer = PromptRenderer.from_pretrained(path, self.engine_config.max_model_len)
        self.model_name = self.engine_config.name
        self.created = int(time.time())

    # ------------------------------------------------------------ HTTP routes
    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self) -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "llmd-ray",
                    "max_model_len": self.renderer.max_model_len,
                }
            ],
        }

    @app.post("/v1/completions", openapi_extra={"requestBody": {"content": {"application/json": {"schema": CompletionRequest.model_json_schema()}}, "required": True}})
    async def http_completions(self, request: Request):
        return await self._serve_http(request, "completion")

    @app.post("/v1/chat/completions", openapi_extra={"requestBody": {"content": {"application/json": {"schema": ChatCompletionRequest.model_json_schema()}}, "required": True}})
    async def http_chat_completions(self, request: Request):
        return await self._serve_http(request, "chat")

    async def _serve_http(self, request: Request, kind: Kind):
        try:
            body = await read_json_body(request, self.config.max_body_bytes)
            req, gen, builder = self._start(body, kind, request.headers.get(SESSION_HEADER))
            if not req.stream:
                return JSONResponse(builder.full([c async for c in gen]))
            first = await gen.__anext__()  # errors before the first token still get a status code
        except LLMDRayError as e:
            return error_response(e)
        except StopAsyncIteration:
            return error_response(EngineError("engine returned no output"))
        except Exception as e:
            return error_response(as_llmd_error(e))
        return StreamingResponse(
            self._sse(first, gen, builder),
            media_type="text/event-stream",
            headers={"x-request-id": builder.request_id, "cache-control": "no-cache"},
        )

    async def _sse(self, first: GenerateChunk, gen, builder: ResponseBuilder) -> AsyncIterator[str]:
        finished = first.finished
        try:
            for event in builder.stream_chunks(first):
                yield sse(event)
            while not finished:
                chunk = await gen.__anext__()
                finished = chunk.finished
                for event in builder.stream_chunks(chunk):
                    yield sse(event)
        except StopAsyncIteration:
            err = EngineError("stream ended before the request finished")
            yield sse(err.to_openai())
        except Exception as e:  # replica died or engine failed mid-stream: say so, then close
            yield sse(as_llmd_error(e).to_openai())
        finally:
            if not finished:
                gen.cancel()  # client went away (or failed): abort downstream
        yield SSE_DONE

    # ------------------------------------------------------------- Python API
    async def completions(self, body: dict, session_id: str | None = None) -> dict:
        return await self._full(body, "completion", session_id)

    async def chat(self, body: dict, session_id: str | None = None) -> dict:
        return await self._full(body, "chat", session_id)

    async def completions_stream(self, body: dict, session_id: str | None = None) -> AsyncIterator[dict]:
        async for event in self._stream(body, "completion", session_id):
            yield event

    async def chat_stream(self, body: dict, session_id: str | None = None) -> AsyncIterator[dict]:
        async for event in self._stream(body, "chat", session_id):
            yield event

    async def _full(self, body: dict, kind: Kind, session_id: str | None) -> dict:
        _, gen, builder = self._start({**body, "stream": False}, kind, session_id)
        return builder.full([c async for c in gen])

    async def _stream(self, body: dict, kind: Kind, session_id: str | None) -> AsyncIterator[dict]:
        _, gen, builder = self._start({**body, "stream": True}, kind, session_id)
        async for chunk in gen:
            for event in builder.stream_chunks(chunk):
                yield event

    # ---------------------------------------------------------------- shared
    def _start(self, body: dict, kind: Kind, session_id: str | None):
        """Validate and tokenize; start the downstream stream. Raises RequestError."""
        model_cls = ChatCompletionRequest if kind == "chat" else CompletionRequest
        try:
            req = model_cls.model_validate(body)
        except ValidationError as e:
            message, param = format_validation_error(e.errors(include_url=False))
            raise InvalidRequestError(message, param=param) from None
        if req.model is not None and req.model != self.model_name:
            raise ModelNotFoundError(
                f"model '{req.model}' does not exist; this server serves '{self.model_name}'",
                param="model",
                code="model_not_found",
            )
        if kind == "chat":
            ids = self.renderer.render_chat(req.messages)
            limit_param, limit = (
                ("max_tokens", req.max_tokens) if req.max_tokens is not None else ("max_completion_tokens", req.max_completion_tokens)
            )
            if req.top_logprobs is not None and not req.logprobs:
                raise InvalidRequestError("top_logprobs: requires logprobs to be true", param="top_logprobs")
            logprobs = (req.top_logprobs or 0) if req.logprobs else None
        else:
            ids = self.renderer.render_completion(req.prompt)
            limit_param, limit, logprobs = "max_tokens", req.max_tokens, req.logprobs
        if limit is not None and self.config.max_tokens_limit is not None and limit > self.config.max_tokens_limit:
            raise InvalidRequestError(
                f"{limit_param}: {limit} exceeds this server's limit of {self.config.max_tokens_limit}", param=limit_param
            )
        max_tokens = self.renderer.output_budget(len(ids), limit, limit_param)
        if req.min_tokens > max_tokens:
            raise InvalidRequestError(f"min_tokens: {req.min_tokens} exceeds max_tokens {max_tokens}", param="min_tokens")
        request_id = uuid.uuid4().hex
        gen_request = GenerateRequest(
            request_id=request_id,
            prompt_token_ids=ids,
            sampling=SamplingOptions(
                max_tokens=max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                seed=req.seed,
                stop=req.stop,
                logprobs=logprobs,
                ignore_eos=req.ignore_eos,
                min_tokens=req.min_tokens,
            ),
            stream=req.stream,
            session_id=session_id,
        )
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        builder = ResponseBuilder(kind, self.model_name, request_id, include_usage=include_usage)
        gen = self.llm.options(stream=True).generate.remote(gen_request)
        return req, gen, builder
