"""The OpenAI-compatible ingress: FastAPI routes and a Python API on one deployment.

Per request: authenticate (when API keys are configured) and apply the key's
rate limit, read the body under a size limit, validate it (a 4xx naming the
field on failure), tokenize once with the model's tokenizer and chat template,
pick the QoS class, pass the flow-control gate (admit, queue, or 429/503),
then stream :class:`GenerateChunk` deltas from an ``LLMServer`` replica and
format them as an OpenAI body or SSE events. A client disconnect cancels the
downstream call, which aborts the engine request. Prompt and completion text
is never logged.

Python API (through ``serve.get_app_handle(name)``)::

    await handle.chat.remote({"messages": [...]}, qos="batch")              # -> dict
    async for c in handle.options(stream=True).chat_stream.remote({...}):  # -> chunk dicts
    ...
    # and completions / completions_stream alike; flow_status() -> the gate's state.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.models import resolve_model
from llmd_ray.engine.types import GenerateChunk, GenerateRequest, SamplingOptions
from llmd_ray.errors import (
    ConfigError,
    EngineError,
    InvalidRequestError,
    LLMDRayError,
    PromptTooLongError,
    RateLimitError,
)
from llmd_ray.serving.auth import AuthConfig, KeyStore, Principal
from llmd_ray.serving.dispatch import ingress_dispatcher
from llmd_ray.serving.http_util import as_llmd_error, error_response, read_json_body
from llmd_ray.serving.flow_control import FlowControlConfig, FlowController, Permit, StatsPoller
from llmd_ray.serving.openai_format import SSE_DONE, ResponseBuilder, sse
from llmd_ray.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    add_openapi_components,
    format_validation_error,
    openapi_extra,
)
from llmd_ray.topology.qos import QoSConfig
from llmd_ray.serving.qos_metrics import QoSMetrics, Timing
from llmd_ray.serving.tokenizer import PromptRenderer

logger = logging.getLogger(__name__)
Kind = Literal["completion", "chat"]
SESSION_HEADER = "x-session-id"
REPLICA_HEADER = "x-llmd-replica"  # response header: the Serve replica that served the request
QOS_HEADER = "x-llmd-qos"  # the default of QoSConfig.header; documented in the OpenAPI schema


class IngressConfig(BaseModel):
    """Limits and behaviour of the OpenAI ingress."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body accepted (413 above).")
    max_tokens_limit: int | None = Field(
        default=None, ge=1, description="Largest max_tokens accepted; None means the model's context."
    )
    max_prompt_tokens: int | None = Field(
        default=None, ge=1, description="Longest prompt accepted, in tokens; None means the model's context."
    )
    flow_control: FlowControlConfig = Field(
        default_factory=FlowControlConfig, description="Admission gate: priority queue, saturation, shedding."
    )
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Optional API keys, rate limits, key classes.")


app = FastAPI(title="llmd-ray OpenAI API", version="1")


def _openapi() -> dict:
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes, description=__doc__.split("\n")[0])
        app.openapi_schema = add_openapi_components(doc)
    return app.openapi_schema


app.openapi = _openapi
_HEADERS = {QOS_HEADER: "QoS class, e.g. interactive, standard, batch.", SESSION_HEADER: "Session id for routing affinity."}


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown paths and methods get an OpenAI-style body too."""
    etype = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    body = {"error": {"message": str(exc.detail), "type": etype, "param": None, "code": exc.status_code}}
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = format_validation_error(list(exc.errors()))
    return error_response(InvalidRequestError(message, param=param))


@dataclass(slots=True)
class Prepared:
    """A validated, tokenized request and its class, ready for the gate."""

    stream: bool
    request: GenerateRequest
    builder: ResponseBuilder
    qos: str
    tenant: str


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(app)
class OpenAIIngress:
    async def __init__(
        self,
        llm: DeploymentHandle | dict[str, DeploymentHandle],  # one LLMServer, or one per variant (variants.py)
        engine_config: EngineConfig | dict,
        ingress_config: IngressConfig | dict | None = None,
        qos_config: QoSConfig | dict | None = None,
        dispatch: dict | None = None,  # DispatchConfig (dispatch.py)
    ):
        self.engine_config = EngineConfig.model_validate(engine_config)
        self.config = IngressConfig.model_validate(ingress_config or {})
        self.variants = ingress_dispatcher(llm, dispatch)  # picks each request's variant; polls their replicas
        self.qos = QoSConfig.model_validate(qos_config or {})
        path = resolve_model(self.engine_config.tokenizer or self.engine_config.model)
        self.renderer = PromptRenderer.from_pretrained(path, self.engine_config.max_model_len)
        self.model_name = self.engine_config.name
        self.created = int(time.time())
        self.keys = KeyStore.from_config(self.config.auth)
        unknown = (self.keys.classes if self.keys else set()) - set(self.qos.classes)
        if unknown:
            raise ConfigError(f"auth: qos_class {sorted(unknown)} not among the QoS classes {sorted(self.qos.classes)}")
        self.metrics = QoSMetrics(self.qos.classes, self.model_name)
        self.flow = FlowController(self.config.flow_control, self.qos.classes, self.metrics)
        if self.flow.blind_per_replica is None:  # stale stats: never more in flight than the engines batch
            self.flow.blind_per_replica = self.engine_config.max_num_seqs
        self.poller = StatsPoller(lambda: self.variants.stats_handle().stats.remote(), self.flow)
        if self.config.flow_control.enabled:
            self.poller.start()

    # ------------------------------------------------------------ HTTP routes
    @app.get("/health")
    async def health(self):
        """Readiness: 200 once an engine replica answers; 503 (OpenAI-style, Retry-After) while none does."""
        if not await self.variants.ready():
            return error_response(EngineError("no engine replica is ready yet", code="not_ready", retry_after_s=2))
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self, request: Request):
        try:
            self._authenticate(request)
        except LLMDRayError as e:
            return error_response(e)
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

    @app.post("/v1/completions", openapi_extra=openapi_extra("CompletionRequest", _HEADERS))
    async def http_completions(self, request: Request):
        return await self._serve_http(request, "completion")

    @app.post("/v1/chat/completions", openapi_extra=openapi_extra("ChatCompletionRequest", _HEADERS))
    async def http_chat_completions(self, request: Request):
        return await self._serve_http(request, "chat")

    async def _serve_http(self, request: Request, kind: Kind):
        timing, permit = Timing(time.monotonic()), None
        try:
            principal = self._authenticate(request, rate_limited=True)
            body = await read_json_body(request, self.config.max_body_bytes)
            prep = self._prepare(
                body, kind, request.headers.get(SESSION_HEADER), request.headers.get(self.qos.header), principal
            )
            permit = await self.flow.acquire(prep.qos, prep.tenant)
            gen = self._launch(prep)
            if not prep.stream:
                chunks = [c async for c in gen]
                self._finished(permit, timing, ok=True)
                return JSONResponse(prep.builder.full(chunks), headers=self._headers(prep, chunks[0] if chunks else None))
            first = await gen.__anext__()  # errors before the first token still get a status code
            timing.chunk(first)
        except LLMDRayError as e:
            self._finished(permit, timing, ok=False)
            return error_response(e)
        except StopAsyncIteration:
            self._finished(permit, timing, ok=False)
            return error_response(EngineError("engine returned no output"))
        except Exception as e:
            self._finished(permit, timing, ok=False)
            return error_response(as_llmd_error(e))
        except BaseException:  # cancelled: the client went away
            self._finished(permit, timing, ok=False)
            raise
        return StreamingResponse(
            self._sse(first, gen, prep.builder, permit, timing),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **self._headers(prep, first)},
        )

    def _headers(self, prep, first: GenerateChunk | None) -> dict[str, str]:
        """Response headers: request id, QoS class, and the replica that served (``x-llmd-replica``)."""
        headers = {"x-request-id": prep.builder.request_id, self.qos.header: prep.qos}
        if first is not None and first.replica:
            headers[REPLICA_HEADER] = first.replica
        return headers

    async def _sse(
        self, first: GenerateChunk, gen, builder: ResponseBuilder, permit: Permit, timing: Timing
    ) -> AsyncIterator[str]:
        finished = first.finished
        try:
            for event in builder.stream_chunks(first):
                yield sse(event)
            while not finished:
                chunk = await gen.__anext__()
                timing.chunk(chunk)
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
            self._finished(permit, timing, ok=finished)
        yield SSE_DONE

    def _authenticate(self, request: Request, rate_limited: bool = False) -> Principal | None:
        if self.keys is None:
            return None
        principal = self.keys.authenticate(request.headers.get("authorization"))
        if rate_limited:
            try:
                self.keys.check_rate(principal)
            except RateLimitError:
                self.metrics.rejected(principal.qos_class or self.qos.default_class, "rate_limited")
                raise
        return principal

    def _finished(self, permit: Permit | None, timing: Timing, ok: bool) -> None:
        if permit is None:
            return
        permit.release()
        if ok:
            self.metrics.finished(permit.qos, time.monotonic() - timing.arrived, *timing.ttft_itl())

    # ------------------------------------------------------------- Python API
    async def completions(self, body: dict, session_id: str | None = None, qos: str | None = None) -> dict:
        return await self._full(body, "completion", session_id, qos)

    async def chat(self, body: dict, session_id: str | None = None, qos: str | None = None) -> dict:
        return await self._full(body, "chat", session_id, qos)

    async def completions_stream(
        self, body: dict, session_id: str | None = None, qos: str | None = None
    ) -> AsyncIterator[dict]:
        async for event in self._stream(body, "completion", session_id, qos):
            yield event

    async def chat_stream(self, body: dict, session_id: str | None = None, qos: str | None = None) -> AsyncIterator[dict]:
        async for event in self._stream(body, "chat", session_id, qos):
            yield event

    def flow_status(self) -> dict:
        """The gate's state: in flight, queued per class, saturated, and the replica loads it last saw."""
        replicas = {k: (r.num_waiting, r.kv_cache_usage) for k, r in self.poller.loads.items()}
        return {**self.flow.status(), "replicas": replicas, "variants": self.variants.status()}

    async def _full(self, body: dict, kind: Kind, session_id: str | None, qos: str | None) -> dict:
        timing = Timing(time.monotonic())
        prep = self._prepare({**body, "stream": False}, kind, session_id, qos, None)
        permit = await self.flow.acquire(prep.qos, prep.tenant)
        ok = False
        try:
            chunks = [c async for c in self._launch(prep)]
            ok = True
        finally:
            self._finished(permit, timing, ok)
        return prep.builder.full(chunks)

    async def _stream(self, body: dict, kind: Kind, session_id: str | None, qos: str | None) -> AsyncIterator[dict]:
        timing = Timing(time.monotonic())
        prep = self._prepare({**body, "stream": True}, kind, session_id, qos, None)
        permit = await self.flow.acquire(prep.qos, prep.tenant)
        ok = False
        try:
            async for chunk in self._launch(prep):
                timing.chunk(chunk)
                ok = chunk.finished
                for event in prep.builder.stream_chunks(chunk):
                    yield event
        finally:
            self._finished(permit, timing, ok)

    # ---------------------------------------------------------------- shared
    def _prepare(
        self, body: dict, kind: Kind, session_id: str | None, qos_header: str | None, principal: Principal | None
    ) -> Prepared:
        """Validate, tokenize and classify. Raises RequestError."""
        model_cls = ChatCompletionRequest if kind == "chat" else CompletionRequest
        try:
            req = model_cls.model_validate(body)
        except ValidationError as e:
            message, param = format_validation_error(e.errors(include_url=False))
            raise InvalidRequestError(message, param=param) from None
        qos = self.qos.select(
            served_model=self.model_name, model=req.model, header=qos_header,
            key_class=principal.qos_class if principal else None,
        )
        if kind == "chat":
            ids = self.renderer.render_chat(req.messages)
            limit_param, limit = (
                ("max_tokens", req.max_tokens) if req.max_tokens is not None else ("max_completion_tokens", req.max_completion_tokens)
            )
            if req.top_logprobs is not None and not req.logprobs:
                raise InvalidRequestError("top_logprobs: requires logprobs to be true", param="top_logprobs")
            logprobs = (req.top_logprobs or 0) if req.logprobs else None
            prompt_param = "messages"
        else:
            ids = self.renderer.render_completion(req.prompt)
            limit_param, limit, logprobs, prompt_param = "max_tokens", req.max_tokens, req.logprobs, "prompt"
        cap = self.config.max_prompt_tokens
        if cap is not None and len(ids) > cap:
            raise PromptTooLongError(
                f"{prompt_param}: prompt is {len(ids)} tokens; this server accepts at most {cap}", param=prompt_param
            )
        if limit is not None and self.config.max_tokens_limit is not None and limit > self.config.max_tokens_limit:
            raise InvalidRequestError(
                f"{limit_param}: {limit} exceeds this server's limit of {self.config.max_tokens_limit}", param=limit_param
            )
        max_tokens = self.renderer.output_budget(len(ids), limit, limit_param)
        if self.config.max_tokens_limit is not None:
            max_tokens = min(max_tokens, self.config.max_tokens_limit)  # an omitted max_tokens is capped too
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
        tenant = principal.name if principal else (req.user or "-")[:128]
        return Prepared(req.stream, gen_request, builder, qos, tenant)

    def _launch(self, prep: Prepared):  # re-sent (dead replica, variant scaled to 0) until the first token
        return self.variants.stream(prep.request)
