"""The self-describing KV block record shared by every tier (pure numpy).

One record holds one block of a request (every layer) and says what it is::

    b"LLMDKVB1" | u32 header length | JSON header | payload

The header carries the namespace (model, dtype, KV layout, layer names,
block size: :class:`TierNamespace`), the block's chained sha256 hash (vLLM's
``request.block_hashes``), its parent hash, its token ids, the payload shape
and a CRC-32 of the payload. A reader states what it expects; any difference
(another model, dtype, layout or ISA, another hash, other tokens, a
truncated or corrupted payload) raises :class:`RecordMismatch`, which every
tier treats as a miss: a foreign block is recomputed, never loaded.

The same bytes are a file in the host-memory pool (tmpfs), a file on the
disk spill, and a ``uint8`` numpy array in the Ray object store.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from llmd_ray.kv.layout import KVLayout

MAGIC = b"LLMDKVB1"
_LEN = struct.Struct("<I")
MAX_HEADER = 1 << 20


class RecordMismatch(ValueError):
    """A record that is not the block the reader asked for (a miss, never an error to the user)."""


@dataclass(frozen=True, slots=True)
class TierNamespace:
    """What must be equal for a block to be reused: model, dtype, layout, layers."""

    model: str
    layout: KVLayout
    layer_names: tuple[str, ...]

    @property
    def block_size(self) -> int:
        return self.layout.block_size

    @property
    def payload_shape(self) -> tuple[int, ...]:
        return (len(self.layer_names), *self.layout.block_shape)

    @property
    def payload_nbytes(self) -> int:
        return len(self.layer_names) * self.layout.block_nbytes

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "layout": asdict(self.layout), "layer_names": list(self.layer_names)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TierNamespace:
        return cls(str(d["model"]), KVLayout.from_dict(d["layout"]), tuple(d["layer_names"]))

    def digest(self) -> str:
        """A short stable id (directory and object-store key prefix)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def hash_hex(block_hash: bytes | str) -> str:
    return block_hash if isinstance(block_hash, str) else bytes(block_hash).hex()


def encode(ns: TierNamespace, block_hash: bytes | str, parent_hash: bytes | str | None,
           token_ids: Sequence[int], payload: np.ndarray) -> bytes:
    """One record for ``payload`` (``ns.payload_shape``, ``ns.layout.dtype``)."""
    if tuple(payload.shape) != ns.payload_shape or payload.dtype != np.dtype(ns.layout.dtype):
        raise ValueError(f"payload {payload.dtype}{tuple(payload.shape)} != namespace {ns.layout.dtype}{ns.payload_shape}")
    if len(token_ids) != ns.block_size:
        raise ValueError(f"a block holds {ns.block_size} tokens, got {len(token_ids)}")
    body = memoryview(np.ascontiguousarray(payload)).cast("B")
    header = {
        "ns": ns.to_dict(), "ns_digest": ns.digest(), "hash": hash_hex(block_hash),
        "parent": hash_hex(parent_hash) if parent_hash else None, "tokens": [int(t) for t in token_ids],
        "nbytes": body.nbytes, "crc32": zlib.crc32(body),
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((MAGIC, _LEN.pack(len(raw)), raw, body))


def read_header(record: bytes | memoryview | np.ndarray) -> tuple[dict[str, Any], int]:
    """The header and the payload's offset; raises :class:`RecordMismatch` on a malformed record."""
    buf = memoryview(record).cast("B") if not isinstance(record, np.ndarray) else memoryview(record.view(np.uint8).reshape(-1))
    if len(buf) < len(MAGIC) + _LEN.size or bytes(buf[: len(MAGIC)]) != MAGIC:
        raise RecordMismatch("not a KV block record")
    (n,) = _LEN.unpack_from(buf, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if n > MAX_HEADER or start + n > len(buf):
        raise RecordMismatch("truncated record header")
    try:
        header = json.loads(bytes(buf[start : start + n]))
    except ValueError as e:
        raise RecordMismatch(f"unreadable record header: {e}") from e
    return header, start + n


def decode(record: bytes | memoryview | np.ndarray, ns: TierNamespace, block_hash: bytes | str,
           token_ids: Sequence[int] | None = None) -> np.ndarray:
    """The payload ``[layers, *block_shape]`` of ``record``, if it is exactly the block asked for."""
    header, offset = read_header(record)
    if header.get("ns_digest") != ns.digest() or header.get("ns") != ns.to_dict():
        raise RecordMismatch("record from another model, dtype or KV layout")
    if header.get("hash") != hash_hex(block_hash):
        raise RecordMismatch("record of another block hash")
    if token_ids is not None and header.get("tokens") != [int(t) for t in token_ids]:
        raise RecordMismatch("record of other tokens")
    buf = memoryview(record).cast("B") if not isinstance(record, np.ndarray) else memoryview(record.view(np.uint8).reshape(-1))
    body = buf[offset:]
    if len(body) != header.get("nbytes") or len(body) != ns.payload_nbytes:
        raise RecordMismatch(f"payload holds {len(body)} bytes; {ns.payload_nbytes} expected")
    if zlib.crc32(body) != header.get("crc32"):
        raise RecordMismatch("payload checksum mismatch")
    return np.frombuffer(body, dtype=np.dtype(ns.layout.dtype)).reshape(ns.payload_shape)
