"""Block planning: which KV blocks of a request move, prefill to decode.

Only whole blocks move, and never the block holding the prompt's last token:
the decode engine always computes at least that token itself (it must, to
sample the first output token), exactly like a local prefix-cache hit, which
vLLM also caps one token short of the prompt. So a prompt of ``n`` tokens has
``(n - 1) // block_size`` transferable blocks; a prompt shorter than one block
plus a token has none, and is never worth splitting.

The decode side may already hold the first blocks in its own prefix cache.
The orchestrator estimates how many (``skip``) before the prefill runs, so
the prefill exports only blocks ``[skip, end)``. When the decode engine
schedules the request it knows its real local hit and loads only what it
still lacks: an estimate that was too high leaves a gap that cannot be
filled (the decode engine then prefills from its real hit, locally), one that
was too low moves a few blocks for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class BlockRange:
    """Blocks ``[first, first + count)`` of a request, in prompt order."""

    first: int
    count: int

    def __post_init__(self):
        if self.first < 0 or self.count < 0:
            raise ValueError(f"invalid block range: first={self.first} count={self.count}")

    @property
    def end(self) -> int:
        return self.first + self.count

    def __len__(self) -> int:
        return self.count


def transferable_blocks(num_prompt_tokens: int, block_size: int) -> int:
    """Full prompt blocks that do not hold the last prompt token."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if num_prompt_tokens < 1:
        return 0
    return (num_prompt_tokens - 1) // block_size


def plan_export(num_prompt_tokens: int, block_size: int, decode_cached_blocks: int = 0) -> BlockRange:
    """The blocks the prefill side exports, given the decode side's estimated cached prefix."""
    if decode_cached_blocks < 0:
        raise ValueError(f"decode_cached_blocks must be >= 0, got {decode_cached_blocks}")
    end = transferable_blocks(num_prompt_tokens, block_size)
    first = min(decode_cached_blocks, end)
    return BlockRange(first, end - first)


ImportOutcome = Literal["load", "covered", "gap", "empty"]


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """What the decode engine loads from a handoff, given its real local hit.

    ``blocks`` are prompt block indices to fill; ``offset`` is where the first
    of them sits in the handoff buffer. ``outcome`` says why nothing loads:
    ``covered`` (the local cache already holds every handed-over block),
    ``gap`` (the local cache ends before the handoff starts), ``empty``.
    """

    outcome: ImportOutcome
    blocks: BlockRange
    offset: int = 0

    @property
    def num_blocks(self) -> int:
        return self.blocks.count

    def num_tokens(self, block_size: int) -> int:
        return self.blocks.count * block_size


def plan_import(
    num_prompt_tokens: int, block_size: int, local_computed_tokens: int, handoff: BlockRange
) -> ImportPlan:
    """Blocks to load from a handoff covering ``handoff`` (prompt block indices)."""
    if local_computed_tokens < 0:
        raise ValueError(f"local_computed_tokens must be >= 0, got {local_computed_tokens}")
    local = local_computed_tokens // block_size
    end = min(handoff.end, transferable_blocks(num_prompt_tokens, block_size))
    if handoff.count == 0 or end <= handoff.first:
        return ImportPlan("empty", BlockRange(local, 0))
    if local >= end:
        return ImportPlan("covered", BlockRange(local, 0))
    if local < handoff.first:
        return ImportPlan("gap", BlockRange(local, 0))
    return ImportPlan("load", BlockRange(local, end - local), offset=local - handoff.first)


def block_slots(block_ids: list[int], blocks: BlockRange) -> list[int]:
    """The engine's physical block ids for prompt blocks ``blocks``."""
    if blocks.end > len(block_ids):
        raise ValueError(f"request holds {len(block_ids)} blocks; blocks up to {blocks.end} were asked for")
    return list(block_ids[blocks.first : blocks.end])
