"""KV cache layouts and whole-block moves, in numpy.

An engine holds one KV tensor per attention layer. Two layouts matter:

``cpu``
    vLLM's CPU backend: ``[num_blocks, num_kv_heads, block_size, 2 * head_size]``.
    Inside each (block, head) the region is ``2 * block_size`` rows of
    ``head_size``: the block's K rows first, then its V rows.
``kv_split``
    The GPU flash-attention layout: ``[2, num_blocks, block_size, num_kv_heads, head_size]``
    (K plane, then V plane).

Blocks move whole and block-major: a handoff buffer for ``L`` layers and
``n`` blocks is ``[L, n, *block_shape]`` in the source engine's layout, so
the common case (both engines alike) is a plain copy of contiguous bytes.
``convert`` re-lays blocks between the two layouts; it assumes K is stored
as plain rows (vLLM's portable ``vec`` kernels). The CPU kernels of another
ISA may pack K differently, so engines exchange blocks only when their
layouts (including the ISA tag) are equal, or through ``convert`` when both
are plain.

Pure numpy: a CPU engine's torch tensor is viewed with ``tensor.numpy()``
(no copy), so gathers read and scatters write the engine's cache in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

LayoutKind = Literal["cpu", "kv_split"]


@dataclass(frozen=True, slots=True)
class KVLayout:
    """How one layer's KV cache tensor is laid out (all layers alike)."""

    kind: LayoutKind
    num_kv_heads: int
    block_size: int
    head_size: int
    dtype: str  # numpy dtype name, e.g. "float32"
    isa: str = ""  # CPU kernel family that wrote the blocks ("" when unknown or irrelevant)

    @property
    def block_shape(self) -> tuple[int, ...]:
        if self.kind == "cpu":
            return (self.num_kv_heads, self.block_size, 2 * self.head_size)
        return (2, self.block_size, self.num_kv_heads, self.head_size)

    @property
    def block_axis(self) -> int:
        """The axis of the per-layer cache that indexes blocks."""
        return 0 if self.kind == "cpu" else 1

    @property
    def block_nbytes(self) -> int:
        """Bytes of one block of one layer."""
        return int(np.prod(self.block_shape)) * np.dtype(self.dtype).itemsize

    def cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        if self.kind == "cpu":
            return (num_blocks, *self.block_shape)
        return (2, num_blocks, self.block_size, self.num_kv_heads, self.head_size)

    @classmethod
    def infer(cls, shape: Sequence[int], num_blocks: int, block_size: int, dtype: str, isa: str = "") -> KVLayout:
        """The layout of a per-layer cache tensor of ``shape`` holding ``num_blocks`` blocks."""
        shape = tuple(int(s) for s in shape)
        if len(shape) == 4 and shape[0] == num_blocks and shape[2] == block_size and shape[3] % 2 == 0:
            return cls("cpu", shape[1], block_size, shape[3] // 2, dtype, isa)
        if len(shape) == 5 and shape[0] == 2 and shape[1] == num_blocks and shape[2] == block_size:
            return cls("kv_split", shape[3], block_size, shape[4], dtype, isa)
        raise ValueError(f"unknown KV cache layout: shape {shape}, {num_blocks} blocks of {block_size}")

    def compatible(self, other: KVLayout) -> bool:
        """Whether blocks of ``other`` can be copied into this layout, possibly via ``convert``."""
        same_geometry = (self.num_kv_heads, self.block_size, self.head_size, self.dtype) == (
            other.num_kv_heads, other.block_size, other.head_size, other.dtype,
        )
        if not same_geometry:
            return False
        return self == other or (self.isa in ("", "vec", "vec16") and other.isa in ("", "vec", "vec16"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KVLayout:
        return cls(**d)


def gather_blocks(cache: np.ndarray, block_ids: Sequence[int], layout: KVLayout, out: np.ndarray | None = None) -> np.ndarray:
    """Blocks ``block_ids`` of one layer's cache, block-major ``[n, *block_shape]``."""
    ids = np.asarray(block_ids, dtype=np.int64)
    if layout.kind == "cpu":
        return np.take(cache, ids, axis=0, out=out)
    blocks = np.moveaxis(np.take(cache, ids, axis=1), 0, 1)
    if out is None:
        return np.ascontiguousarray(blocks)
    out[...] = blocks
    return out


def scatter_blocks(cache: np.ndarray, block_ids: Sequence[int], blocks: np.ndarray, layout: KVLayout) -> None:
    """Write block-major ``blocks`` into one layer's cache at ``block_ids`` (in place)."""
    ids = np.asarray(block_ids, dtype=np.int64)
    if len(ids) != blocks.shape[0]:
        raise ValueError(f"{len(ids)} block ids for {blocks.shape[0]} blocks")
    if tuple(blocks.shape[1:]) != layout.block_shape:
        raise ValueError(f"block shape {tuple(blocks.shape[1:])} does not match layout {layout.block_shape}")
    if layout.kind == "cpu":
        cache[ids] = blocks
    else:
        cache[:, ids] = np.moveaxis(blocks, 1, 0)


def split_kv(blocks: np.ndarray, layout: KVLayout) -> tuple[np.ndarray, np.ndarray]:
    """K and V of block-major ``blocks``, each ``[n, num_kv_heads, block_size, head_size]``."""
    n = blocks.shape[0]
    if layout.kind == "cpu":
        rows = blocks.reshape(n, layout.num_kv_heads, 2, layout.block_size, layout.head_size)
        return rows[:, :, 0], rows[:, :, 1]
    return blocks[:, 0].transpose(0, 2, 1, 3), blocks[:, 1].transpose(0, 2, 1, 3)


def join_kv(k: np.ndarray, v: np.ndarray, layout: KVLayout) -> np.ndarray:
    """The inverse of :func:`split_kv`: block-major blocks in ``layout``."""
    if layout.kind == "cpu":
        n, h, bs, d = k.shape
        return np.ascontiguousarray(np.stack([k, v], axis=2).reshape(n, h, bs, 2 * d))
    return np.ascontiguousarray(np.stack([k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)], axis=1))


def convert(blocks: np.ndarray, src: KVLayout, dst: KVLayout) -> np.ndarray:
    """Block-major ``blocks`` re-laid from ``src`` into ``dst`` (same geometry)."""
    if not dst.compatible(src):
        raise ValueError(f"cannot convert KV blocks from {src} to {dst}")
    if src.kind == dst.kind:
        return blocks
    k, v = split_kv(blocks, src)
    return join_kv(k, v, dst)
