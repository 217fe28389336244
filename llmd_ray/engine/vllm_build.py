"""Building vLLM's ``AsyncLLM`` for ``Engine.start``: the imports (timed on their own), the engine from
YAML/JSON-friendly arguments, and the per-engine stat logger that forwards each step to the ``Engine``."""

from __future__ import annotations

from typing import Any


def import_vllm() -> None:
    """Import what ``build_async_llm`` needs (timed on its own in ``Engine.start``)."""
    import vllm.engine.arg_utils  # noqa: F401
    import vllm.v1.engine.async_llm  # noqa: F401


def build_async_llm(engine_args: dict[str, Any], stat_logger_factory) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_args = dict(engine_args)
    for key, cls_name in (("kv_events_config", "KVEventsConfig"), ("kv_transfer_config", "KVTransferConfig"),
                          ("structured_outputs_config", "StructuredOutputsConfig")):
        if isinstance(engine_args.get(key), dict):  # YAML/JSON-friendly form -> vLLM's dataclass
            import vllm.config as vllm_config

            engine_args[key] = getattr(vllm_config, cls_name)(**engine_args[key])
    return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args), stat_loggers=[stat_logger_factory])


def stat_logger_factory(holder: dict[str, Any]):
    """A vLLM per-engine stat logger that forwards each step to the Engine."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _EngineStepLogger(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            self.engine_index = engine_index

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            engine = holder.get("engine")
            if engine is not None:
                engine._on_step(scheduler_stats, iteration_stats)

        def log_engine_initialized(self):
            pass

    return _EngineStepLogger
