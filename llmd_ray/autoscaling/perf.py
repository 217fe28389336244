"""Performance profiles: how fast one replica of a variant prefills and decodes.

A profile is a fitted step-time model, in the spirit of llm-d's original
variant autoscaler (ITL = alpha + beta * batch), extended with context length
and prefill:

    decode step (ms)  = alpha + beta * batch + gamma * batch * context / 1000
    prefill step (ms) = delta + epsilon * prefill_tokens / 1000

``points`` keeps the raw measurements the fit came from. ``source`` says where
the numbers come from: ``measured`` (``python -m llmd_ray.autoscaling.profile``
on that hardware), ``published`` (taken from a cited benchmark) or
``estimated`` (derived, e.g. a roofline from a datasheet; see ``citation``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

PROFILE_DIR = Path(__file__).parent / "profiles"


class ProfileModel(BaseModel):
    """A profile as stored in JSON."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(description="Profile name (the file stem by convention).")
    model: str = Field(description="The model served.")
    accelerator: str = Field(description="Accelerator type, e.g. H100, L4, cpu-1core.")
    source: Literal["measured", "published", "estimated"] = Field(description="Where the numbers come from.")
    citation: str = Field("", description="For published/estimated: the source and how the numbers were derived.")
    itl_alpha_ms: float = Field(ge=0, description="Decode step time at batch 0 (fixed cost per step).")
    itl_beta_ms: float = Field(ge=0, description="Added decode step time per sequence in the batch.")
    itl_gamma_ms: float = Field(0.0, ge=0, description="Added step time per sequence per 1000 context tokens.")
    prefill_delta_ms: float = Field(ge=0, description="Prefill step fixed cost.")
    prefill_epsilon_ms: float = Field(gt=0, description="Prefill time per 1000 prompt tokens.")
    max_num_seqs: int = Field(ge=1, description="Engine batch limit.")
    max_num_batched_tokens: int = Field(ge=1, description="Engine token budget per step (prefill chunk).")
    kv_cache_tokens: int = Field(ge=1, description="KV cache capacity in tokens.")
    block_size: int = Field(16, ge=1, description="KV block size.")
    startup_s: float = Field(60.0, ge=0, description="Time from replica start to serving.")
    points: dict = Field(default_factory=dict, description="Raw measurements: decode [[batch, ctx, itl_ms]], prefill [[tokens, ms]].")
    measured_at: str | None = Field(None, description="When and where it was measured.")


@dataclass(slots=True)
class Profile:
    name: str
    model: str
    accelerator: str
    source: str
    itl_alpha_ms: float
    itl_beta_ms: float
    itl_gamma_ms: float
    prefill_delta_ms: float
    prefill_epsilon_ms: float
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_tokens: int
    block_size: int = 16
    startup_s: float = 60.0
    citation: str = ""
    points: dict = field(default_factory=dict)

    @classmethod
    def from_model(cls, m: ProfileModel) -> Profile:
        return cls(m.name, m.model, m.accelerator, m.source, m.itl_alpha_ms, m.itl_beta_ms, m.itl_gamma_ms,
                   m.prefill_delta_ms, m.prefill_epsilon_ms, m.max_num_seqs, m.max_num_batched_tokens,
                   m.kv_cache_tokens, m.block_size, m.startup_s, m.citation, m.points)

    def itl_ms(self, batch, context=0.0):
        """Decode step time (ms) for ``batch`` sequences of mean ``context`` tokens (numpy-friendly)."""
        return self.itl_alpha_ms + batch * (self.itl_beta_ms + self.itl_gamma_ms * context / 1000.0)

    def prefill_ms(self, tokens):
        """Time (ms) of one prefill step of ``tokens`` tokens."""
        return self.prefill_delta_ms + self.prefill_epsilon_ms * tokens / 1000.0

    def prefill_tokens_per_s(self, tokens):
        return tokens / (self.prefill_ms(tokens) / 1000.0)

    def step_ms(self, decode_batch: int, context: float, prefill_tokens: int) -> float:
        """One mixed engine step: decodes plus a prefill chunk (the fixed cost is paid once)."""
        t = self.itl_ms(decode_batch, context)
        if prefill_tokens:
            t += self.prefill_epsilon_ms * prefill_tokens / 1000.0 + max(0.0, self.prefill_delta_ms - self.itl_alpha_ms)
        return t


def load_profile(name_or_path: str) -> Profile:
    """A shipped profile by name (``profiles/<name>.json``) or a JSON file path."""
    p = Path(name_or_path)
    if p.suffix != ".json":
        p = PROFILE_DIR / f"{name_or_path}.json"
    if not p.exists():
        known = ", ".join(sorted(x.stem for x in PROFILE_DIR.glob("*.json")))
        raise FileNotFoundError(f"profile {name_or_path!r} not found (shipped: {known})")
    return Profile.from_model(ProfileModel.model_validate(json.loads(p.read_text())))


def save_profile(model: ProfileModel, path: str | Path) -> None:
    Path(path).write_text(json.dumps(model.model_dump(), indent=1) + "\n")


def fit_decode(points: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Least-squares (alpha, beta, gamma) >= 0 from (batch, context, itl_ms) points."""
    a = np.array(points, dtype=float)
    b, ctx, y = a[:, 0], a[:, 1], a[:, 2]
    cols = [np.ones_like(b), b, b * ctx / 1000.0]
    if np.ptp(ctx) == 0:  # one context length: gamma is not identifiable
        cols = cols[:2]
    coef = _nnls(np.stack(cols, axis=1), y)
    return float(coef[0]), float(coef[1]), float(coef[2]) if len(coef) > 2 else 0.0


def fit_prefill(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (delta, epsilon per 1000 tokens) >= 0 from (tokens, ms) points."""
    a = np.array(points, dtype=float)
    coef = _nnls(np.stack([np.ones(len(a)), a[:, 0] / 1000.0], axis=1), a[:, 1])
    return float(coef[0]), float(coef[1])


def _nnls(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    return nnls(A, y)[0]
