"""Jobs: the seeded list of jobs a run sends.

A job is one request (single-turn workloads, sent to /v1/completions) or one
chat session (multi_turn, /v1/chat/completions), each a list of turns.
Two RNG streams keep runs comparable:
  * structure (lengths, group choice, think times) comes from `seed`;
  * content (the sampled token ids) from (`seed`, `salt`).
Same seed and salt: the same prompts. A different salt (next sweep point,
next compare phase) keeps every length identical but gives fresh text, so
a server's prefix cache cannot carry hits over from an earlier run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from llmd_ray.workloads.spec import (
    LengthDist,
    LongInputWorkload,
    LongOutputWorkload,
    MultiTurnWorkload,
    RandomWorkload,
    SharedPrefixWorkload,
)


class TextBuilder(Protocol):
    """Text of an exact token count: ``llmd_ray.bench.prompts.PromptBuilder`` (real tokenizer) or
    ``llmd_ray.sim.workload.SyntheticPromptBuilder`` (token-level stand-ins)."""

    special_overhead: int

    def text(self, n_tokens: int, rng: np.random.Generator, prefix: Any = "") -> Any: ...

    def content(self, n_tokens: int, rng: np.random.Generator) -> Any: ...


@dataclass
class Turn:
    max_tokens: int
    prompt: str | None = None          # completions: the full prompt text
    user_content: str | None = None    # chat: this turn's user message
    expected_input_tokens: int | None = None  # completions: exact; chat: filled in at send time
    think_after_s: float = 0.0


@dataclass
class Job:
    index: int
    turns: list[Turn]
    group: int | None = None
    session_id: str | None = None
    system_prompt: str | None = None
    arrival_s: float = 0.0
    stage: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def is_chat(self) -> bool:
        return self.session_id is not None


def draw_lengths(dist: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    m = float(dist.mean)
    if dist.distribution == "fixed":
        x = np.full(n, m)
    elif dist.distribution == "uniform":
        lo, hi = m * (1 - dist.range_ratio), m * (1 + dist.range_ratio)
        x = rng.uniform(lo, hi + 1, size=n) if hi > lo else np.full(n, m)
    elif dist.distribution == "normal":
        x = rng.normal(m, dist.std_ratio * m, size=n)
    else:  # lognormal with the requested mean and coefficient of variation
        sigma2 = np.log1p(dist.std_ratio ** 2)
        x = rng.lognormal(np.log(m) - sigma2 / 2, np.sqrt(sigma2), size=n)
    hi = dist.max if dist.max is not None else np.inf
    return np.clip(np.floor(x), dist.min, hi).astype(np.int64)


def zipf_weights(k: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** s
    return w / w.sum()


def build_jobs(workload, n: int, builder: TextBuilder, seed: int, salt: int = 0) -> list[Job]:
    """n jobs (requests, or sessions for multi_turn) for this workload."""
    structure = np.random.default_rng([seed, 1])
    content = np.random.default_rng([seed, 2, salt])
    if isinstance(workload, (RandomWorkload, LongInputWorkload, LongOutputWorkload)):
        return _random_jobs(workload, n, builder, structure, content)
    if isinstance(workload, SharedPrefixWorkload):
        return _shared_prefix_jobs(workload, n, builder, structure, content)
    if isinstance(workload, MultiTurnWorkload):
        return _multi_turn_jobs(workload, n, builder, structure, content, seed)
    raise TypeError(f"unknown workload {type(workload).__name__}")


def _random_jobs(w: RandomWorkload, n, builder, structure, content) -> list[Job]:
    ins = np.maximum(draw_lengths(w.input_len, n, structure), builder.special_overhead + 1)
    outs = draw_lengths(w.output_len, n, structure)
    return [Job(i, [Turn(max_tokens=int(o), prompt=builder.text(int(L), content), expected_input_tokens=int(L))])
            for i, (L, o) in enumerate(zip(ins, outs))]


def group_sequence(w: SharedPrefixWorkload, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(group, question) per request. Uniform with n == pool size: each prompt once,
    shuffled. Otherwise groups are drawn (uniform or Zipf) and each group cycles
    through its questions, so a prompt repeats only after its group's pool is used."""
    g, q = w.num_groups, w.prompts_per_group
    if w.group_popularity == "uniform" and n == g * q:
        return [(int(k) // q, int(k) % q) for k in rng.permutation(g * q)]
    if w.group_popularity == "zipf":
        p = zipf_weights(g, w.zipf_exponent)
    elif w.group_popularity == "hotspot" and g > 1:
        p = np.full(g, (1.0 - w.hotspot_fraction) / (g - 1))
        p[0] = w.hotspot_fraction
    else:
        p = np.full(g, 1.0 / g)
    groups = rng.choice(g, size=n, p=p)
    used = [0] * g
    seq = []
    for grp in groups:
        seq.append((int(grp), used[grp] % q))
        used[grp] += 1
    return seq


def _shared_prefix_jobs(w: SharedPrefixWorkload, n, builder, structure, content) -> list[Job]:
    systems = [builder.text(w.system_prompt_len, content) for _ in range(w.num_groups)]
    total = w.system_prompt_len + w.question_len
    prompts = [[builder.text(total, content, prefix=s) for _ in range(w.prompts_per_group)] for s in systems]
    jobs = []
    for i, (g, q) in enumerate(group_sequence(w, n, structure)):
        turn = Turn(max_tokens=w.output_len, prompt=prompts[g][q], expected_input_tokens=total)
        jobs.append(Job(i, [turn], group=g, meta={"question": q}))
    return jobs


def popularity(kind: str, k: int, zipf_exponent: float, hotspot_fraction: float) -> np.ndarray:
    """Probability of each of ``k`` items: uniform, Zipf, or one hot item taking ``hotspot_fraction``."""
    if kind == "zipf":
        return zipf_weights(k, zipf_exponent)
    if kind == "hotspot" and k > 1:
        p = np.full(k, (1.0 - hotspot_fraction) / (k - 1))
        p[0] = hotspot_fraction
        return p
    return np.full(k, 1.0 / k)


def session_prompts(w: MultiTurnWorkload, n: int, rng: np.random.Generator) -> list[int]:
    """The shared system prompt of each of ``n`` sessions (``num_system_prompts`` set)."""
    k = w.num_system_prompts
    p = popularity(w.system_prompt_popularity, k, w.zipf_exponent, w.hotspot_fraction)
    return [int(g) for g in rng.choice(k, size=n, p=p)]


def _multi_turn_jobs(w: MultiTurnWorkload, n, builder, structure, content, seed) -> list[Job]:
    jobs = []
    shared = w.num_system_prompts is not None
    if shared:  # multi-round QA: sessions share system prompts of uneven popularity
        groups = session_prompts(w, n, structure)
        systems = [builder.content(w.system_prompt_length(k), content) for k in range(w.num_system_prompts)]
    for i in range(n):
        t = w.turns_per_session
        qlens = draw_lengths(w.question_len, t, structure)
        olens = draw_lengths(w.output_len, t, structure)
        if w.think_time_distribution == "fixed":
            think = np.full(t, w.think_time_s)
        else:
            think = structure.exponential(w.think_time_s, size=t) if w.think_time_s > 0 else np.zeros(t)
        if shared:
            system = systems[groups[i]]
        else:
            system = builder.content(w.system_prompt_len, content) if w.system_prompt_len else None
        turns = [Turn(max_tokens=int(o), user_content=builder.content(int(q), content), think_after_s=float(th))
                 for q, o, th in zip(qlens, olens, think)]
        turns[-1].think_after_s = 0.0
        jobs.append(Job(i, turns, group=groups[i] if shared else None, session_id=f"s{seed}-{i:05d}",
                        system_prompt=system))
    return jobs


def warmup_jobs(workload, count: int, builder: TextBuilder, seed: int) -> list[Job]:
    """Short distinct prompts (never overlapping the measured ones' content) to
    check the endpoint and warm the server before measuring."""
    rng = np.random.default_rng([seed, 99])
    is_chat = isinstance(workload, MultiTurnWorkload)
    jobs = []
    for i in range(count):
        if is_chat:
            jobs.append(Job(i, [Turn(max_tokens=4, user_content=builder.content(16, rng))], session_id=f"warmup-{i}"))
        else:
            jobs.append(Job(i, [Turn(max_tokens=4, prompt=builder.text(16, rng), expected_input_tokens=16)]))
    return jobs
