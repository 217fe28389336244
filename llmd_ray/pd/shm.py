"""KV buffers in shared memory, between a Serve replica and its engine process.

vLLM's ``AsyncLLM`` runs its scheduler and worker (and so the KV connector)
in a separate EngineCore process that is not a Ray worker and cannot reach
the object store. The replica and its engine exchange each request's blocks
through one file in ``/dev/shm``: the engine writes an export there, the
replica reads it into the object store; for an import, the replica writes
the payload there and the engine reads it into its paged cache.

Each owner (a replica) has a directory of its own, removed when it stops, so
nothing is left behind when a replica dies and another takes its place.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Sequence

from llmd_ray.host import shm_dir

import numpy as np

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def default_root() -> str:
    """``/dev/shm/llmd-kv`` where shared memory exists, else a temporary directory."""
    return shm_dir("llmd-kv")


class ShmDir:
    """One owner's directory of KV buffers."""

    def __init__(self, owner: str, root: str | None = None):
        self.root = os.path.join(root or default_root(), _SAFE.sub("_", owner)[:96] or "owner")
        os.makedirs(self.root, exist_ok=True)

    def path_for(self, request_id: str, kind: str) -> str:
        """A fresh file name for a request's buffer (unique even if the id repeats)."""
        name = f"{_SAFE.sub('_', request_id)[:96]}.{uuid.uuid4().hex[:8]}.{kind}"
        os.makedirs(self.root, exist_ok=True)  # a sweep may have removed it while idle
        return os.path.join(self.root, name)

    def files(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def write_buffer(path: str, data: np.ndarray) -> None:
    """Write ``data``'s bytes to ``path`` atomically (readers never see half a buffer)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        if data.size:
            f.write(memoryview(np.ascontiguousarray(data)).cast("B"))
    os.replace(tmp, path)


def create_buffer(path: str, dtype: str, shape: Sequence[int]) -> np.memmap:
    """A writable buffer at ``path + '.tmp'``; :func:`publish` makes it visible."""
    return np.memmap(path + ".tmp", dtype=np.dtype(dtype), mode="w+", shape=tuple(shape))


def publish(path: str, buf: np.memmap) -> None:
    buf.flush()
    del buf
    os.replace(path + ".tmp", path)


def open_buffer(path: str, dtype: str, shape: Sequence[int]) -> np.memmap:
    """A read-only view of the buffer at ``path`` (raises FileNotFoundError / ValueError)."""
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = os.path.getsize(path)
    if size != expected:
        raise ValueError(f"KV buffer {path} holds {size} bytes; {expected} expected")
    return np.memmap(path, dtype=np.dtype(dtype), mode="r", shape=tuple(shape))


def read_buffer(path: str, dtype: str, shape: Sequence[int], *, remove: bool = True) -> np.ndarray:
    """The buffer at ``path`` as an in-memory array; the file is removed unless told otherwise."""
    try:
        data = np.fromfile(path, dtype=np.dtype(dtype))
        expected = int(np.prod(shape))
        if data.size != expected:
            raise ValueError(f"KV buffer {path} holds {data.size} elements; {expected} expected")
        return data.reshape(tuple(shape))
    finally:
        if remove:
            remove_file(path)


def remove_file(path: str | None) -> None:
    if not path:
        return
    for p in (path, path + ".tmp"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def sweep_stale(root: str | None = None, max_age_s: float = 600.0) -> int:
    """Remove buffers older than ``max_age_s`` under ``root`` (left by replicas that died); returns how many."""
    import time

    root = root or default_root()
    now, removed = time.time(), 0
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                if now - os.path.getmtime(p) > max_age_s:
                    os.unlink(p)
                    removed += 1
            except OSError:
                pass
        if dirpath != root:
            try:  # an owner's directory, empty and idle: its replica is gone
                if not os.listdir(dirpath) and now - os.path.getmtime(dirpath) > max_age_s:
                    os.rmdir(dirpath)
            except OSError:
                pass
    return removed
