"""The one coroutine every chat or completion request goes through, from HTTP or a DeploymentHandle.

    prepare (vLLM's request model; llmd-ray's refusals, limits, QoS class)
      -> admission (flow-control permit of the class)
      -> vLLM's serving class (template, tools, tokenize once, SamplingParams)
           -> RemoteEngineClient.generate -> backend (router -> engine replica)
      -> a full response body, or SSE events (the first one awaited, so that
         failures before the first token still get a status and the response
         headers name the replica that answered)

The permit is released exactly once, when the response body is built or the
stream ends (or is abandoned by the client, which also cancels the engine
requests). Errors come out as ``LLMDRayError`` (OpenAI-style body, status,
the field at fault), whatever layer raised them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from llmd_ray.errors import EngineError, LLMDRayError
from llmd_ray.frontdoor.admission import Admission
from llmd_ray.frontdoor.config import IngressConfig
from llmd_ray.frontdoor.context import CURRENT, RequestContext
from llmd_ray.frontdoor.errors import from_vllm, sse_error
from llmd_ray.frontdoor.prepare import Kind, Prepared, prepare
from llmd_ray.frontdoor.vllm_state import VllmFrontend

REPLICA_HEADER = "x-llmd-replica"  # response header: the Serve replica that served the request
SSE_DONE = "data: [DONE]\n\n"


@dataclass(slots=True)
class Caller:
    """How a request arrived: its key, headers (HTTP) or handle arguments."""

    principal: Any = None  # auth.Principal, when API keys are on
    qos_header: str | None = None
    session_id: str | None = None
    raw_request: Any = None  # the Starlette request (vLLM reads X-Request-Id, X-Session-ID, priority headers)


@dataclass(slots=True)
class Reply:
    """A full body, or SSE events (ending with ``data: [DONE]``), and the response headers."""

    headers: dict[str, str]
    body: dict | None = None
    events: AsyncIterator[str] | None = None
    context: RequestContext = field(default_factory=RequestContext)


class Pipeline:
    def __init__(self, frontend: VllmFrontend, admission: Admission, config: IngressConfig, qos: Any,
                 served_model: str):
        self.frontend = frontend
        self.admission = admission
        self.config = config
        self.qos = qos
        self.served_model = served_model

    async def run(self, kind: Kind, body: dict, caller: Caller) -> Reply:
        ctx, permit, prompt_param = RequestContext(), None, "messages" if kind == "chat" else "prompt"
        ctx.prompt_param = prompt_param
        try:
            p = self._prepare(kind, body, caller)
            ctx.max_prompt_tokens = self.config.max_prompt_tokens
            ctx.max_tokens_cap = self.config.max_tokens_limit
            ctx.max_migrations = self.config.max_stream_migrations
            permit = await self.admission.acquire(p.qos, p.tenant)
            token = CURRENT.set(ctx)
            try:
                result = await self._serve(p, caller)
            finally:
                CURRENT.reset(token)
            if not p.stream or not hasattr(result, "__anext__"):
                self.admission.finished(permit, ctx.timing, ok=True)
                return Reply(self._headers(p, ctx), body=result.model_dump(), context=ctx)
            try:
                first = await result.__anext__()  # the first token (or an error event)
            except StopAsyncIteration:
                raise EngineError("the engine returned no output") from None
            events = self._events(first, result, ctx, permit, prompt_param)
            return Reply(self._headers(p, ctx), events=events, context=ctx)
        except BaseException as e:
            self.admission.finished(permit, ctx.timing, ok=False)
            ctx.cancel()
            if isinstance(e, Exception) and not isinstance(e, LLMDRayError):
                raise as_llmd(e, prompt_param) from None
            raise

    def _prepare(self, kind: Kind, body: dict, caller: Caller) -> Prepared:
        principal = caller.principal
        return prepare(
            kind, body, qos_config=self.qos, served_model=self.served_model, qos_header=caller.qos_header,
            key_class=principal.qos_class if principal else None, principal_name=principal.name if principal else None,
            session_id=caller.session_id, max_tokens_limit=self.config.max_tokens_limit,
            unknown_fields=self.config.unknown_fields, adapters=self.frontend.models.lora_requests,
        )

    async def _serve(self, p: Prepared, caller: Caller) -> Any:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        if p.kind == "chat":
            result = await self.frontend.chat.create_chat_completion(p.request, caller.raw_request)
        else:
            result = await self.frontend.completion.create_completion(p.request, caller.raw_request)
        if isinstance(result, ErrorResponse):
            raise from_vllm(result, p.prompt_param)
        return result

    def _headers(self, p: Prepared, ctx: RequestContext) -> dict[str, str]:
        """llmd-ray's response headers (Serve's proxy adds ``x-request-id``, the id vLLM's body carries too)."""
        headers = {self.qos.header: p.qos}
        if ctx.replica:
            headers[REPLICA_HEADER] = ctx.replica
        return headers

    async def _events(self, first: str, rest: Any, ctx: RequestContext, permit: Any,
                      prompt_param: str) -> AsyncIterator[str]:
        done, event = False, first
        try:
            while True:
                text, err = sse_error(event, prompt_param)
                if err is not None and ctx.error is None:
                    ctx.error = err
                done = event == SSE_DONE
                yield text
                if done:
                    break
                event = await rest.__anext__()
        except StopAsyncIteration:
            pass
        finally:
            if not done:
                ctx.cancel()  # the client went away: abort the engine requests
            await rest.aclose()
            self.admission.finished(permit, ctx.timing, ok=done and ctx.error is None)


def as_llmd(exc: Exception, prompt_param: str) -> LLMDRayError:
    """Any failure as an LLMDRayError: vLLM's status for vLLM's (and Python's) errors, 503 for Ray's."""
    from vllm.entrypoints.serve import create_error_response

    from llmd_ray.serving.http_util import as_llmd_error

    if type(exc).__module__.startswith("ray"):
        return as_llmd_error(exc)
    return from_vllm(create_error_response(exc), prompt_param)


def sse_events_as_dicts(reply: Reply) -> AsyncIterator[dict]:
    """The stream of a Reply as event dicts (for the DeploymentHandle API); an error event raises its error."""

    async def gen() -> AsyncIterator[dict]:
        try:
            async for event in reply.events:
                if reply.context.error is not None:
                    raise reply.context.error
                if event.startswith(SSE_DONE[:12]):
                    return
                yield json.loads(event[len("data: "):])
        finally:
            await reply.events.aclose()

    return gen()
