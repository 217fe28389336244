"""The trie of runs of blocks under ``RunPrefixIndex`` (``runindex.py``).

A ``Run`` is a tuple of consecutive blocks of recorded paths that follows its
``parent`` run's last block (a root run starts a path); the index's ``where``
maps every block to the one run holding it. ``walk_runs`` follows a request's
blocks down the trie.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Run:
    """Consecutive blocks following ``parent``'s last one; who holds all of them (``full``) or a leading part."""

    blocks: tuple
    parent: Run | None  # only upward references: a trie dropped is freed by reference counting
    full: int = 0  # bit mask of the slots of the endpoints holding every block
    part: dict = field(default_factory=dict)  # slot -> k: holds blocks[:k] only, 0 < k < len(blocks)


def walk_runs(where: dict, h: tuple) -> tuple[list[Run], Run | None, int, int] | None:
    """(runs ``h`` covers whole, from the root; the run it ends or leaves inside and the blocks in common
    with it (None, 0); blocks walked). None: ``h`` is not a chain the trie can answer for."""
    n, p, parent, runs = len(h), 0, None, []
    while p < n:
        run = where.get(h[p])
        if run is None:
            return runs, None, 0, p
        blocks = run.blocks
        if run.parent is not parent or blocks[0] != h[p]:
            return None  # a block met after another predecessor
        end = p + len(blocks)
        if end <= n and h[p:end] == blocks:
            runs.append(run)
            p, parent = end, run
            continue
        j, lim = 1, min(len(blocks), n - p)
        while j < lim and h[p + j] == blocks[j]:
            j += 1
        if p + j < n and h[p + j] in where:
            return None
        return runs, run, j, p + j
    return runs, None, 0, p


def held_blocks(runs: list[Run], last: Run | None, j: int, slot: int) -> int:
    """Leading blocks the endpoint in ``slot`` holds of a walked request (``walk_runs``'s runs, last, j)."""
    b = 0
    for r in runs:
        if not r.full >> slot & 1:
            return b + r.part.get(slot, 0)
        b += len(r.blocks)
    if last is not None:
        b += j if last.full >> slot & 1 else min(j, last.part.get(slot, 0))
    return b


class TargetMatch:
    """A request's matches read for one endpoint only (``get``); any other read raises, it is not known."""

    __slots__ = ("endpoint_id", "blocks")

    def __init__(self, endpoint_id: str, blocks: int):
        self.endpoint_id, self.blocks = endpoint_id, blocks

    def get(self, endpoint_id: str, default=None):
        if endpoint_id != self.endpoint_id:
            raise KeyError(f"only the match of {self.endpoint_id!r} was computed, not {endpoint_id!r}")
        return self.blocks if self.blocks else default

    def __bool__(self):
        raise TypeError("a TargetMatch knows one endpoint's match, not whether any endpoint matches")
