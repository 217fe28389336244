"""The benchmark's input: a workload file (YAML) validated with pydantic.

One `BenchConfig` describes everything needed to reproduce a run: which
prompts (workload + seed), how they arrive (load), what counts as good
(SLOs), and what a replica costs. The CLI builds the same model from flags,
so a file and a command line are interchangeable. The workload and load
models live in ``llmd_ray.workloads.spec`` (the simulator replays the same
ones); this module adds what only the harness needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from llmd_ray.workloads.spec import WORKLOAD_TYPES, LoadSpec, RandomWorkload, StrictModel, Workload


class SLO(StrictModel):
    ttft_ms: float | None = Field(None, gt=0.0, description="A good request has TTFT <= this.")
    tpot_ms: float | None = Field(None, gt=0.0, description="A good request has TPOT <= this.")


class Cost(StrictModel):
    per_hour: float = Field(ge=0.0, description="Price of one replica per hour (any currency, reported as $).")
    replicas: int = Field(1, ge=1, description="Replicas serving the endpoint.")


class BenchConfig(StrictModel):
    name: str = Field("bench", description="Label for the run (used in plots and file names).")
    seed: int = Field(0, description="Seeds prompts, lengths, groups and arrival times: same seed, same run.")
    model: str = Field("tiny-llama", description="Model name sent in requests.")
    models: list[str] | None = Field(None, min_length=1, description=(
        "Names each request draws its `model` from (several models, or LoRA adapters), seeded by `seed`; "
        "None: `model` for every request (which still names the tokenizer)."))
    model_popularity: Literal["uniform", "zipf"] = Field(
        "uniform", description="How requests draw from `models`: uniformly, or P(k) ~ 1/k^s.")
    model_zipf_exponent: float = Field(1.0, gt=0.0, description="s of the zipf model popularity.")
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
