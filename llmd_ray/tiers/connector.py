"""``TieredConnector``: vLLM KV connector for the local and shared KV tiers (a thin adapter).

Loaded by vLLM in the engine process (``kv_connector="TieredConnector"``,
``kv_connector_module_path="llmd_ray.tiers.connector"``; config under
``kv_connector_extra_config["llmd_tiers"]``, see ``tier_config``).

* Scheduler: ``get_num_new_matched_tokens`` asks the tiers for the run of
  blocks after the engine's own prefix hit (``tier_lookup.lookup``): the
  host-memory pool, its disk spill, and blocks the replica staged from the
  shared tier. ``build_connector_meta`` also lists every block that becomes
  full and computed in this step and no local tier holds yet (to save).
* Worker: ``start_load_kv`` copies the records into the freshly allocated
  paged-cache blocks before the forward pass (synchronous, validated:
  namespace, hash, tokens, CRC); a block that fails is reported and vLLM
  recomputes it and every later one. ``wait_for_save`` copies new full blocks
  out of the paged cache after the forward pass, and a background thread
  encodes and writes them into the pool (off the hot path).

Counters go to ``stats_dir/{scheduler,worker}.json`` (the EngineCore process
has no Ray); the replica turns them into metrics.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole

from llmd_ray.tiers import format as tier_format
from llmd_ray.pd.connector import _cpu_isa
from llmd_ray.kv.layout import KVLayout, gather_blocks, scatter_blocks
from llmd_ray.tiers.pool_files import BlockDir, FileBlockPool
from llmd_ray.tiers.config import EXTRA_KEY
from llmd_ray.tiers.lookup import TierHit, lookup, new_full_blocks

if TYPE_CHECKING:
    from vllm.v1.core.sched.output import SchedulerOutput

logger = logging.getLogger("vllm.llmd_ray.kv.tiers")
MEMORY, DISK, SHARED = "memory", "disk", "shared"
NAMESPACE_FILE = "namespace.json"


@dataclass(slots=True)
class BlockOp:
    hhex: str
    block_id: int
    tokens: list[int]
    tier: str = ""  # loads: where the record is
    parent: str | None = None


@dataclass(slots=True)
class LoadOp:
    request_id: str
    blocks: list[BlockOp]


@dataclass
class TieredConnectorMetadata(KVConnectorMetadata):
    loads: list[LoadOp] = field(default_factory=list)
    saves: list[BlockOp] = field(default_factory=list)


@dataclass(slots=True)
class _Tracked:
    request: Any
    saved_upto: int = 0  # blocks below this are in a tier (or the engine computed them before)


class _Stats:
    """Cumulative counters, dumped to JSON after each event (tmpfs; read by the replica)."""

    def __init__(self, path: str | None):
        self.path = path
        self.data: dict[str, Any] = {}
        self._lock = threading.Lock()  # the saver thread counts too

    def add(self, key: str, n: float = 1) -> None:
        with self._lock:
            self.data[key] = self.data.get(key, 0) + n

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def flush(self) -> None:
        """Called on events only (a lookup, a load, a save batch): a small tmpfs write."""
        if self.path is None:
            return
        try:
            tmp = f"{self.path}.{threading.get_ident()}.tmp"
            with self._lock:
                text = json.dumps(self.data)
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError:
            pass


class TieredConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config, role: KVConnectorRole, kv_cache_config=None):
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._cfg = dict(self._kv_transfer_config.kv_connector_extra_config.get(EXTRA_KEY) or {})
        self._block_size = vllm_config.cache_config.block_size
        self._ns = tier_format.TierNamespace(self._cfg.get("model", "unknown"), self._expected_layout(), self._layer_names())
        digest = self._ns.digest()
        sub = lambda key: os.path.join(self._cfg[key], digest) if self._cfg.get(key) else None  # noqa: E731
        self._mem_dir, self._disk_dir, self._staged_dir = sub("memory_dir"), sub("disk_dir"), sub("staged_dir")
        self._min_load = int(self._cfg.get("min_load_blocks", 1))
        stats_dir = self._cfg.get("stats_dir")
        is_worker = role == KVConnectorRole.WORKER
        self._stats = _Stats(os.path.join(stats_dir, "worker.json" if is_worker else "scheduler.json") if stats_dir else None)
        # scheduler side
        self._holders = [(name, BlockDir(d).contains) for name, d in
                         ((MEMORY, self._mem_dir), (DISK, self._disk_dir), (SHARED, self._staged_dir)) if d]
        self._tracked: dict[str, _Tracked] = {}
        self._hits: dict[str, TierHit] = {}
        self._sources: dict[str, dict[str, int]] = {}
        self._loads: list[LoadOp] = []
        self._manager = None
        # worker side
        self._caches: dict[str, np.ndarray] = {}
        self._layout: KVLayout | None = None
        self._pool: FileBlockPool | None = None
        self._failed: set[int] = set()
        self._writer = None
        if not is_worker and stats_dir:
            os.makedirs(stats_dir, exist_ok=True)
            with open(os.path.join(stats_dir, NAMESPACE_FILE), "w") as f:
                json.dump({"digest": digest, "namespace": self._ns.to_dict()}, f)

    def _expected_layout(self) -> KVLayout:
        from vllm.platforms import current_platform

        mc = self._vllm_config.model_config
        heads = mc.get_num_kv_heads(self._vllm_config.parallel_config)
        head = mc.get_head_size()
        kind = "cpu" if current_platform.is_cpu() else "kv_split"
        dtype = str(mc.dtype).removeprefix("torch.")
        return KVLayout(kind, heads, self._block_size, head, dtype, _cpu_isa(mc.dtype, self._block_size, head))

    def _layer_names(self) -> tuple[str, ...]:
        if self._kv_cache_config is None:
            return ()
        return tuple(sorted(n for g in self._kv_cache_config.kv_cache_groups for n in g.layer_names))

    # ================================================================ scheduler
    def bind_kv_cache_manager(self, kv_cache_manager) -> None:
        super().bind_kv_cache_manager(kv_cache_manager)
        self._manager = kv_cache_manager

    def get_num_new_matched_tokens(self, request, num_computed_tokens: int) -> tuple[int, bool]:
        rid = request.request_id
        self._tracked.setdefault(rid, _Tracked(request))
        hashes = [bytes(h).hex() for h in request.block_hashes]
        hit = lookup(hashes, request.num_prompt_tokens, self._block_size, num_computed_tokens, self._holders, self._min_load)
        self._hits[rid] = hit
        return hit.num_tokens(self._block_size), False

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        rid = request.request_id
        tracked = self._tracked.setdefault(rid, _Tracked(request))
        hit = self._hits.pop(rid, None)
        if hit is None:
            return
        tracked.saved_upto = max(tracked.saved_upto, hit.first)
        s = self._stats
        s.add("lookups")
        s.add("engine_hit_blocks", hit.first)
        if hit.skipped:
            s.add(f"skipped_{hit.skipped}")
        end = min(len(request.block_hashes), (request.num_prompt_tokens - 1) // self._block_size)
        s.add("miss_blocks", max(0, end - hit.first - (hit.num_blocks if num_external_tokens else 0)))
        if num_external_tokens == 0 or not hit.num_blocks:
            s.flush()
            return
        bs = self._block_size
        n = min(hit.num_blocks, -(-num_external_tokens // bs))  # what the scheduler took of the offer
        hit = TierHit(hit.first, hit.tiers[:n])
        ids = blocks.get_block_ids()[0]
        toks = request.all_token_ids
        ops = [BlockOp(bytes(request.block_hashes[i]).hex(), ids[i], list(toks[i * bs:(i + 1) * bs]), hit.tiers[i - hit.first])
               for i in range(hit.first, hit.first + n)]
        self._loads.append(LoadOp(rid, ops))
        tracked.saved_upto = hit.first + n
        counts = hit.counts()
        self._sources[rid] = counts
        for tier, n in counts.items():
            s.add(f"hit_blocks_{tier}", n)
        s.flush()

    def get_external_cache_hit_sources(self, request, num_external_tokens: int):
        from vllm.v1.metrics.cache_hit_source import CacheHitSource

        counts = self._sources.pop(request.request_id, None)
        if not num_external_tokens or not counts:
            return super().get_external_cache_hit_sources(request, num_external_tokens)
        kinds = {MEMORY: CacheHitSource.HOST, DISK: CacheHitSource.DISK, SHARED: CacheHitSource.EXTERNAL_UNSPECIFIED}
        out: dict = {}
        for tier, n in counts.items():
            out[kinds[tier]] = out.get(kinds[tier], 0) + n * self._block_size
        return out

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = TieredConnectorMetadata(loads=self._loads)
        self._loads = []
        steps: list[tuple[str, int]] = [(r.req_id, r.num_computed_tokens) for r in scheduler_output.scheduled_new_reqs]
        cached = scheduler_output.scheduled_cached_reqs
        steps += list(zip(cached.req_ids, cached.num_computed_tokens))
        local = [c for name, c in self._holders if name != SHARED]
        bs = self._block_size
        for rid, computed in steps:
            tracked = self._tracked.get(rid)
            if tracked is None:
                continue
            req = tracked.request
            after = computed + scheduler_output.num_scheduled_tokens.get(rid, 0)
            span = new_full_blocks(len(req.block_hashes), tracked.saved_upto, after, bs)
            tracked.saved_upto = max(tracked.saved_upto, span.stop)
            if not span or self._manager is None:
                continue
            ids = self._manager.get_blocks(rid).get_block_ids()[0]
            toks = req.all_token_ids
            for i in span:
                hhex = bytes(req.block_hashes[i]).hex()
                if i >= len(ids) or any(c(hhex) for c in local):
                    continue
                parent = bytes(req.block_hashes[i - 1]).hex() if i else None
                meta.saves.append(BlockOp(hhex, ids[i], list(toks[i * bs:(i + 1) * bs]), parent=parent))
        return meta

    def request_finished(self, request, block_ids) -> tuple[bool, dict[str, Any] | None]:
        rid = request.request_id
        self._tracked.pop(rid, None)
        self._hits.pop(rid, None)
        self._sources.pop(rid, None)
        return False, None  # saves copy blocks out in the step that computed them: nothing to hold

    # =================================================================== worker
    def register_kv_caches(self, kv_caches) -> None:
        first = next(iter(kv_caches.values()))
        dtype = str(first.dtype).removeprefix("torch.")
        found = KVLayout.infer(first.shape, self._kv_cache_config.num_blocks, self._block_size, dtype)
        self._layout = KVLayout(found.kind, found.num_kv_heads, found.block_size, found.head_size, dtype,
                                _cpu_isa(first.dtype, self._block_size, found.head_size))
        self._caches = {name: kv_caches[name].numpy() for name in sorted(kv_caches)}
        if self._layout != self._ns.layout or tuple(self._caches) != self._ns.layer_names:
            logger.error("TieredConnector: engine layout %s / layers differ from the expected %s; tiers off",
                         self._layout, self._ns.layout)
            return
        disk = FileBlockPool(DISK, self._disk_dir, int(self._cfg.get("disk_bytes", 0))) if self._disk_dir else None
        mem_dir = self._mem_dir or os.path.join(self._cfg.get("stats_dir", "/tmp"), "no-memory-tier")
        self._pool = FileBlockPool(MEMORY, mem_dir, int(self._cfg.get("memory_bytes", 0)), spill=disk)
        if self._cfg.get("async_save", True):
            self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llmd-kv-tier-save")
        logger.info("TieredConnector: %d layers, layout %s, pools %s", len(self._caches), self._layout, self._pool.stats())

    def start_load_kv(self, forward_context, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        for op in meta.loads:
            t0 = time.perf_counter()
            done, nbytes = self._load(op)
            if done < len(op.blocks):
                self._failed.update(b.block_id for b in op.blocks[done:])
                self._stats.add("load_failed_blocks", len(op.blocks) - done)
            dt = time.perf_counter() - t0
            self._stats.add("loaded_blocks", done)
            self._stats.add("loaded_bytes", nbytes)
            self._stats.add("load_seconds", dt)
        if meta.loads:
            self._publish_pool_stats()

    def _load(self, op: LoadOp) -> tuple[int, int]:
        """Blocks loaded (a prefix of ``op.blocks``) and their bytes."""
        if self._pool is None:
            return 0, 0
        payloads, staged = [], []
        for b in op.blocks:
            try:
                rec = self._read(b)
                if rec is None:
                    raise tier_format.RecordMismatch("record gone")
                payloads.append(tier_format.decode(rec, self._ns, b.hhex, b.tokens))
            except tier_format.RecordMismatch as e:
                logger.warning("request %s: tier block %s unusable (%s); recomputing from there", op.request_id, b.hhex[:12], e)
                self._pool.discard(b.hhex) if b.tier != SHARED else BlockDir(self._staged_dir).unlink(b.hhex)
                self._stats.add("mismatch_blocks")
                break
            except OSError as e:
                logger.warning("request %s: tier read failed (%s)", op.request_id, e)
                break
            if b.tier == SHARED:
                staged.append(b.hhex)
        n = len(payloads)
        if n:
            ids = [b.block_id for b in op.blocks[:n]]
            stacked = np.stack(payloads)  # [n, layers, *block_shape]
            for i, cache in enumerate(self._caches.values()):
                scatter_blocks(cache, ids, stacked[:, i], self._layout)
            for tier in {b.tier for b in op.blocks[:n]}:
                self._stats.add(f"loaded_bytes_{tier}", sum(p.nbytes for p, b in zip(payloads, op.blocks) if b.tier == tier))
        for h in staged:  # promote shared-tier blocks into the local pool
            self._pool.adopt(h, BlockDir(self._staged_dir).file(h))
        return n, sum(p.nbytes for p in payloads)

    def _read(self, b: BlockOp) -> bytes | None:
        if b.tier == SHARED:
            return BlockDir(self._staged_dir).read(b.hhex)
        got = self._pool.get(b.hhex)
        return got[0] if got else None

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # loads complete in start_load_kv, before the forward pass

    def save_kv_layer(self, layer_name: str, kv_layer, attn_metadata, **kwargs: Any) -> None:
        return  # whole blocks are saved after the forward pass

    def wait_for_save(self) -> None:
        if self._pool is None or not self.has_connector_metadata():
            return
        saves = self._get_connector_metadata().saves
        if not saves:
            return
        t0 = time.perf_counter()
        ids = [b.block_id for b in saves]
        per_layer = [gather_blocks(cache, ids, self._layout) for cache in self._caches.values()]  # copies
        payload = np.stack(per_layer, axis=1)  # [n, layers, *block_shape]
        self._stats.add("save_copy_seconds", time.perf_counter() - t0)
        if self._writer is not None:
            self._writer.submit(self._write, saves, payload)
        else:
            self._write(saves, payload)

    def _write(self, saves: list[BlockOp], payload: np.ndarray) -> None:
        try:
            t0 = time.perf_counter()
            for b, block in zip(saves, payload):
                rec = tier_format.encode(self._ns, b.hhex, b.parent, b.tokens, block)
                if self._pool.put(b.hhex, rec):
                    self._stats.add("saved_blocks")
                    self._stats.add("saved_bytes", block.nbytes)
                else:
                    self._stats.add("save_refused_blocks")
            self._stats.add("save_write_seconds", time.perf_counter() - t0)
            self._publish_pool_stats()
        except Exception:  # a failed save is a future miss, never a failed request
            logger.exception("TieredConnector: saving %d blocks failed", len(saves))

    def _publish_pool_stats(self) -> None:
        if self._pool is not None:
            self._stats.set("pools", self._pool.stats())
        self._stats.flush()

    def get_block_ids_with_load_errors(self) -> set[int]:
        failed, self._failed = self._failed, set()
        return failed

    def shutdown(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        self._publish_pool_stats()
        self._stats.flush()
