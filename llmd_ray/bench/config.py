"""The benchmark's input: a workload file (YAML) validated with pydantic.

One `BenchConfig` describes everything needed to reproduce a run: which
prompts (workload + seed), how they arrive (load), what counts as good
(SLOs), and what a replica costs. The CLI builds the same model from flags,
so a file and a command line are interchangeable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class LengthDist(_Strict):
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


class RandomWorkload(_Strict):
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


class SharedPrefixWorkload(_Strict):
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


class MultiTurnWorkload(_Strict):
    """Chat sessions whose history grows turn by turn (sent to /v1/chat/completions)."""

    type: Literal["multi_turn"] = "multi_turn"
    num_sessions: int = Field(8, ge=1, description="Sessions (load.rate is new sessions per second).")
    turns_per_session: int = Field(4, ge=1, description="User turns per session.")
    system_prompt_len: int = Field(0, ge=0, description="Tokens of a per-session system message (0: none).")
    question_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=64), description="User message length per turn (content tokens).")
    output_len: LengthDist = Field(default_factory=lambda: LengthDist(mean=64), description="max_tokens per turn.")
    think_time_s: float = Field(1.0, ge=0.0, description="Mean pause after a turn's answer before the next user turn.")
    think_time_distribution: Literal["fixed", "exponential"] = Field("exponential", description="Distribution of think time.")


Workload = Annotated[
    Union[RandomWorkload, LongInputWorkload, LongOutputWorkload, SharedPrefixWorkload, MultiTurnWorkload],
    Field(discriminator="type"),
]
WORKLOAD_TYPES = ("random", "long_input", "long_output", "shared_prefix", "multi_turn")


class Stage(_Strict):
    rate: float = Field(gt=0.0, description="Arrival rate during the stage (req/s, or sessions/s for multi_turn).")
    duration_s: float = Field(gt=0.0, description="Stage length in seconds.")


class LoadSpec(_Strict):
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


class SLO(_Strict):
    ttft_ms: float | None = Field(None, gt=0.0, description="A good request has TTFT <= this.")
    tpot_ms: float | None = Field(None, gt=0.0, description="A good request has TPOT <= this.")


class Cost(_Strict):
    per_hour: float = Field(ge=0.0, description="Price of one replica per hour (any currency, reported as $).")
    replicas: int = Field(1, ge=1, description="Replicas serving the endpoint.")


class BenchConfig(_Strict):
    name: str = Field("bench", description="Label for the run (used in plots and file names).")
    seed: int = Field(0, description="Seeds prompts, lengths, groups and arrival times: same seed, same run.")
    model: str = Field("tiny-llama", description="Model name sent in requests.")
    tokenizer: str | None = Field(None, description="Local tokenizer dir (default: the tiny model dir for tiny-llama).")
    workload: Workload = Field(default_factory=RandomWorkload, description="What to send.")
    load: LoadSpec = Field(default_factory=LoadSpec, description="When to send it.")
    slo: SLO = Field(default_factory=SLO, description="Goodput thresholds.")
    cost: Cost | None = Field(None, description="Optional replica pricing for cost per million tokens.")
    ignore_eos: bool = Field(True, description="Send ignore_eos so every request generates exactly its max_tokens.")
    temperature: float | None = Field(None, ge=0.0, description="Sampling temperature (default: server's).")
    extra_body: dict = Field(default_factory=dict, description="Extra JSON fields merged into every request body.")
    timeout_s: float = Field(600.0, gt=0.0, description="Per-request timeout.")
    metrics_url: str | None = Field(None, description="Prometheus text endpoint to poll during the run.")
    metrics_interval_s: float = Field(1.0, gt=0.0, description="Polling period for metrics_url.")
    warmup_requests: int = Field(1, ge=0, description="Unrecorded requests (distinct prompts) sent before measuring.")


class ConfigError(ValueError):
    """A config problem, with the offending field named in the message."""


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid benchmark config ({source}):"]
    for e in err.errors():
        parts = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
        if len(parts) > 2 and parts[0] == "workload" and parts[1] in WORKLOAD_TYPES:
            del parts[1]  # the discriminator tag pydantic inserts
        loc = ".".join(parts)
        lines.append(f"  field '{loc}': {e['msg']}" + (f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""))
    return "\n".join(lines)


def validate_config(data: dict, source: str = "<dict>") -> BenchConfig:
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config_file(path: str | Path) -> dict:
    """Read a workload YAML into a plain dict (validated later, after CLI overrides)."""
    text = Path(path).read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid benchmark config ({path}): top level must be a mapping")
    return data
