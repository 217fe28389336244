"""``RemoteEngineClient``: vLLM's ``EngineClient`` protocol over llmd-ray's backend.

vLLM's serving classes call ``generate(engine_input, sampling_params,
request_id, ...)`` with a prompt they have already rendered and tokenized.
This adapter wraps that call into a :class:`GenerateRequest` (token ids and
session id on top, for the router; vLLM's params in ``sampling.vllm``), sends
it through the backend (router -> engine replica, re-sent if the replica dies
before its first token; a stream whose replica dies later moves to another,
``migrating.py``) and yields the replica's ``RequestOutput`` objects
with the prompt put back. It is the only place where vLLM's serving layer
and llmd-ray's request path meet.

Per-request state lives in a ``context.RequestContext``, set by the
pipeline around its call into vLLM's serving class and read here when
``generate`` is called.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from vllm.engine.protocol import EngineClient
from vllm.exceptions import RetryableRequestError, VLLMValidationError

from llmd_ray.engine.types import GenerateRequest, SamplingOptions
from llmd_ray.engine.vllm_call import VllmCall, is_delta
from llmd_ray.frontdoor.backend import Backend
from llmd_ray.frontdoor.context import CURRENT, RequestContext
from llmd_ray.frontdoor.errors import to_vllm_error
from llmd_ray.frontdoor.migrating import MigratingStream
from llmd_ray.frontdoor.lora import check_adapter_async, with_stable_id


class RemoteEngineClient(EngineClient):
    """The engine client vLLM's serving classes run over, in the ingress."""

    def __init__(self, vllm_config: Any, renderer: Any, input_processor: Any, backend: Backend,
                 lora_config: Any = None):
        self.vllm_config = vllm_config
        self.lora_config = lora_config  # vLLM's LoRAConfig of the engines (None: no LoRA), for add_lora
        self.model_config = vllm_config.model_config
        self.renderer = renderer
        self.input_processor = input_processor
        self.backend = backend

    # ------------------------------------------------------------ generation
    def generate(
        self, prompt: Any, sampling_params: Any, request_id: str, *, prompt_text: str | None = None,
        lora_request: Any = None, tokenization_kwargs: Any = None, trace_headers: Any = None, priority: int = 0,
        data_parallel_rank: int | None = None, session_id: str | None = None, kv_hints: Any = None,
        reasoning_ended: bool | None = None, reasoning_parser_kwargs: dict[str, Any] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Check llmd-ray's limits now (before any response starts), then stream the replica's outputs."""
        ctx = CURRENT.get(None) or RequestContext()
        if not isinstance(prompt, dict) or prompt.get("prompt_token_ids") is None:
            raise VLLMValidationError("llmd-ray routes token prompts only (no prompt embeddings)",
                                      parameter="prompt_embeds")
        ids = list(prompt["prompt_token_ids"])
        if ctx.max_prompt_tokens is not None and len(ids) > ctx.max_prompt_tokens:
            raise VLLMValidationError(f"prompt is {len(ids)} tokens; this server accepts at most "
                                      f"{ctx.max_prompt_tokens}", parameter=ctx.prompt_param, value=len(ids))
        if ctx.max_tokens_cap is not None and (sampling_params.max_tokens or 0) > ctx.max_tokens_cap:
            sampling_params.max_tokens = ctx.max_tokens_cap
        if lora_request is not None:  # the id the engines see: the same from every ingress replica
            lora_request = with_stable_id(lora_request)
        call = VllmCall.from_generate(prompt, sampling_params, {
            "lora_request": lora_request, "trace_headers": trace_headers, "priority": priority or None,
            "session_id": session_id, "reasoning_ended": reasoning_ended,
            "reasoning_parser_kwargs": reasoning_parser_kwargs,
        })
        options = SamplingOptions(max_tokens=sampling_params.max_tokens or 0, vllm=call)
        request = GenerateRequest(request_id, ids, options, stream=is_delta(sampling_params), session_id=session_id)
        if ctx.request_id is None:
            ctx.request_id = request_id
        return self._outputs(ctx, request, prompt.get("prompt"))

    async def _outputs(self, ctx: RequestContext, request: GenerateRequest, prompt_text: str | None):
        stream = self.backend.stream(request) if not request.stream else \
            MigratingStream(self.backend, request, ctx.max_migrations, self.renderer.get_tokenizer)  # mid-stream death
        ctx.streams.append(stream)
        finished = False
        try:
            while not finished:
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    raise RetryableRequestError("the engine stream ended before the request finished") from None
                except Exception as e:  # replica, engine or request failure: as the exception vLLM would see
                    raise to_vllm_error(e) from None
                ctx.on_chunk(chunk)
                out = chunk.output
                if out is None:
                    raise RetryableRequestError(f"replica {chunk.replica} returned no vLLM output")
                out.prompt_token_ids, out.prompt = request.prompt_token_ids, prompt_text
                finished = bool(out.finished)
                yield out
        finally:
            if not finished:
                stream.cancel()  # closed early (client gone, or failed): abort downstream

    # ------------------------------------------------------------- state
    @property
    def is_running(self) -> bool:
        return True

    @property
    def is_stopped(self) -> bool:
        return False

    @property
    def errored(self) -> bool:
        return False  # a replica's failure is its own; the ingress stays up

    @property
    def dead_error(self) -> BaseException:
        return RetryableRequestError("no engine")

    async def get_supported_tasks(self) -> tuple[str, ...]:
        return ("generate",)

    async def abort(self, request_id: Any) -> None:
        """Engine requests are aborted by cancelling their stream (see RequestContext.cancel)."""

    async def is_tracing_enabled(self) -> bool:
        return False

    async def do_log_stats(self) -> None:
        pass

    async def check_health(self) -> None:
        pass

    def shutdown(self, timeout: float | None = None) -> None:
        pass

    async def add_lora(self, lora_request: Any) -> bool:
        """Check the adapter as an engine would; the replicas load it on its first request (``frontdoor/lora.py``)."""
        await check_adapter_async(lora_request, self.lora_config, self.model_config.max_model_len)
        return True

    # Engine administration is the replicas' business (their own handle methods), not the front door's.
    def encode(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("pooling models are not served by llmd-ray")

    async def _unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("engine administration goes to the engine replicas")

    notify_kv_transfer_request_rejected = start_profile = stop_profile = _unsupported
    reset_mm_cache = reset_encoder_cache = reset_prefix_cache = sleep = _unsupported
    release_kv_cache_memory = wake_up = is_sleeping = _unsupported
    pause_generation = resume_generation = is_paused = _unsupported
