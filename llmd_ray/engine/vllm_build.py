"""Building vLLM's ``AsyncLLM`` for ``Engine.start``: the imports (timed on their own), the engine from
YAML/JSON-friendly arguments, and the per-engine stat logger that forwards each step to the ``Engine``."""

from __future__ import annotations

import multiprocessing
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Literal

_start_lock = threading.Lock()


def import_vllm() -> None:
    """Import what ``build_async_llm`` needs (timed on its own in ``Engine.start``)."""
    import vllm.engine.arg_utils  # noqa: F401
    import vllm.v1.engine.async_llm  # noqa: F401


@contextmanager
def engine_core_start_method(method: Literal["fork", "spawn"]) -> Iterator[None]:
    """Start vLLM's engine-core process with ``method`` while the block runs.

    vLLM picks the method in ``get_mp_context`` and forces ``spawn`` whenever it runs inside a Ray actor
    (``vllm.utils.system_utils._maybe_force_spawn``): a fresh interpreter that imports torch and vLLM again
    (~6 s of a replica's start here). ``fork`` makes the child from the replica process, which has imported
    them already. Safe on CPU: the child uses none of Ray's threads or sockets (it talks to its parent over
    vLLM's ZMQ sockets, made after the fork), and ``lifeline`` arms in forked children through its at-fork
    hook. Never with CUDA initialised (``EngineConfig.resolved_engine_core_start`` keeps ``spawn`` on GPU).
    ``spawn`` leaves vLLM as it is. Only vLLM's engine-core launcher is redirected, only during the block.

    A forked child names itself as a spawned one does (``VLLM::EngineCore``, ``VLLM::Worker`` in ``ps``):
    the ``setproctitle`` package vLLM calls cannot find ``argv`` in a child of a Ray worker whose title Ray's
    own copy has already rewritten, and silently leaves ``ray::IDLE``; the children use Ray's copy instead.
    """
    if method == "spawn":
        yield
        return
    import vllm.v1.engine.utils as engine_utils

    titled = _title_modules()
    with _start_lock:
        original = engine_utils.get_mp_context
        originals = {m: m.set_process_title for m in titled}
        engine_utils.get_mp_context = lambda: multiprocessing.get_context(method)
        for module, set_title in originals.items():
            module.set_process_title = _with_ray_title(set_title)
        try:
            yield
        finally:
            engine_utils.get_mp_context = original
            for module, set_title in originals.items():
                module.set_process_title = set_title


def _title_modules() -> list[Any]:
    """vLLM's modules that title the processes they start (each imported ``set_process_title`` by name)."""
    import importlib

    out = []
    for name in ("vllm.v1.engine.core", "vllm.v1.executor.multiproc_executor"):
        module = importlib.import_module(name)
        if callable(getattr(module, "set_process_title", None)):
            out.append(module)
    return out


def _with_ray_title(set_title):
    """``set_process_title`` that also sets the title through Ray's ``setproctitle`` when Ray is loaded."""

    def set_process_title(name: str, suffix: str = "", **kwargs) -> None:
        set_title(name, suffix, **kwargs)
        try:
            from ray import _raylet

            _raylet.setproctitle(_vllm_title(name, suffix, kwargs.get("prefix")))
        except Exception:  # the title is cosmetic: never let it stop an engine from starting
            pass

    return set_process_title


def _vllm_title(name: str, suffix: str, prefix: str | None) -> str:
    """The title vLLM's ``set_process_title`` gives: ``PREFIX::NAME`` or ``PREFIX::NAME_SUFFIX``."""
    if prefix is None:
        import vllm.envs as envs

        prefix = envs.VLLM_PROCESS_NAME_PREFIX
    return f"{prefix}::{name}_{suffix}" if suffix else f"{prefix}::{name}"


def build_async_llm(engine_args: dict[str, Any], stat_logger_factory,
                    start_method: Literal["fork", "spawn"] = "spawn") -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_args = dict(engine_args)
    for key, cls_name in (("kv_events_config", "KVEventsConfig"), ("kv_transfer_config", "KVTransferConfig"),
                          ("structured_outputs_config", "StructuredOutputsConfig")):
        if isinstance(engine_args.get(key), dict):  # YAML/JSON-friendly form -> vLLM's dataclass
            import vllm.config as vllm_config

            engine_args[key] = getattr(vllm_config, cls_name)(**engine_args[key])
    with engine_core_start_method(start_method):
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
