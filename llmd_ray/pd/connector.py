"""``ShmConnector``: the vLLM-facing KV connector of P/D (a thin adapter).

It moves blocks between the engine's cache and shared-memory files on its own node; moving those
bytes between replicas (through Ray's object store, or NIXL) is the replica's business (``servers``).

Loaded by vLLM in the engine process from ``KVTransferConfig(kv_connector=
"ShmConnector", kv_connector_module_path="llmd_ray.pd.connector",
kv_role="kv_both")``; one instance runs in the scheduler and one in the
worker. What to move is decided by the pure modules (``plan``, ``layout``,
``handoff``); this file only reads vLLM's objects and copies bytes.

* Export (prefill engine, request params ``llmd_export``): in the step where
  the request's prompt is fully computed, the worker copies blocks
  ``[skip, end)`` of every layer into a shared-memory buffer
  (``wait_for_save``, after the forward pass); ``request_finished`` returns
  the :class:`KVHandoff` in the output's ``kv_transfer_params``.
* Import (decode engine, params ``llmd_import``): ``get_num_new_matched_tokens``
  plans against the real local prefix hit and offers only the missing blocks;
  the worker copies them into the freshly allocated blocks before the
  forward pass (``start_load_kv``, synchronous). A buffer that cannot be read
  reports its blocks as failed, and vLLM recomputes them
  (``kv_load_failure_policy="recompute"``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from llmd_ray.pd import shm
from llmd_ray.pd.connector_stats import ShmConnectorStats
from llmd_ray.pd.handoff import EXPORT_ERROR_KEY, EXPORT_KEY, ExportRequest, KVHandoff, token_digest
from llmd_ray.kv.layout import KVLayout, gather_blocks, scatter_blocks
from llmd_ray.kv.plan import BlockRange, block_slots, plan_export, plan_import

if TYPE_CHECKING:
    from vllm.v1.core.sched.output import SchedulerOutput

logger = logging.getLogger("vllm.llmd_ray.kv")


@dataclass(slots=True)
class ExportOp:
    request_id: str
    path: str
    block_ids: list[int]  # physical ids of prompt blocks [blocks.first, blocks.end)


@dataclass(slots=True)
class LoadOp:
    request_id: str
    handoff: KVHandoff
    offset: int  # first buffer block to load
    block_ids: list[int]  # physical destination ids


@dataclass
class ShmConnectorMetadata(KVConnectorMetadata):
    exports: list[ExportOp] = field(default_factory=list)
    loads: list[LoadOp] = field(default_factory=list)


@dataclass(slots=True)
class _PendingExport:
    request: ExportRequest
    num_prompt_tokens: int
    blocks: BlockRange
    digest: str
    emitted: bool = False


class ShmConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config, role: KVConnectorRole, kv_cache_config=None):
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._block_size = vllm_config.cache_config.block_size
        # scheduler side
        self._exports: dict[str, _PendingExport] = {}
        self._planned: dict[str, tuple[KVHandoff, int, BlockRange]] = {}  # req -> (handoff, offset, blocks)
        self._loads: list[LoadOp] = []
        self._manager = None
        # worker side
        self._caches: dict[str, np.ndarray] = {}
        self._layout: KVLayout | None = None
        self._failed_blocks: set[int] = set()
        self._xfer = ShmConnectorStats()

    # ================================================================ scheduler
    def bind_kv_cache_manager(self, kv_cache_manager) -> None:
        super().bind_kv_cache_manager(kv_cache_manager)
        self._manager = kv_cache_manager

    def get_num_new_matched_tokens(self, request, num_computed_tokens: int) -> tuple[int, bool]:
        params = request.kv_transfer_params
        prompt = request.prompt_token_ids or []
        export = ExportRequest.from_params(params)
        if export is not None and request.request_id not in self._exports:
            blocks = plan_export(len(prompt), self._block_size, export.skip_blocks)
            digest = token_digest(prompt, blocks.end * self._block_size)
            self._exports[request.request_id] = _PendingExport(export, len(prompt), blocks, digest)
        handoff = KVHandoff.from_import_params(params)
        if handoff is None:
            return 0, False
        self._planned.pop(request.request_id, None)
        if handoff.block_size != self._block_size or not handoff.matches(prompt):
            logger.warning("request %s: handoff does not match the prompt or block size; computing locally", request.request_id)
            return 0, False
        plan = plan_import(len(prompt), self._block_size, num_computed_tokens, handoff.blocks)
        if plan.outcome != "load":
            logger.debug("request %s: nothing to load (%s)", request.request_id, plan.outcome)
            return 0, False
        self._planned[request.request_id] = (handoff, plan.offset, plan.blocks)
        return plan.num_tokens(self._block_size), False

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        planned = self._planned.pop(request.request_id, None)
        if planned is None or num_external_tokens == 0:
            return
        handoff, offset, wanted = planned
        ids = block_slots(blocks.get_block_ids()[0], wanted)
        self._loads.append(LoadOp(request.request_id, handoff, offset, ids))

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = ShmConnectorMetadata(loads=self._loads)
        self._loads = []
        if self._exports:
            done: list[str] = []
            for req in scheduler_output.scheduled_new_reqs:
                if self._prefill_done(req.req_id, req.num_computed_tokens, scheduler_output):
                    done.append(req.req_id)
            cached = scheduler_output.scheduled_cached_reqs
            for i, req_id in enumerate(cached.req_ids):
                if self._prefill_done(req_id, cached.num_computed_tokens[i], scheduler_output):
                    done.append(req_id)
            for req_id in done:
                pending = self._exports[req_id]
                ids = block_slots(self._manager.get_blocks(req_id).get_block_ids()[0], pending.blocks)
                meta.exports.append(ExportOp(req_id, pending.request.path, ids))
                pending.emitted = True
        return meta

    def _prefill_done(self, req_id: str, num_computed: int, out: SchedulerOutput) -> bool:
        pending = self._exports.get(req_id)
        if pending is None or pending.emitted:
            return False
        return num_computed + out.num_scheduled_tokens.get(req_id, 0) >= pending.num_prompt_tokens

    def request_finished(self, request, block_ids) -> tuple[bool, dict[str, Any] | None]:
        self._planned.pop(request.request_id, None)
        pending = self._exports.pop(request.request_id, None)
        if pending is None:
            return False, None
        if not pending.emitted:
            return False, {EXPORT_ERROR_KEY: f"request finished ({request.status.name}) before its prompt was computed"}
        handoff = KVHandoff(
            request_id=request.request_id,
            blocks=pending.blocks,
            num_prompt_tokens=pending.num_prompt_tokens,
            token_digest=pending.digest,
            layout=self._expected_layout(),
            layer_names=self._layer_names(),
            path=pending.request.path,
        )
        return False, {EXPORT_KEY: handoff.to_dict()}

    # The scheduler does not see the worker's tensors; it derives the same layout from the config.
    def _expected_layout(self) -> KVLayout:
        mc = self._vllm_config.model_config
        dtype = str(mc.dtype).removeprefix("torch.")
        heads = mc.get_num_kv_heads(self._vllm_config.parallel_config)
        from vllm.platforms import current_platform

        kind = "cpu" if current_platform.is_cpu() else "kv_split"
        head = mc.get_head_size()
        return KVLayout(kind, heads, self._block_size, head, dtype, _cpu_isa(mc.dtype, self._block_size, head))

    def _layer_names(self) -> tuple[str, ...]:
        names = []
        for group in self._kv_cache_config.kv_cache_groups:
            names.extend(group.layer_names)
        return tuple(sorted(names))

    # =================================================================== worker
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        num_blocks = self._kv_cache_config.num_blocks
        first = next(iter(kv_caches.values()))
        dtype = str(first.dtype).removeprefix("torch.")
        layout = KVLayout.infer(first.shape, num_blocks, self._block_size, dtype)
        self._layout = KVLayout(layout.kind, layout.num_kv_heads, layout.block_size, layout.head_size, dtype,
                                _cpu_isa(first.dtype, self._block_size, layout.head_size))
        self._caches = {name: kv_caches[name].numpy() for name in sorted(kv_caches)}
        logger.info("ShmConnector: %d layers, layout %s", len(self._caches), self._layout)

    def start_load_kv(self, forward_context, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        for op in meta.loads:
            t0 = time.perf_counter()
            try:
                self._load(op)
            except Exception as e:  # missing, truncated or foreign buffer: vLLM recomputes these blocks
                logger.warning("request %s: KV load failed (%s); its blocks will be recomputed", op.request_id, e)
                self._failed_blocks.update(op.block_ids)
                self._xfer.add("load_failed_blocks", len(op.block_ids))
                continue
            self._xfer.add("loaded_blocks", len(op.block_ids))
            logger.debug("request %s: loaded %d blocks in %.2f ms", op.request_id, len(op.block_ids),
                         1e3 * (time.perf_counter() - t0))

    def _load(self, op: LoadOp) -> None:
        h = op.handoff
        if tuple(h.layer_names) != tuple(self._caches) or not self._layout.compatible(h.layout):
            raise ValueError("handoff layout or layers differ from this engine's")
        buf = shm.open_buffer(h.path, h.layout.dtype, h.buffer_shape)
        n = len(op.block_ids)
        for i, cache in enumerate(self._caches.values()):
            blocks = np.asarray(buf[i, op.offset : op.offset + n])
            if h.layout.kind != self._layout.kind:
                from llmd_ray.kv.layout import convert

                blocks = convert(blocks, h.layout, self._layout)
            scatter_blocks(cache, op.block_ids, blocks, self._layout)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # loads are synchronous and complete before the forward pass

    def save_kv_layer(self, layer_name: str, kv_layer, attn_metadata, **kwargs: Any) -> None:
        return  # whole blocks are exported after the forward pass (wait_for_save)

    def wait_for_save(self) -> None:
        if not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        for op in meta.exports:
            t0 = time.perf_counter()
            try:
                shape = (len(self._caches), len(op.block_ids), *self._layout.block_shape)
                if not op.block_ids:  # nothing transferable (prompt within one block): an empty buffer
                    shm.write_buffer(op.path, np.empty(0, dtype=self._layout.dtype))
                    continue
                buf = shm.create_buffer(op.path, self._layout.dtype, shape)
                for i, cache in enumerate(self._caches.values()):
                    gather_blocks(cache, op.block_ids, self._layout, out=buf[i])
                shm.publish(op.path, buf)
                self._xfer.add("exported_blocks", len(op.block_ids))
            except Exception:
                logger.exception("request %s: KV export failed", op.request_id)
                shm.remove_file(op.path)
                continue
            logger.debug("request %s: exported %d blocks in %.2f ms", op.request_id, len(op.block_ids),
                         1e3 * (time.perf_counter() - t0))

    def get_block_ids_with_load_errors(self) -> set[int]:
        failed, self._failed_blocks = self._failed_blocks, set()
        return failed

    def get_kv_connector_stats(self) -> ShmConnectorStats | None:
        return self._xfer.take()

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None) -> ShmConnectorStats:
        return ShmConnectorStats.from_data(data)


def _cpu_isa(dtype, block_size: int, head_size: int) -> str:
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return ""
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        return _get_attn_isa(dtype, block_size, head_size)
    except Exception:  # private API: an unknown ISA only disables cross-layout conversion
        return ""
