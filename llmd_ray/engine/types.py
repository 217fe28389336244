"""Plain data passed between the ingress, the deployments and the engine.

These are slotted dataclasses with no vLLM or Ray import, so the ingress and
the routing code can build and read them without loading an engine. They are
pickled across Ray processes, so keep them small: token ids, not tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort", "error", "repetition"]


@dataclass(slots=True)
class SamplingOptions:
    """The sampling knobs the OpenAI API exposes, mapped 1:1 onto vLLM's SamplingParams."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None: no logprobs; k >= 0: sampled token plus top-k
    ignore_eos: bool = False
    min_tokens: int = 0
    # The front door's request (llmd_ray.frontdoor): vLLM's own SamplingParams and generate() arguments, a
    # ``llmd_ray.engine.vllm_call.VllmCall``. When set, it replaces the knobs above (which then only describe
    # the request, e.g. max_tokens for demand counting) and the engine yields vLLM's RequestOutput too.
    vllm: Any = None


@dataclass(slots=True)
class GenerateRequest:
    """One generation request, tokenized once at the ingress."""

    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingOptions
    stream: bool = True  # False: the engine yields one final chunk only
    session_id: str | None = None
    kv_transfer_params: dict[str, Any] | None = None  # vLLM's KV connector params (P/D's decode half)


@dataclass(slots=True)
class TokenLogprob:
    """Log-probability of one generated token, with its top alternatives."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass(slots=True)
class GenerateChunk:
    """A piece of output: the text and tokens new since the previous chunk."""

    request_id: str
    text: str
    token_ids: list[int]
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int  # cumulative count so far
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprob] | None = None
    replica: str | None = None  # the Serve replica that produced it (set by the deployment)
    output: Any = None  # the vLLM RequestOutput (delta) behind it, for requests carrying ``sampling.vllm``

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
