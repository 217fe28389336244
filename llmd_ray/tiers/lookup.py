"""Tier lookup: how many leading blocks of a request the tiers hold beyond the engine's hit (pure).

vLLM asks a connector, per waiting request, for tokens it can supply beyond
``num_computed_tokens`` (the engine's own prefix-cache hit, whole blocks).
The tiers answer with a run of consecutive blocks starting right there,
each from the first tier that holds it (host memory, then disk, then blocks
staged from the shared tier). A block no tier holds ends the run: block
hashes are chained, so nothing after a gap is usable.

Never the block holding the prompt's last token (vLLM must compute at least
that token to sample), and never a run shorter than ``min_load_blocks``:
below the crossover, loading costs more than recomputing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmd_ray.kv.plan import transferable_blocks

Holder = tuple[str, Callable[[str], bool]]  # (tier name, contains(hash hex))


@dataclass(frozen=True, slots=True)
class TierHit:
    """Blocks ``[first, first + len(tiers))`` of the prompt, ``tiers[i]`` holding block ``first + i``."""

    first: int
    tiers: tuple[str, ...]
    skipped: str | None = None  # why a non-empty run is not loaded ("below_min_load")

    @property
    def num_blocks(self) -> int:
        return len(self.tiers)

    def num_tokens(self, block_size: int) -> int:
        return self.num_blocks * block_size

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tiers:
            out[t] = out.get(t, 0) + 1
        return out


def lookup(
    hashes: Sequence[str], num_prompt_tokens: int, block_size: int, num_computed_tokens: int,
    holders: Sequence[Holder], min_load_blocks: int = 1,
) -> TierHit:
    """The run of blocks the tiers can load for a request (``hashes``: its full-block hashes, hex)."""
    if num_computed_tokens < 0 or min_load_blocks < 1:
        raise ValueError("num_computed_tokens must be >= 0 and min_load_blocks >= 1")
    first = num_computed_tokens // block_size
    if num_computed_tokens % block_size:  # a partial local hit: vLLM resumes mid-block, nothing to add
        return TierHit(first, ())
    end = min(len(hashes), transferable_blocks(num_prompt_tokens, block_size))
    tiers: list[str] = []
    for i in range(first, end):
        tier = next((name for name, contains in holders if contains(hashes[i])), None)
        if tier is None:
            break
        tiers.append(tier)
    if 0 < len(tiers) < min_load_blocks:
        return TierHit(first, (), skipped="below_min_load")
    return TierHit(first, tuple(tiers))


def new_full_blocks(num_hashes: int, saved_upto: int, computed_after_step: int, block_size: int) -> range:
    """Blocks that become full and computed in this step and were not saved yet."""
    end = min(num_hashes, computed_after_step // block_size)
    return range(min(saved_upto, end), end)
