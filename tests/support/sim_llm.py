"""``SimLLM``: a SIMULATED LLMServer (no engine) for flow-control, auth and fuzz tests and benches.

It speaks LLMServer's handle interface (``generate`` streaming ``GenerateChunk``
deltas carrying vLLM ``RequestOutput`` objects for the front door's requests, ``stats``),
so the real ``OpenAIIngress`` runs in front of it unchanged.
It emits ``min(max_tokens, tokens)`` one-token chunks, ``chunk_delay_s`` apart,
(``min_tokens`` more if larger), with logprobs when asked, and reports whatever load a test sets with
``set_load``; it records the order in which requests arrive (``arrivals``: the
first prompt token id of each). Nothing here measures a real engine.
"""

from __future__ import annotations

import asyncio
import time

from ray import serve

from llmd_ray.engine.types import GenerateChunk, GenerateRequest, TokenLogprob


@serve.deployment(num_replicas=1, max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0})
class SimLLM:
    def __init__(self, chunk_delay_s: float = 0.0, tokens: int = 4):
        self.chunk_delay_s = chunk_delay_s
        self.tokens = tokens
        self.num_waiting = 0
        self.kv_cache_usage = 0.0
        self.running = 0
        self._arrivals: list[int] = []
        ctx = serve.get_replica_context()
        self.rank = getattr(ctx.rank, "rank", ctx.rank)

    async def generate(self, request: GenerateRequest):
        self._arrivals.append(request.prompt_token_ids[0])
        self._arrivals = self._arrivals[-10_000:]
        s = request.sampling  # min_tokens holds a request longer (e.g. to keep a slot busy)
        params = s.vllm.params if s.vllm is not None else s  # vLLM's SamplingParams from the front door
        n = max(1, min(params.max_tokens, max(self.tokens, params.min_tokens)))
        lp = params.logprobs
        prompt = len(request.prompt_token_ids)
        self.running += 1
        try:
            for i in range(n):
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                last = i == n - 1
                if not request.stream and not last:
                    continue  # one final chunk, as LLMServer does for stream=False
                k = 1 if request.stream else n
                top = [(" x", -0.5), (" y", -1.5)][: lp or 0]
                logprobs = [TokenLogprob(" x", -0.5, top) for _ in range(k)] if lp is not None else None
                chunk = GenerateChunk(request.request_id, " x" * k, [7] * k, prompt, 0, i + 1,
                                      "length" if last else None, None, logprobs)
                if s.vllm is not None:
                    chunk.output = vllm_output(request.request_id, getattr(params, "n", 1), k, lp, last)
                yield chunk
        finally:
            self.running -= 1

    def set_load(self, num_waiting: int, kv_cache_usage: float) -> int:
        self.num_waiting, self.kv_cache_usage = num_waiting, kv_cache_usage
        return self.rank

    def arrivals(self) -> list[int]:
        return list(self._arrivals)

    def stats(self) -> dict:
        return {"rank": self.rank, "num_waiting": self.num_waiting, "num_running": self.running,
                "kv_cache_usage": self.kv_cache_usage, "updated_at": time.time()}


def vllm_output(request_id: str, n: int, k: int, logprobs: int | None, last: bool):
    """A vLLM RequestOutput of ``n`` sequences, each ``k`` new tokens " x" (id 7), finished with "length" if last."""
    from vllm.logprobs import Logprob
    from vllm.outputs import CompletionOutput, RequestOutput

    def position():
        alts = {7: Logprob(-0.5, 1, " x"), 8: Logprob(-1.5, 2, " y")}
        return dict(list(alts.items())[: max(1, logprobs or 0)])

    outputs = [CompletionOutput(index=i, text=" x" * k, token_ids=[7] * k, cumulative_logprob=None,
                                logprobs=[position() for _ in range(k)] if logprobs is not None else None,
                                finish_reason="length" if last else None)
               for i in range(n)]
    return RequestOutput(request_id, None, None, None, outputs, finished=last, num_cached_tokens=0)
