"""``KVTiers``: the replica feature that gives the engine the KV tiers (``TieredConnector``).

Per replica, under ``<shm_root>/<replica id>/`` (tmpfs): ``mem/`` (the
host-memory pool, written by the engine), ``staged/`` (shared-tier blocks
staged for the engine), and the connector's ``*.json`` counters; the disk
spill is ``<disk_dir>/rank-<r>/`` so a restarted replica of the same rank
finds its blocks again. A replica that dies leaves its tmpfs directory
behind; the next replica on the node removes directories whose owner
process is gone.

The shared tier (``SharedKVStore``), from the replica process, since the
EngineCore process is not a Ray worker:

* before a request: the blocks after the local tiers' run are looked up in
  the store; the run it holds is fetched (zero-copy on the node) and written
  to ``staged/``, where the engine's scheduler finds them;
* after a request: its full blocks the store lacks are read from ``mem/``
  (or the disk spill) and uploaded, in a background task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from collections import OrderedDict
from typing import Any

import numpy as np

from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.types import GenerateChunk, GenerateRequest
from llmd_ray.kv.plan import transferable_blocks
from llmd_ray.tiers.pool_files import BlockDir
from llmd_ray.tiers.config import KVTiersConfig
from llmd_ray.tiers.metrics import TierMetrics, flatten
from llmd_ray.routing.hashing import block_hashes
from llmd_ray.host import shm_dir
from llmd_ray.serving.feature import Feature, Inner

logger = logging.getLogger("ray.serve")
SHARED_TIMEOUT_S = 2.0
UPLOAD_WAIT_S = 1.0
KNOWN_TTL_S = 30.0


def default_shm_root() -> str:
    return shm_dir("llmd-kv-tiers")


def sweep_dead_owners(root: str) -> int:
    """Remove replica directories whose owner process is gone (same node, same pid namespace)."""
    removed = 0
    for name in os.listdir(root) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, name, "owner.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed += 1
        except (OSError, ValueError):
            continue
    return removed


class KVTiers(Feature):
    name = "kv_tiers"

    def __init__(self, config: EngineConfig, tiers: KVTiersConfig | dict, store: Any, replica_id: str,
                 rank: int | None):
        self.tiers = KVTiersConfig.model_validate(tiers or {})
        self.tier_metrics = TierMetrics(config.name)
        self.store = store if self.tiers.shared else None
        self.rid = replica_id
        self.rank = rank  # the disk spill is per rank: a restarted replica of the same rank finds its blocks
        root = self.tiers.shm_root or default_shm_root()
        os.makedirs(root, exist_ok=True)
        sweep_dead_owners(root)
        self.owner_dir = os.path.join(root, "".join(c if c.isalnum() or c in "-_." else "_" for c in replica_id)[:96])
        os.makedirs(self.owner_dir, exist_ok=True)
        with open(os.path.join(self.owner_dir, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        self._tasks: list[asyncio.Task] = []
        self._staged_refs: dict[str, int] = {}
        self._known: OrderedDict[str, float] = OrderedDict()  # hashes the store had recently
        self.shared_stats = {"lookups": 0, "fetched_blocks": 0, "fetched_bytes": 0, "fetch_seconds": 0.0,
                             "uploaded_blocks": 0, "uploaded_bytes": 0, "errors": 0, "upload_dropped": 0}
        self._model = config.model

    def engine_args(self) -> dict[str, Any]:
        return {"kv_transfer_config": self._connector_config()}

    def _connector_config(self) -> dict[str, Any]:
        rank = self.rank
        disk = (os.path.join(self.tiers.disk_dir, f"rank-{rank if rank is not None else self.rid}")
                if self.tiers.disk_dir else None)
        self._disk_dir = disk
        return self.tiers.connector_config(
            model=self._model, memory_dir=os.path.join(self.owner_dir, "mem") if self.tiers.memory_bytes else None,
            staged_dir=os.path.join(self.owner_dir, "staged"), disk_dir=disk, stats_dir=self.owner_dir,
        )

    async def started(self, replica: Any) -> None:
        self.block_size = replica.engine.block_size
        with open(os.path.join(self.owner_dir, "namespace.json")) as f:
            self.ns = json.load(f)["digest"]
        sub = lambda d: BlockDir(os.path.join(d, self.ns)) if d else None  # noqa: E731
        self.mem = sub(os.path.join(self.owner_dir, "mem")) if self.tiers.memory_bytes else None
        self.disk, self.staged = sub(self._disk_dir), sub(os.path.join(self.owner_dir, "staged"))
        self._uploads: asyncio.Queue = asyncio.Queue(maxsize=1024)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._metrics_loop())]
        if self.store is not None:
            self._tasks.append(loop.create_task(self._upload_loop()))
        logger.info("KV tiers ready: %s", self.tiers.model_dump())

    # ------------------------------------------------------------ requests
    async def wrap(self, replica: Any, request: GenerateRequest, inner: Inner) -> AsyncIterator[GenerateChunk]:
        hashes = [h.hex() for h in block_hashes(request.prompt_token_ids, self.block_size)]
        staged = await self._prefetch(request.prompt_token_ids, hashes) if self.store is not None else []
        tokens = list(request.prompt_token_ids)
        try:
            async for chunk in inner(request):
                tokens.extend(chunk.token_ids if request.stream else [])
                if not request.stream and chunk.finish_reason is not None:
                    tokens.extend(chunk.token_ids)
                yield chunk
        finally:
            self._release(staged)
            if self.store is not None:
                self._queue_upload(tokens)

    def _local_run(self, hashes: list[str], end: int) -> int:
        i = 0
        while i < end and ((self.mem and self.mem.contains(hashes[i])) or (self.disk and self.disk.contains(hashes[i]))):
            i += 1
        return i

    async def _prefetch(self, prompt: list[int], hashes: list[str]) -> list[str]:
        """Stage the shared tier's blocks that follow the local run; returns the staged hashes (to release)."""
        end = min(len(hashes), transferable_blocks(len(prompt), self.block_size))
        first = self._local_run(hashes, end)
        if end - first < self.tiers.min_load_blocks:
            return []
        t0 = time.perf_counter()
        self.shared_stats["lookups"] += 1
        try:
            run = await asyncio.wait_for(self.store.lookup.remote(self.ns, hashes[first:end]), SHARED_TIMEOUT_S)
            if len(run) < self.tiers.min_load_blocks:
                return []
            wanted = [(h, refs[0]) for h, refs, _node in run if not self._staged_refs.get(h)]
            records = await asyncio.wait_for(asyncio.gather(*(ref for _, ref in wanted)), SHARED_TIMEOUT_S)
            await asyncio.to_thread(self._write_staged, [(h, r) for (h, _), r in zip(wanted, records)])
        except Exception as e:  # the shared tier is an optimisation: compute instead
            self.shared_stats["errors"] += 1
            logger.warning("shared KV tier fetch failed (%s: %s); computing the prefix", type(e).__name__, e)
            return []
        staged = [h for h, _refs, _node in run]
        for h in staged:
            self._staged_refs[h] = self._staged_refs.get(h, 0) + 1
        self.shared_stats["fetched_blocks"] += len(wanted)
        self.shared_stats["fetched_bytes"] += sum(int(r.nbytes) for r in records)
        self.shared_stats["fetch_seconds"] += time.perf_counter() - t0
        return staged

    def _write_staged(self, items: list[tuple[str, np.ndarray]]) -> None:
        for h, record in items:
            self.staged.write(h, memoryview(np.ascontiguousarray(record, dtype=np.uint8)))

    def _release(self, staged: list[str]) -> None:
        for h in staged:
            n = self._staged_refs.get(h, 0) - 1
            if n > 0:
                self._staged_refs[h] = n
            else:
                self._staged_refs.pop(h, None)
                self.staged.unlink(h)  # unused (the engine moves the blocks it loads into its pool)

    def _queue_upload(self, tokens: list[int]) -> None:
        now = time.monotonic()
        hashes = [h.hex() for h in block_hashes(tokens, self.block_size)]
        new = [h for h in hashes if now - self._known.get(h, -KNOWN_TTL_S) >= KNOWN_TTL_S]
        if new:
            try:
                self._uploads.put_nowait(new)
            except asyncio.QueueFull:
                self.shared_stats["upload_dropped"] += 1

    async def _upload_loop(self) -> None:
        while True:
            hashes = await self._uploads.get()
            try:
                await self._upload(hashes)
            except Exception as e:
                self.shared_stats["errors"] += 1
                logger.warning("shared KV tier upload failed (%s: %s)", type(e).__name__, e)

    async def _upload(self, hashes: list[str]) -> None:
        missing = set(await self.store.missing.remote(self.ns, hashes))
        now = time.monotonic()
        for h in hashes:
            if h not in missing:
                self._mark_known(h, now)
        deadline = now + UPLOAD_WAIT_S
        for h in [h for h in hashes if h in missing]:
            record = await asyncio.to_thread(self._read_local, h)
            while record is None and time.monotonic() < deadline:  # the engine's background save may lag
                await asyncio.sleep(0.05)
                record = await asyncio.to_thread(self._read_local, h)
            if record is None:
                break  # chained: later blocks are useless without this one
            arr = np.frombuffer(record, dtype=np.uint8)
            if await self.store.put.remote(self.ns, h, arr, self.owner_dir.rsplit("/", 1)[-1]):
                self.shared_stats["uploaded_blocks"] += 1
                self.shared_stats["uploaded_bytes"] += len(record)
                self._mark_known(h, time.monotonic())

    def _mark_known(self, h: str, now: float) -> None:
        self._known[h] = now
        self._known.move_to_end(h)
        while len(self._known) > 100_000:
            self._known.popitem(last=False)

    def _read_local(self, h: str) -> bytes | None:
        for d in (self.mem, self.disk):
            if d is not None:
                rec = d.read(h)
                if rec is not None:
                    return rec
        return None

    # --------------------------------------------------------------- stats
    def connector_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in ("scheduler", "worker"):
            try:
                with open(os.path.join(self.owner_dir, f"{part}.json")) as f:
                    out.update(json.load(f))
            except (OSError, ValueError):
                pass
        return out

    def tier_stats(self) -> dict[str, Any]:
        return {"connector": self.connector_stats(), "shared": dict(self.shared_stats), "namespace": self.ns,
                "owner_dir": self.owner_dir, "staged_files": self.staged.hashes()}

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            try:
                self.tier_metrics.update(flatten(self.connector_stats(), self.shared_stats))
            except Exception:
                logger.debug("tier metrics update failed", exc_info=True)

    def release(self) -> None:
        """Stop the tasks and remove this replica's tmpfs directory (the disk spill stays for its successor)."""
        for t in self._tasks:
            t.cancel()
        owner = self.owner_dir
        if owner:
            shutil.rmtree(owner, ignore_errors=True)
