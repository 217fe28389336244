"""The host around the engines: per-request cost outside the engine, and engines slowing each other down.

The engine model (replica.py) is an engine alone on its device. A real
deployment adds, per request, a fixed cost outside the engine (client, HTTP
ingress, Serve proxy -> router -> replica hops, tokenisation, the first chunk
streamed back), and, when engines share a host's cores with each other and with
Serve's Python processes, a slowdown of every engine step that grows with the
work in flight on the host. ``HostProfile`` holds both, fitted (never hand-set)
from recorded runs by ``fit_host`` (``python -m llmd_ray.sim calibrate``):

    TTFT (client)  = overhead_ms + engine TTFT
    engine step    = profile step x (1 + contention x others)

where ``others`` is the number of *other* requests in flight on the same host
(on this replica or another one) when the step starts. The profile's own batch
terms (beta, gamma) are 0 in a calibrated profile, so ``contention`` carries
both the batch cost and the cross-engine, cross-process share of the cores.
Two coefficients: ``decode_contention`` (fitted on TPOT) and
``prefill_contention`` (fitted on cold-request TTFT).

Fitting, over the requests of the calibration runs (client records only):
  * the isolated requests (overlapping no other) give the engine profile
    (prefill per token, batch-1 ITL) and ``overhead_ms`` = TTFT intercept -
    one engine step (``calibrate.fit_isolated``);
  * every other request gives ``m`` = the time-averaged number of other
    requests in flight over its decode phase (resp. its TTFT), and
    ``TPOT / ITL_1 - 1 = decode_contention x m`` (resp. ``(TTFT - overhead) /
    engine TTFT alone - 1 = prefill_contention x m``); the coefficient is the
    median of the per-request slopes (robust to queueing outliers).
A per-output-token streaming cost is not identifiable from client records
(client TPOT = engine step + streaming): it is inside the fitted ITL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmd_ray.autoscaling.perf import Profile
from llmd_ray.sim.calibrate import IsolatedFit, fit_isolated, isolated_requests


class HostProfile(BaseModel):
    """A fitted host model plus the engine fit it was made with (as stored in JSON)."""

    model_config = ConfigDict(extra="forbid")

    overhead_ms: float = Field(ge=0, description="Fixed per-request time outside the engine, added to TTFT (and E2E).")
    decode_contention: float = Field(ge=0, description="Decode step slowdown per other request in flight on the host.")
    prefill_contention: float = Field(ge=0, description="Prefill step slowdown per other request in flight on the host.")
    itl_ms: float = Field(gt=0, description="Engine decode step alone (batch 1), from isolated requests.")
    prefill_intercept_ms: float = Field(ge=0, description="Isolated-request TTFT at 0 uncached tokens.")
    prefill_ms_per_1k: float = Field(gt=0, description="Isolated-request TTFT per 1000 uncached tokens.")
    isolated_requests: int = Field(ge=0, description="Isolated requests the engine fit used.")
    overlapped_requests: int = Field(ge=0, description="Overlapped requests the contention fit used.")
    runs: list[str] = Field(default_factory=list, description="The calibration run directories.")
    hardware: str = Field("", description="Where the runs were recorded (free text).")

    def engine_profile(self, base: Profile) -> Profile:
        """``base`` with the fitted engine: batch-1 ITL per step (beta = gamma = 0), fitted prefill slope."""
        return replace(base, name=f"{base.name}+host-calibrated", source="estimated",
                       citation="fitted from recorded runs (llmd_ray.sim.host.fit_host)",
                       itl_alpha_ms=self.itl_ms, itl_beta_ms=0.0, itl_gamma_ms=0.0,
                       prefill_delta_ms=self.itl_ms, prefill_epsilon_ms=self.prefill_ms_per_1k)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> HostProfile:
        return cls.model_validate(json.loads(Path(path).read_text()))


@dataclass(slots=True)
class HostState:
    """The replicas sharing one host in a simulation; replica.py asks it for a step's slowdown."""

    decode_contention: float
    prefill_contention: float
    replicas: list = field(default_factory=list)

    def step_factor(self, replica, prefill: bool) -> float:
        others = sum(r.in_flight for r in self.replicas) - 1  # the other requests in flight on the host
        c = self.prefill_contention if prefill else self.decode_contention
        return 1.0 + c * max(0, others)


def attach(replicas: list, host: HostProfile) -> HostState:
    """Put ``replicas`` on one host modelled by ``host``."""
    state = HostState(host.decode_contention, host.prefill_contention, list(replicas))
    for r in replicas:
        r.host = state
    return state


def _others_in_flight(spans: np.ndarray, i: int, a: float, b: float) -> float:
    """Time-averaged number of the spans other than ``i`` that overlap [a, b]."""
    if b <= a:
        return 0.0
    lo = np.maximum(spans[:, 0], a)
    hi = np.minimum(spans[:, 1], b)
    overlap = np.clip(hi - lo, 0.0, None)
    overlap[i] = 0.0
    return float(overlap.sum() / (b - a))


def contention_samples(records: list[dict], fit: IsolatedFit, overhead_ms: float) -> tuple[list[float], list[float]]:
    """Per overlapped request of one run, the slowdown per other request in flight: (decode, prefill) lists."""
    rows = [r for r in records if r.get("ok") and r.get("ttft_ms") is not None and r.get("e2e_ms") is not None]
    if not rows:
        return [], []
    iso = {id(r) for r in isolated_requests(rows)}
    spans = np.array([(r["sent_s"], r["sent_s"] + r["e2e_ms"] / 1000.0) for r in rows])
    dec, pre = [], []
    for i, r in enumerate(rows):
        if id(r) in iso:
            continue
        first = r["sent_s"] + r["ttft_ms"] / 1000.0
        if r.get("tpot_ms") is not None and r.get("output_tokens", 0) > 1:
            m = _others_in_flight(spans, i, first, spans[i, 1])
            if m > 0:
                dec.append((r["tpot_ms"] / fit.itl_ms - 1.0) / m)
        uncached = r["input_tokens"] - (r.get("cached_tokens") or 0)
        if uncached > r["input_tokens"] / 2:  # cold: the prefill dominates the TTFT
            alone = fit.itl_ms + fit.prefill_ms_per_1k * uncached / 1000.0
            m = _others_in_flight(spans, i, r["sent_s"], first)
            if m > 0:
                pre.append(((r["ttft_ms"] - overhead_ms) / alone - 1.0) / m)
    return dec, pre


def fit_host(runs: dict[str, list[dict]], hardware: str = "") -> HostProfile:
    """Fit a ``HostProfile`` from recorded runs ({run name: requests.jsonl rows}); each run is one host."""
    fit = fit_isolated(list(runs.values()))
    if fit is None:
        raise ValueError("the calibration runs need isolated requests of at least 2 uncached lengths")
    overhead = max(0.0, fit.prefill_intercept_ms - fit.itl_ms)
    dec, pre = [], []
    for records in runs.values():
        d, p = contention_samples(records, fit, overhead)
        dec += d
        pre += p
    return HostProfile(overhead_ms=overhead, decode_contention=max(0.0, median(dec)) if dec else 0.0,
                       prefill_contention=max(0.0, median(pre)) if pre else 0.0, itl_ms=fit.itl_ms,
                       prefill_intercept_ms=fit.prefill_intercept_ms, prefill_ms_per_1k=fit.prefill_ms_per_1k,
                       isolated_requests=fit.requests, overlapped_requests=len(dec), runs=sorted(runs),
                       hardware=hardware)


def load_run_records(run_dir: str | Path) -> list[dict]:
    """The requests.jsonl rows of a recorded benchmark run directory."""
    d = Path(run_dir)
    name = "requests.jsonl"
    if (d / "result.json").exists():
        name = json.loads((d / "result.json").read_text()).get("requests_file", name)
    return [json.loads(x) for x in (d / name).read_text().splitlines() if x.strip()]
