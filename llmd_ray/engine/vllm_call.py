"""A request prepared by vLLM's own serving layer (the front door, ``llmd_ray.frontdoor``), run on an engine.

The ingress parses, renders, tokenizes and turns the request into vLLM
``SamplingParams`` with vLLM's code; :class:`VllmCall` carries the result to
the replica inside ``GenerateRequest.sampling.vllm`` (so every replica class
passes it on unchanged, P/D's decode side included). :func:`generate` runs it
on the replica's ``AsyncLLM`` with the same arguments vLLM's API server would
pass, and yields ``GenerateChunk`` records whose ``output`` is vLLM's own
``RequestOutput`` (n > 1, logprobs, prompt logprobs, finish and stop reasons,
cached tokens). The prompt's ids and text are stripped from each output before
it crosses to the ingress, which has them and puts them back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmd_ray.engine.types import GenerateChunk, GenerateRequest
from llmd_ray.errors import EngineDeadError, EngineError, RequestAbortedError

if TYPE_CHECKING:
    from llmd_ray.engine.engine import Engine

# EngineInput keys the replica does not need: the token ids travel in GenerateRequest, the text and the
# arrival time stay at the ingress (the engine measures its own queueing).
_INGRESS_ONLY = ("prompt_token_ids", "prompt", "arrival_time")


@dataclass(slots=True)
class VllmCall:
    """What vLLM's serving layer passed to ``EngineClient.generate``, minus the prompt."""

    params: Any  # vllm.SamplingParams (output_kind DELTA when streaming, FINAL_ONLY otherwise)
    engine_input: dict[str, Any] = field(default_factory=dict)  # the rest of vLLM's EngineInput (type, cache_salt)
    kwargs: dict[str, Any] = field(default_factory=dict)  # generate() keywords: lora_request, priority, ...

    @classmethod
    def from_generate(cls, engine_input: dict[str, Any], params: Any, kwargs: dict[str, Any]) -> "VllmCall":
        rest = {k: v for k, v in engine_input.items() if k not in _INGRESS_ONLY}
        return cls(params, rest, {k: v for k, v in kwargs.items() if v is not None})


def is_delta(params: Any) -> bool:
    from vllm.sampling_params import RequestOutputKind

    return params.output_kind == RequestOutputKind.DELTA


async def generate(engine: "Engine", request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
    """Run ``request.sampling.vllm`` on ``engine``; closing the iterator early aborts the request."""
    from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError

    call: VllmCall = request.sampling.vllm
    params = engine._sampling_params(request)  # the call's params (+ a subclass's additions, e.g. P/D's)
    engine_input = {"type": "token", **call.engine_input, "prompt_token_ids": list(request.prompt_token_ids)}
    delta = is_delta(params)
    completion_tokens = 0
    finished = False
    try:
        async for out in engine._llm.generate(engine_input, params, request.request_id, **call.kwargs):
            reasons = [o.finish_reason for o in out.outputs if o.finish_reason is not None]
            if "abort" in reasons:
                raise RequestAbortedError(f"request {request.request_id} was aborted by the engine")
            if "error" in reasons:
                raise EngineError(f"request {request.request_id} failed inside the engine (retryable)")
            finished = out.finished
            tokens = sum(len(o.token_ids) for o in out.outputs)
            completion_tokens = tokens + (completion_tokens if delta else 0)
            yield chunk_of(request, out, completion_tokens, reasons[0] if reasons else "stop")
    except VllmEngineDeadError as e:
        raise EngineDeadError(f"engine died: {e}") from e
    finally:
        if not finished:  # cancelled or closed early: free the engine's slot
            engine._recorder.record_abort()
            await asyncio.shield(engine.abort(request.request_id))


def chunk_of(request: GenerateRequest, out: Any, completion_tokens: int, finish: str) -> GenerateChunk:
    """A GenerateChunk around ``out`` (its prompt stripped); its own fields describe the first sequence."""
    out.prompt_token_ids = None
    out.prompt = None
    first = out.outputs[0] if out.outputs else None
    return GenerateChunk(
        request_id=request.request_id,
        text=first.text if first is not None else "",
        token_ids=list(first.token_ids) if first is not None else [],
        prompt_tokens=len(request.prompt_token_ids),
        cached_tokens=out.num_cached_tokens or 0,
        completion_tokens=completion_tokens,
        finish_reason=finish if out.finished else None,
        stop_reason=first.stop_reason if first is not None else None,
        output=out,
    )
