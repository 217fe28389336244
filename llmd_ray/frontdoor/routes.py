"""``OpenAIIngress``: the Serve deployment of the front door, its HTTP routes and its Python API.

Routes are thin: authenticate, read the body under a size limit, hand it to
the :class:`Pipeline`, and turn its ``Reply`` (or error) into a response.
The Python API (``serve.get_app_handle(name)``) calls the same pipeline::

    await handle.chat.remote({"messages": [...]}, qos="batch")              # -> dict
    async for c in handle.options(stream=True).chat_stream.remote({...}):  # -> chunk dicts
    ...
    # and completions / completions_stream alike; flow_status() -> the gate's state.

Besides chat and completions, the ingress answers ``/v1/models``,
``/tokenize``, ``/detokenize`` and ``/version`` as vLLM's server does, and
``/health`` (readiness: 200 once an engine replica answers).
"""

from __future__ import annotations

import logging
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from llmd_ray.engine.config import EngineConfig
from llmd_ray.errors import EngineError, LLMDRayError
from llmd_ray.frontdoor.config import IngressConfig
from llmd_ray.frontdoor.errors import from_vllm
from llmd_ray.frontdoor.openapi import install_openapi
from llmd_ray.frontdoor.models import ModelTable, start_model
from llmd_ray.frontdoor.pipeline import Caller, as_llmd, sse_events_as_dicts
from llmd_ray.frontdoor.prepare import Kind
from llmd_ray.frontdoor.tokenize import tokenize_request
from llmd_ray.serving.http_util import as_llmd_error, error_response, read_json_body
from llmd_ray.topology.qos import QoSConfig

logger = logging.getLogger(__name__)
SESSION_HEADER = "x-session-id"

app = FastAPI(title="llmd-ray OpenAI API", version="1")
install_openapi(app)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(app)
class OpenAIIngress:
    async def __init__(
        self,
        llm: DeploymentHandle | dict[str, DeploymentHandle],  # one engine deployment, or one per variant
        engine_config: EngineConfig | dict,
        ingress_config: IngressConfig | dict | None = None,
        qos_config: QoSConfig | dict | None = None,
        dispatch: dict | None = None,  # DispatchConfig (serving/dispatch.py)
        models: list[dict] | None = None,  # several models: [{llm, engine, dispatch}] (llm, engine_config unused)
        routing_state: DeploymentHandle | None = None,  # unused here: binds RoutingState into the app (its routers')
    ):
        self.config = IngressConfig.model_validate(ingress_config or {})
        self.qos = QoSConfig.model_validate(qos_config or {})
        specs = models if models is not None else [{"llm": llm, "engine": engine_config, "dispatch": dispatch}]
        served = [await start_model(m["llm"], m["engine"], m.get("dispatch"), self.config, self.qos) for m in specs]
        self.models = ModelTable(served, self.qos)  # frontdoor/models.py: dispatch by the request's `model`
        first = self.models.primary  # the one model, or the first: keys and rates are checked on its gate
        self.engine_config, self.model_name, self.variants = first.engine, first.name, first.variants
        self.admission, self.frontend = first.admission, first.frontend
        self.pipeline = self.models  # run(kind, body, caller): the named model's Pipeline

    # ------------------------------------------------------------ HTTP routes
    @app.get("/health")
    async def health(self):
        """Readiness: 200 once an engine replica of every served model answers; 503 (OpenAI-style, Retry-After) before."""
        if not await self.models.ready():
            return error_response(EngineError("no engine replica is ready yet", code="not_ready", retry_after_s=2))
        return {"status": "ok"}

    @app.get("/version")
    async def version(self):
        import vllm

        return {"version": vllm.__version__}

    @app.get("/v1/models")
    async def models(self, request: Request):
        try:
            self.admission.authenticate(request.headers.get("authorization"), rate_limited=False)
        except LLMDRayError as e:
            return error_response(e)
        return JSONResponse((await self.models.show_available_models()).model_dump())

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(self, request: Request):
        """vLLM's adapter load (``frontdoor/lora.py``): only with ``ingress.allow_runtime_lora_updating``."""
        return await self._lora_admin("load", request)

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(self, request: Request):
        return await self._lora_admin("unload", request)

    async def _lora_admin(self, op: str, request: Request):
        from llmd_ray.frontdoor.lora import admin

        return await admin(op, request, models=self.frontend.models, admission=self.admission,
                           allowed=self.config.allow_runtime_lora_updating, max_body_bytes=self.config.max_body_bytes)

    @app.post("/v1/completions")
    async def http_completions(self, request: Request):
        return await self._http(request, "completion")

    @app.post("/v1/chat/completions")
    async def http_chat_completions(self, request: Request):
        return await self._http(request, "chat")

    @app.post("/tokenize")
    async def tokenize(self, request: Request):
        return await self._tokenization(request, "tokenize")

    @app.post("/detokenize")
    async def detokenize(self, request: Request):
        return await self._tokenization(request, "detokenize")

    async def _http(self, request: Request, kind: Kind):
        try:
            principal = self.admission.authenticate(request.headers.get("authorization"))
            body = await read_json_body(request, self.config.max_body_bytes)
            caller = Caller(principal, request.headers.get(self.qos.header), request.headers.get(SESSION_HEADER),
                            request)
            reply = await self.pipeline.run(kind, body, caller)
        except Exception as e:
            return error_response(e if isinstance(e, LLMDRayError) else as_llmd_error(e))
        if reply.events is None:
            return JSONResponse(reply.body, headers=reply.headers)
        return StreamingResponse(reply.events, media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", **reply.headers})

    async def _tokenization(self, request: Request, op: str):
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        try:
            self.admission.authenticate(request.headers.get("authorization"))
            body = await read_json_body(request, self.config.max_body_bytes)
            served = self.models.for_body(body)
            parsed = tokenize_request(op, body, served.name, self.qos)
            serving = served.frontend.tokenization
            call = serving.create_tokenize if op == "tokenize" else serving.create_detokenize
            result = await call(parsed, request)
            if isinstance(result, ErrorResponse):
                raise from_vllm(result, "prompt" if op == "tokenize" else "tokens")
        except LLMDRayError as e:
            return error_response(e)
        except Exception as e:
            return error_response(as_llmd(e, "prompt"))
        return JSONResponse(result.model_dump())

    # ------------------------------------------------------------- Python API
    async def completions(self, body: dict, session_id: str | None = None, qos: str | None = None) -> dict:
        return (await self.pipeline.run("completion", {**body, "stream": False}, Caller(None, qos, session_id))).body

    async def chat(self, body: dict, session_id: str | None = None, qos: str | None = None) -> dict:
        return (await self.pipeline.run("chat", {**body, "stream": False}, Caller(None, qos, session_id))).body

    async def completions_stream(self, body: dict, session_id: str | None = None, qos: str | None = None):
        reply = await self.pipeline.run("completion", {**body, "stream": True}, Caller(None, qos, session_id))
        async for event in sse_events_as_dicts(reply):
            yield event

    async def chat_stream(self, body: dict, session_id: str | None = None, qos: str | None = None):
        reply = await self.pipeline.run("chat", {**body, "stream": True}, Caller(None, qos, session_id))
        async for event in sse_events_as_dicts(reply):
            yield event

    def flow_status(self) -> dict:
        """The gate's state: in flight, queued per class, saturated, the replica loads it last saw, variants."""
        status = {**self.admission.status(), "variants": self.variants.status()}
        return status if len(self.models) == 1 else {**status, "models": self.models.status()}

