"""Token-level workloads for the simulator, built by the same generators as the benchmark harness.

``llmd_ray.workloads.jobs.build_jobs`` asks a prompt builder for text of an
exact token count. ``SyntheticPromptBuilder`` answers with ``SynthText``: a
tuple of (uid, length) segments standing for token ids that are a pure
function of (uid, position). No tokenizer is needed, equal prefixes share
segments (so they share KV blocks), and the lengths, group choices, seeds and
arrival times are exactly those of a real benchmark run with the same config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmd_ray.workloads.arrivals import schedule
from llmd_ray.workloads.jobs import build_jobs
from llmd_ray.workloads.spec import MultiTurnWorkload, RunSpec, default_count


class SynthText(tuple):
    """Segments ((uid, n_tokens), ...); ``len`` is the number of segments, ``tokens`` the token count."""

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self)

    def __add__(self, other) -> SynthText:
        return SynthText(tuple(self) + tuple(other))


class SyntheticPromptBuilder:
    """A ``llmd_ray.workloads.jobs.TextBuilder`` at the token level (the harness's ``PromptBuilder`` uses a tokenizer)."""

    special_overhead = 0

    def text(self, n_tokens: int, rng: np.random.Generator, prefix: SynthText | str = "") -> SynthText:
        base = SynthText(prefix) if prefix else SynthText()
        have = base.tokens
        if have > n_tokens:
            raise ValueError(f"prefix already has {have} tokens, more than the {n_tokens} wanted")
        if n_tokens == have:
            return base
        return base + SynthText(((int(rng.integers(1, 2**62)), n_tokens - have),))

    def content(self, n_tokens: int, rng: np.random.Generator) -> SynthText:
        return SynthText(((int(rng.integers(1, 2**62)), n_tokens),))

    def count(self, text: SynthText) -> int:
        return text.tokens


_STATE: dict[tuple, tuple[tuple[int, ...], tuple, int, int]] = {}  # (segments, bs) -> (hashes, pieces, fill, prev)


def block_hashes(text: SynthText, block_size: int) -> tuple[int, ...]:
    """Chained hashes of the full blocks (deterministic for any PYTHONHASHSEED: ints and tuples only).

    The hashing state after every segment is memoised, so a shared system prompt
    or a chat history is hashed once however many requests extend it.
    """
    segs = tuple(text)
    cut = len(segs)
    state = None
    while cut > 0:
        state = _STATE.get((segs[:cut], block_size))
        if state is not None:
            break
        cut -= 1
    out, pieces, fill, prev = state if state is not None else ((), (), 0, 0)
    for i in range(cut, len(segs)):
        uid, n = segs[i]
        out_l, pieces_l = list(out), list(pieces)
        off = 0
        if fill and n:  # complete the open block first
            off = min(n, block_size - fill)
            pieces_l.append((uid, 0, off))
            fill += off
            if fill == block_size:
                prev = hash((prev, tuple(pieces_l)))
                out_l.append(prev)
                pieces_l, fill = [], 0
        if not fill:  # whole blocks of this segment, then the open rest
            while off + block_size <= n:
                prev = hash((prev, ((uid, off, block_size),)))
                out_l.append(prev)
                off += block_size
            if off < n:
                pieces_l, fill = [(uid, off, n - off)], n - off
        out, pieces = tuple(out_l), tuple(pieces_l)
        if len(_STATE) > 500_000:
            _STATE.clear()
        _STATE[segs[: i + 1], block_size] = (out, pieces, fill, prev)
    return out


@dataclass(slots=True)
class SimTurn:
    prompt: SynthText | None  # completions: the full prompt
    user: SynthText | None  # chat: this turn's message
    max_tokens: int
    think_after_s: float
    prehashed: tuple[int, tuple[int, ...]] | None = None  # (block size, block_hashes(prompt)): see prehash


@dataclass(slots=True)
class SimJob:
    index: int
    arrival_s: float
    turns: list[SimTurn]
    system: SynthText | None = None
    session_id: str | None = None


def sim_jobs(config: RunSpec | dict, rate: float | None = None, time_offset: float = 0.0, salt: int = 0) -> list[SimJob]:
    """The jobs of a benchmark config (see ``RunSpec.of``), as the harness would send them (same seed: same
    lengths and times)."""
    cfg = RunSpec.of(config)
    arrivals = schedule(cfg.load, default_count(cfg.workload), cfg.seed, rate)
    jobs = build_jobs(cfg.workload, len(arrivals), SyntheticPromptBuilder(), cfg.seed, salt)
    out = []
    for job, arr in zip(jobs, arrivals):
        turns = [SimTurn(t.prompt, t.user_content, t.max_tokens, t.think_after_s) for t in job.turns]
        sess = job.session_id if isinstance(cfg.workload, MultiTurnWorkload) else None
        out.append(SimJob(job.index, arr.t + time_offset, turns, job.system_prompt, sess and f"{sess}-{salt}"))
    return out


def prehash(jobs: list[SimJob], block_size: int) -> None:
    """Hash every full prompt now (``SimTurn.prehashed``), so a timed run does not (the same hashes)."""
    for job in jobs:
        for t in job.turns:
            if t.prompt is not None:
                t.prehashed = (block_size, block_hashes(t.prompt, block_size))
