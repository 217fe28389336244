"""The vLLM adapter: one ``AsyncLLM`` behind a small, typed interface.

``Engine`` takes :class:`GenerateRequest` (token ids, tokenized once at the
ingress) and yields :class:`GenerateChunk` deltas; it can abort a request and
report an :class:`EngineStats` snapshot. Everything vLLM-specific lives here:
building ``AsyncEngineArgs`` and ``SamplingParams``, the environment vLLM
reads at start-up, and a stat logger that feeds the stats snapshot and any
observers (the serving layer hangs its Ray metrics there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from llmd_ray.engine import lifeline
from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.cpu import bind_replica
from llmd_ray.engine.latency import LatencyLog, timed
from llmd_ray.engine.stats import EngineStats, LoraSlots, StatsRecorder
from llmd_ray.engine import vllm_call
from llmd_ray.engine.models import resolve_model
from llmd_ray.engine.vllm_build import build_async_llm, import_vllm, stat_logger_factory
from llmd_ray.engine.types import GenerateChunk, GenerateRequest, SamplingOptions, TokenLogprob
from llmd_ray.errors import EngineDeadError, EngineError, InvalidRequestError, RequestAbortedError

logger = logging.getLogger(__name__)

# Called once per engine step with (scheduler_stats, iteration_stats), vLLM objects.
StepObserver = Callable[[Any, Any], None]


def _platform_is_gpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cuda_alike()


class Engine:
    """One vLLM engine. Create with :meth:`start`."""

    def __init__(self, config: EngineConfig, llm: Any, device: str, cpu_bind: str | None, startup_s: float):
        self.config = config
        self.device = device
        self.cpu_bind = cpu_bind
        self.startup_s = startup_s
        # Seconds per start-up phase (``start``): detect_platform_s (imports torch and vLLM's base),
        # resolve_model_s, import_vllm_s, build_engine_s (AsyncLLM: engine-core process, model, KV cache), warmup_s.
        self.startup_phases: dict[str, float] = {}
        self._llm = llm
        cache = llm.vllm_config.cache_config
        self.block_size: int = cache.block_size
        self.num_blocks: int = cache.num_gpu_blocks or 0
        self.max_model_len: int = llm.vllm_config.model_config.max_model_len
        self._recorder = StatsRecorder(self.block_size, self.num_blocks)
        lora = getattr(llm.vllm_config, "lora_config", None)  # LoRA slots and loads, replayed from the steps:
        self.lora_slots = LoraSlots(lora.max_loras) if lora is not None else None
        self.latency = LatencyLog()  # per-request TTFT/TPOT for the routers' latency models
        self._observers: list[StepObserver] = []

    # ------------------------------------------------------------------ start
    @classmethod
    async def start(
        cls, config: EngineConfig, *, replica_rank: int | None = None, observers: list[StepObserver] | None = None,
        extra_engine_args: dict[str, Any] | None = None,
    ) -> "Engine":
        """Start an engine; ``replica_rank`` pins it to cores of its own on CPU.

        ``extra_engine_args`` are set by the serving layer (e.g. the replica's own
        ``kv_events_config`` endpoint and topic) on top of ``config.engine_args``.
        """
        t_entry = time.perf_counter()
        device = config.resolved_device(_platform_is_gpu())  # imports vllm.platforms: torch and vLLM's base
        cpu_bind, claim = (bind_replica(config.cpu_bind, replica_rank, config.cpu_cores_per_replica)
                           if device == "cpu" else (None, None))
        os.environ.update(config.environment(device, cpu_bind))
        t0 = time.perf_counter()
        model_path = await asyncio.to_thread(resolve_model, config.model)
        t1 = time.perf_counter()
        await asyncio.to_thread(import_vllm)
        t2 = time.perf_counter()

        holder: dict[str, Engine] = {}
        factory = stat_logger_factory(holder)
        engine_args = {**config.engine_args(model_path, device), **(extra_engine_args or {})}
        with lifeline.claim():  # the engine's processes die with this one, however it goes
            llm = await asyncio.to_thread(build_async_llm, engine_args, factory,
                                          config.resolved_engine_core_start(device))
        t3 = time.perf_counter()
        engine = cls(config, llm, device, cpu_bind, t3 - t0)
        engine._cores = claim
        engine._observers = list(observers or [])
        holder["engine"] = engine
        if config.warmup:
            await engine._warmup()
            engine.startup_s = time.perf_counter() - t0
        engine.startup_phases = {"detect_platform_s": t0 - t_entry, "resolve_model_s": t1 - t0, "import_vllm_s": t2 - t1, "build_engine_s": t3 - t2,
                                 "warmup_s": time.perf_counter() - t3 if config.warmup else 0.0}
        logger.info(
            "engine started in %.1fs: model=%s device=%s cpu_bind=%s blocks=%d x %d",
            engine.startup_s, config.name, device, cpu_bind, engine.num_blocks, engine.block_size,
        )
        return engine

    # --------------------------------------------------------------- generate
    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        """Yield output deltas; closing the iterator early aborts the request. Timed for ``latency``."""
        return timed(self.latency, request.request_id, self._generate(request))

    async def _generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        if request.sampling.vllm is not None:  # prepared by vLLM's serving layer at the front door
            gen = vllm_call.generate(self, request)
            try:
                async for chunk in gen:
                    yield chunk
            finally:
                await gen.aclose()  # closed early: abort now, not when the generator is collected
            return
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError

        if len(request.prompt_token_ids) >= self.max_model_len:
            raise InvalidRequestError(
                f"prompt has {len(request.prompt_token_ids)} tokens; max_model_len is {self.max_model_len}",
                param="prompt",
            )
        params = self._sampling_params(request)
        prompt = TokensPrompt(prompt_token_ids=request.prompt_token_ids)
        completion_tokens = 0
        finished = False
        try:
            async for out in self._llm.generate(prompt, params, request.request_id):
                choice = out.outputs[0]
                completion_tokens = len(choice.token_ids) + (completion_tokens if request.stream else 0)
                finish = str(choice.finish_reason) if choice.finish_reason is not None else None
                finished = finish is not None
                if finish == "abort":
                    raise RequestAbortedError(f"request {request.request_id} was aborted by the engine")
                if finish == "error":
                    raise EngineError(f"request {request.request_id} failed inside the engine (retryable)")
                yield GenerateChunk(
                    request_id=request.request_id,
                    text=choice.text,
                    token_ids=list(choice.token_ids),
                    prompt_tokens=len(request.prompt_token_ids),
                    cached_tokens=out.num_cached_tokens or 0,
                    completion_tokens=completion_tokens,
                    finish_reason=finish,
                    stop_reason=choice.stop_reason,
                    logprobs=(
                        _convert_logprobs(choice, request.sampling.logprobs, self._llm)
                        if request.sampling.logprobs is not None
                        else None
                    ),
                )
        except VllmEngineDeadError as e:
            raise EngineDeadError(f"engine died: {e}") from e
        finally:
            if not finished:  # cancelled or closed early: free the engine's slot
                self._recorder.record_abort()
                await asyncio.shield(self.abort(request.request_id))

    def _sampling_params(self, request: GenerateRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = request.sampling
        if s.vllm is not None:
            params = s.vllm.params  # this request's own (unpickled) copy
        else:
            params = SamplingParams(
                max_tokens=s.max_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                seed=s.seed,
                stop=s.stop or None,
                logprobs=s.logprobs,
                ignore_eos=s.ignore_eos,
                min_tokens=s.min_tokens,
                output_kind=RequestOutputKind.DELTA if request.stream else RequestOutputKind.FINAL_ONLY,
            )
        if request.kv_transfer_params:  # P/D: where the engine's KV connector loads the prompt's blocks from
            params.extra_args = {**(params.extra_args or {}), "kv_transfer_params": dict(request.kv_transfer_params)}
        return params

    async def _warmup(self) -> None:
        """Pay vLLM's first-use costs (sampler, logprobs paths) before serving."""
        prompt = [1] * min(self.block_size + 8, self.max_model_len - 4)
        for i, opts in enumerate(
            (
                SamplingOptions(max_tokens=2, temperature=0.0, logprobs=1, ignore_eos=True),
                SamplingOptions(max_tokens=2, temperature=1.0, top_p=0.9, seed=0, ignore_eos=True),
            )
        ):
            async for _ in self.generate(GenerateRequest(f"warmup-{i}", prompt, opts, stream=False)):
                pass
        await self.reset_prefix_cache()  # start with an empty cache, as users expect

    # -------------------------------------------------------------- controls
    async def abort(self, request_id: str) -> None:
        try:
            await self._llm.abort(request_id)
        except Exception:  # engine already gone: nothing left to free
            logger.debug("abort of %s failed", request_id, exc_info=True)

    async def check_health(self) -> None:
        """Raise :class:`EngineDeadError` if the engine process is gone."""
        if self._llm.errored:
            raise EngineDeadError("engine process is dead")
        await self._llm.check_health()

    async def reset_prefix_cache(self) -> None:
        await self._llm.reset_prefix_cache()

    def stats(self) -> EngineStats:
        return self._recorder.snapshot()

    def add_observer(self, observer: StepObserver) -> None:
        self._observers.append(observer)

    def shutdown(self) -> None:
        self._llm.shutdown()
        if getattr(self, "_cores", None) is not None:  # this node's cores, claimed at start
            self._cores.release()

    # Called by the stat logger on every engine step.
    def _on_step(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        if scheduler_stats is not None:
            pc = scheduler_stats.prefix_cache_stats
            self._recorder.record_scheduler(
                num_waiting=scheduler_stats.num_waiting_reqs,
                num_running=scheduler_stats.num_running_reqs,
                kv_cache_usage=scheduler_stats.kv_cache_usage,
                prefix_queries=pc.queries if pc else 0,
                prefix_hits=pc.hits if pc else 0,
            )
            self._recorder.record_connector(scheduler_stats.kv_connector_stats)  # None: no transfer this step
            if self.lora_slots is not None:
                self._recorder.record_lora(self.lora_slots, scheduler_stats.running_lora_adapters)
        if iteration_stats is not None:
            self._recorder.record_iteration(
                prompt_tokens=iteration_stats.num_prompt_tokens,
                generation_tokens=iteration_stats.num_generation_tokens,
                preemptions=iteration_stats.num_preempted_reqs,
                finish_reasons=[str(f.finish_reason) for f in iteration_stats.finished_requests],
            )
        for observer in self._observers:
            try:
                observer(scheduler_stats, iteration_stats)
            except Exception:  # a metrics bug must never break generation
                logger.exception("stats observer failed")


def _convert_logprobs(choice: Any, top_k: int, llm: Any) -> list[TokenLogprob]:
    """vLLM's per-position {token_id: Logprob} into TokenLogprob records (top ``top_k`` alternatives)."""
    result: list[TokenLogprob] = []
    if not choice.logprobs:
        return result
    tokenizer = None
    for token_id, position in zip(choice.token_ids, choice.logprobs):
        if position is None:
            continue
        chosen = position.get(token_id)

        def text(tid, lp):
            nonlocal tokenizer
            if lp is not None and lp.decoded_token is not None:
                return lp.decoded_token
            tokenizer = tokenizer or llm.get_tokenizer()
            return tokenizer.decode([tid])

        top = sorted(position.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 1 << 30)
        result.append(
            TokenLogprob(
                token=text(token_id, chosen),
                logprob=chosen.logprob if chosen is not None else float("-inf"),
                top=[(text(tid, lp), lp.logprob) for tid, lp in top if lp.rank is not None and lp.rank <= top_k],
            )
        )
    return result
