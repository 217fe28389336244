"""The transfer metadata joining the two halves of a P/D request.

A :class:`KVHandoff` describes one request's exported KV blocks: which prompt
blocks (``blocks``), in which layout, for which tokens (``token_digest``),
and where the buffer lies on the current node (``path``). It travels as a
plain dict inside vLLM's ``kv_transfer_params``:

* to the prefill engine: ``{"llmd_export": {"path": ..., "skip_blocks": s}}``;
* back from it (``RequestOutput.kv_transfer_params``): ``{"llmd_export": handoff}``
  or ``{"llmd_export_error": reason}``;
* to the decode engine: ``{"llmd_import": handoff}`` with the decode node's path.

Between the two engines the blocks travel as a :class:`KVPayload`: the
handoff plus one numpy buffer ``[num_layers, num_blocks, *block_shape]``,
which Ray moves through its object store without pickling the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from llmd_ray.kv.layout import KVLayout
from llmd_ray.kv.plan import BlockRange

EXPORT_KEY = "llmd_export"
EXPORT_ERROR_KEY = "llmd_export_error"
IMPORT_KEY = "llmd_import"


def token_digest(token_ids: Sequence[int], num_tokens: int) -> str:
    """sha256 of the first ``num_tokens`` prompt tokens (the tokens the blocks hold)."""
    if num_tokens > len(token_ids):
        raise ValueError(f"digest over {num_tokens} tokens of a {len(token_ids)}-token prompt")
    return hashlib.sha256(np.asarray(token_ids[:num_tokens], dtype=np.int64).tobytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What the prefill engine is asked to export."""

    path: str
    skip_blocks: int = 0

    def to_params(self) -> dict[str, Any]:
        return {EXPORT_KEY: {"path": self.path, "skip_blocks": self.skip_blocks}}

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> ExportRequest | None:
        d = (params or {}).get(EXPORT_KEY)
        if not isinstance(d, dict):
            return None
        return cls(str(d["path"]), int(d.get("skip_blocks", 0)))


@dataclass(frozen=True, slots=True)
class KVHandoff:
    """One request's exported KV blocks."""

    request_id: str
    blocks: BlockRange
    num_prompt_tokens: int
    token_digest: str  # over the prompt tokens [0, blocks.end * block_size)
    layout: KVLayout
    layer_names: tuple[str, ...]
    path: str | None = None  # the buffer on this node; None while it travels

    @property
    def block_size(self) -> int:
        return self.layout.block_size

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)

    @property
    def buffer_shape(self) -> tuple[int, ...]:
        return (self.num_layers, self.blocks.count, *self.layout.block_shape)

    @property
    def nbytes(self) -> int:
        return self.num_layers * self.blocks.count * self.layout.block_nbytes

    @property
    def num_tokens(self) -> int:
        """Prompt tokens the handed-over blocks hold."""
        return self.blocks.count * self.block_size

    def at(self, path: str | None) -> KVHandoff:
        return replace(self, path=path)

    def matches(self, token_ids: Sequence[int]) -> bool:
        """Whether the blocks were computed for these prompt tokens."""
        n = self.blocks.end * self.block_size
        return len(token_ids) >= n and token_digest(token_ids, n) == self.token_digest

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "first_block": self.blocks.first,
            "num_blocks": self.blocks.count,
            "num_prompt_tokens": self.num_prompt_tokens,
            "token_digest": self.token_digest,
            "layout": self.layout.to_dict(),
            "layer_names": list(self.layer_names),
            "path": self.path,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KVHandoff:
        return cls(
            request_id=str(d["request_id"]),
            blocks=BlockRange(int(d["first_block"]), int(d["num_blocks"])),
            num_prompt_tokens=int(d["num_prompt_tokens"]),
            token_digest=str(d["token_digest"]),
            layout=KVLayout.from_dict(d["layout"]),
            layer_names=tuple(d["layer_names"]),
            path=d.get("path"),
        )

    def import_params(self) -> dict[str, Any]:
        """``kv_transfer_params`` for the decode engine."""
        if self.path is None:
            raise ValueError("a handoff must have a path on this node before it is imported")
        return {IMPORT_KEY: self.to_dict()}

    @classmethod
    def from_import_params(cls, params: dict[str, Any] | None) -> KVHandoff | None:
        d = (params or {}).get(IMPORT_KEY)
        return cls.from_dict(d) if isinstance(d, dict) else None

    @classmethod
    def from_export_output(cls, params: dict[str, Any] | None) -> KVHandoff | None:
        d = (params or {}).get(EXPORT_KEY)
        return cls.from_dict(d) if isinstance(d, dict) else None


@dataclass(slots=True)
class KVPayload:
    """A handoff and its blocks, as they travel between deployments (numpy: zero-copy on get)."""

    handoff: KVHandoff
    data: np.ndarray
    prefill_s: float = 0.0  # engine time of the remote prefill (queue + compute)
    export_s: float = 0.0  # reading the exported buffer on the prefill side

    def __post_init__(self):
        if tuple(self.data.shape) != self.handoff.buffer_shape:
            raise ValueError(f"payload shape {tuple(self.data.shape)} != handoff buffer {self.handoff.buffer_shape}")
        if self.data.dtype != np.dtype(self.handoff.layout.dtype):
            raise ValueError(f"payload dtype {self.data.dtype} != handoff layout {self.handoff.layout.dtype}")

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)
