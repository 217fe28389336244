"""What a run sends and when: workload shapes, arrival processes, and the run spec both use.

Shared by the benchmark harness (``llmd_ray.bench``, which sends the jobs to a
server) and the simulator (``llmd_ray.sim``, which replays them at token
level): the same seed gives the same lengths, groups and arrival times in both.
Pure pydantic; no Ray, no tokenizer.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """Unknown keys rejected; inf/nan serialised as strings."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class LengthDist(StrictModel):
    """A token length: fixed, or drawn per request around `mean`."""

    mean: int = Field(ge=1, description="Target (mean) length in tokens.")
    distribution: Literal["fixed", "uniform", "normal", "lognormal"] = Field(
        "fixed", description="fixed: always `mean`; uniform: in [mean*(1-range_ratio), "
        "mean*(1+range_ratio)] like vllm bench --random-range-ratio; normal/lognormal: "
        "mean `mean`, standard deviation `std_ratio*mean`.")
    range_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Half-width of the uniform range as a fraction of mean.")
    std_ratio: float = Field(0.25, ge=0.0, description="Standard deviation as a fraction of mean (normal, lognormal).")
    min: int = Field(1, ge=1, description="Lower clip for drawn lengths.")
    max: int | None = Field(None, ge=1, description="Upper clip for drawn lengths (default: no clip).")


class RandomWorkload(StrictModel):
    type: Literal["random"] = "random"
    num_requests: int = Field(100, ge=1, description="Requests to send (ignored when load.stages/duration_s set).")
    input_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=512), description="Prompt length (tokens as the server counts them).")
    output_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=128), description="max_tokens per request.")


class LongInputWorkload(RandomWorkload):
    """RAG-like: long retrieved context, short answer (about 20:1)."""

    type: Literal["long_input"] = "long_input"
    input_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=2000, distribution="uniform", range_ratio=0.1),
                                  description="Prompt length; default 2000 tokens +-10%.")
    output_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=100), description="Answer length; default 100.")


class LongOutputWorkload(RandomWorkload):
    """Reasoning-like: short question, long generated chain of thought."""

    type: Literal["long_output"] = "long_output"
    input_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=128), description="Prompt length; default 128.")
    output_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=1024), description="Generated length; default 1024.")


class SharedPrefixWorkload(StrictModel):
    """inference-perf's shared_prefix: groups of prompts sharing a system prompt."""

    type: Literal["shared_prefix"] = "shared_prefix"
    num_groups: int = Field(4, ge=1, description="Distinct system prompts (prefix groups).")
    prompts_per_group: int = Field(4, ge=1, description="Distinct questions per group.")
    system_prompt_len: int = Field(1000, ge=1, description="Shared prefix length in tokens (includes BOS if the tokenizer adds one).")
    question_len: int = Field(100, ge=1, description="Per-prompt question length in tokens, after the prefix.")
    output_len: int = Field(32, ge=1, description="max_tokens per request.")
    num_requests: int | None = Field(None, ge=1, description="Requests to send; default num_groups*prompts_per_group (each prompt once).")
    group_popularity: Literal["uniform", "zipf", "hotspot"] = Field("uniform", description="How requests pick a group.")
    zipf_exponent: float = Field(1.1, gt=0.0, description="Zipf exponent s: P(group k) ~ 1/k^s (zipf popularity only).")
    hotspot_fraction: float = Field(
        0.7, gt=0.0, lt=1.0, description="hotspot popularity: share of requests for group 0; the rest uniform over the others."
    )


class MultiTurnWorkload(StrictModel):
    """Chat sessions whose history grows turn by turn (sent to /v1/chat/completions)."""

    type: Literal["multi_turn"] = "multi_turn"
    num_sessions: int = Field(8, ge=1, description="Sessions (load.rate is new sessions per second).")
    turns_per_session: int = Field(4, ge=1, description="User turns per session.")
    system_prompt_len: int = Field(0, ge=0, description="Tokens of a per-session system message (0: none).")
    question_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=64), description="User message length per turn (content tokens).")
    output_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=64), description="max_tokens per turn.")
    think_time_s: float = Field(1.0, ge=0.0, description="Mean pause after a turn's answer before the next user turn.")
    think_time_distribution: Literal["fixed", "exponential"] = Field("exponential", description="Distribution of think time.")
    num_system_prompts: int | None = Field(
        None, ge=1, description="Shared system prompts the sessions draw from (multi-round QA); None: one of its own "
        "per session (when system_prompt_len > 0).")
    system_prompt_popularity: Literal["uniform", "zipf", "hotspot"] = Field(
        "uniform", description="How a session picks its shared system prompt (num_system_prompts set).")
    zipf_exponent: float = Field(1.1, gt=0.0, description="Zipf exponent s: P(prompt k) ~ 1/k^s (zipf popularity).")
    hotspot_fraction: float = Field(
        0.7, gt=0.0, lt=1.0, description="hotspot popularity: share of sessions on prompt 0; the rest uniform.")
    system_prompt_lens: list[int] | None = Field(
        None, min_length=1, description="A mix of prefix lengths: shared prompt k has system_prompt_lens[k % len] "
        "tokens (num_system_prompts set); None: all system_prompt_len.")

    @model_validator(mode="after")
    def _check_shared(self) -> MultiTurnWorkload:
        if self.num_system_prompts is not None and not self.system_prompt_len and not self.system_prompt_lens:
            raise ValueError("num_system_prompts needs system_prompt_len > 0 or system_prompt_lens")
        if self.system_prompt_lens is not None and (self.num_system_prompts is None or min(self.system_prompt_lens) < 1):
            raise ValueError("system_prompt_lens needs num_system_prompts and lengths >= 1")
        return self

    def system_prompt_length(self, k: int) -> int:
        """Tokens of shared system prompt ``k``."""
        lens = self.system_prompt_lens
        return lens[k % len(lens)] if lens else self.system_prompt_len


Workload = Annotated[
    Union[RandomWorkload, LongInputWorkload, LongOutputWorkload, SharedPrefixWorkload, MultiTurnWorkload],
    Field(discriminator="type"),
]
WORKLOAD_TYPES = ("random", "long_input", "long_output", "shared_prefix", "multi_turn")


class Stage(StrictModel):
    rate: float = Field(gt=0.0, description="Arrival rate during the stage (req/s, or sessions/s for multi_turn).")
    duration_s: float = Field(gt=0.0, description="Stage length in seconds.")


class LoadSpec(StrictModel):
    process: Literal["constant", "poisson", "gamma"] = Field("poisson", description="Arrival process between requests.")
    rate: float = Field(math.inf, gt=0.0, description="Arrivals per second; inf sends everything at t=0 (bounded by max_concurrency).")
    rates: list[float] | None = Field(None, description="Sweep: one full run per rate (overrides rate).")
    burstiness: float = Field(1.0, gt=0.0, description="Gamma shape k (gamma process): <1 burstier, >1 smoother; 1 = Poisson.")
    max_concurrency: int | None = Field(None, ge=1, description="Cap on in-flight requests; arrivals wait for a slot.")
    stages: list[Stage] | None = Field(None, description="Piecewise-constant rate (ramps): each stage runs its rate for its duration.")
    duration_s: float | None = Field(None, gt=0.0, description="Run for this long at `rate` instead of a fixed request count.")

    @model_validator(mode="after")
    def _check(self) -> LoadSpec:
        if self.stages and self.rates:
            raise ValueError("set either stages or rates, not both")
        if self.duration_s and math.isinf(self.rate) and not self.rates:
            raise ValueError("duration_s needs a finite rate")
        if self.rates is not None and (not self.rates or any(r <= 0 for r in self.rates)):
            raise ValueError("rates must be a non-empty list of positive numbers")
        return self


class RunSpec(StrictModel):
    """The part of a benchmark config that decides what is sent and when (what a simulator replays)."""

    seed: int = Field(0, description="Seeds prompts, lengths, groups and arrival times: same seed, same run.")
    workload: Workload = Field(default_factory=RandomWorkload, description="What to send.")
    load: LoadSpec = Field(default_factory=LoadSpec, description="When to send it.")

    @classmethod
    def of(cls, config: Any) -> RunSpec:
        """From a ``RunSpec``, any model with ``seed``/``workload``/``load`` (a ``BenchConfig``), or a dict
        (a whole benchmark config: only those three keys are read)."""
        if isinstance(config, RunSpec):
            return config
        if isinstance(config, dict):
            return cls.model_validate({k: config[k] for k in cls.model_fields if k in config})
        return cls(seed=config.seed, workload=config.workload, load=config.load)


def default_count(workload: Workload) -> int:
    """Jobs a fixed-count run sends (requests, or sessions for multi_turn)."""
    if isinstance(workload, SharedPrefixWorkload):
        return workload.num_requests or workload.num_groups * workload.prompts_per_group
    if isinstance(workload, MultiTurnWorkload):
        return workload.num_sessions
    return workload.num_requests
