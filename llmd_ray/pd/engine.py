"""The engine half of P/D, over the foundation's ``Engine``.

The decode half needs nothing of its own: ``GenerateRequest.kv_transfer_params`` tells the engine's KV
connector where to load the prompt's blocks from. The prefill half is :func:`run_prefill`: the prompt
with ``max_tokens=1`` and the connector's export params, returning the params the engine hands back
(our :class:`~llmd_ray.pd.handoff.KVHandoff`, or NIXL's remote block ids).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from llmd_ray.engine.engine import Engine
from llmd_ray.errors import EngineDeadError, EngineError, RequestAbortedError


@dataclass(slots=True)
class PrefillResult:
    kv_transfer_params: dict[str, Any] | None
    num_cached_tokens: int
    elapsed_s: float


async def run_prefill(engine: Engine, request_id: str, prompt_token_ids: list[int],
                      kv_transfer_params: dict[str, Any]) -> PrefillResult:
    """Compute the prompt's KV (one greedy token, discarded) and return the engine's transfer params."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError

    params = SamplingParams(
        max_tokens=1,
        temperature=0.0,
        extra_args={"kv_transfer_params": dict(kv_transfer_params)},
        output_kind=RequestOutputKind.FINAL_ONLY,
    )
    t0 = time.perf_counter()
    last = None
    finished = False
    try:
        async for out in engine._llm.generate(TokensPrompt(prompt_token_ids=prompt_token_ids), params, request_id):
            last = out
            finished = out.finished
    except VllmEngineDeadError as e:
        raise EngineDeadError(f"engine died: {e}") from e
    finally:
        if not finished:
            await asyncio.shield(engine.abort(request_id))
    if last is None:
        raise EngineError(f"prefill of {request_id} returned no output")
    reason = last.outputs[0].finish_reason if last.outputs else None
    if reason == "abort":
        raise RequestAbortedError(f"prefill of {request_id} was aborted by the engine")
    return PrefillResult(last.kv_transfer_params, last.num_cached_tokens or 0, time.perf_counter() - t0)


def kv_bytes_per_token(engine: Engine) -> int:
    """KV cache bytes one token takes across all layers (K and V)."""
    vc = engine._llm.vllm_config
    mc, pc = vc.model_config, vc.parallel_config
    itemsize = {"float32": 4, "float16": 2, "bfloat16": 2}.get(str(mc.dtype).removeprefix("torch."), 4)
    return 2 * mc.get_num_layers(pc) * mc.get_num_kv_heads(pc) * mc.get_head_size() * itemsize
