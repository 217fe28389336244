"""When to split a request into remote prefill + local decode.

Two deciders, chosen by ``DeciderConfig.policy``:

``prefix`` (llm-d's)
    Split only when the prompt tokens the decode replica does not already
    cache reach ``min_uncached_tokens``; below that, decode prefills locally.
``cost`` (a TTFT model)
    Predict the time to first token both ways and take the lower::

        local  = (decode_queue + uncached) / decode_tps
        remote = max((prefill_queue + uncached) / prefill_tps + overhead + moved_bytes / bandwidth,
                     decode_queue / decode_tps)                # the decode queue drains meanwhile
                 + tail / decode_tps

    ``tail`` is what decode still computes after a handoff (the block holding
    the last prompt token). Throughputs, bandwidth and the fixed overhead are
    seeded from the config and then tracked from measurements
    (:class:`Estimates`, an exponentially weighted moving average).

``always`` and ``never`` exist for benchmarks. Every decision carries a
short ``reason`` that the serving layer counts in metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmd_ray.kv.plan import transferable_blocks

Policy = Literal["prefix", "cost", "always", "never"]


class DeciderConfig(BaseModel):
    """When to prefill remotely (the ``pd.decider`` block of a serve config)."""

    model_config = ConfigDict(extra="forbid")

    policy: Policy = Field(default="prefix", description="`prefix`, `cost`, `always` (benchmarks) or `never` (decode prefills everything).")
    min_uncached_tokens: int = Field(
        default=512, ge=1, description="prefix: split only when at least this many prompt tokens are not cached on the decode replica."
    )
    prefill_tokens_per_s: float = Field(
        default=2000.0, gt=0, description="cost: initial prefill throughput of a prefill replica (tokens/s); then measured."
    )
    decode_prefill_tokens_per_s: float = Field(
        default=2000.0, gt=0, description="cost: initial prefill throughput of the decode replica itself (tokens/s); then measured."
    )
    transfer_bytes_per_s: float = Field(
        default=1.0e9, gt=0, description="cost: initial KV handoff bandwidth (bytes/s); then measured."
    )
    transfer_overhead_s: float = Field(
        default=0.01, ge=0, description="cost: initial fixed cost of a remote prefill round trip (s); then measured."
    )
    ewma_alpha: float = Field(default=0.2, gt=0, le=1, description="cost: weight of each new measurement.")


@dataclass(slots=True)
class SplitInputs:
    """What the decode replica knows when a request arrives."""

    num_prompt_tokens: int
    block_size: int
    decode_cached_tokens: int = 0  # estimated local prefix hit
    decode_queue_tokens: int = 0  # prompt tokens this replica still has to prefill locally
    prefill_queue_tokens: int = 0  # prompt tokens this replica has in flight at prefill replicas
    kv_bytes_per_token: int = 0

    @property
    def cached_blocks(self) -> int:
        return self.decode_cached_tokens // self.block_size

    @property
    def moved_blocks(self) -> int:
        return max(0, transferable_blocks(self.num_prompt_tokens, self.block_size) - self.cached_blocks)

    @property
    def uncached_tokens(self) -> int:
        return max(0, self.num_prompt_tokens - self.decode_cached_tokens)


@dataclass(slots=True)
class Decision:
    split: bool
    reason: str
    skip_blocks: int = 0  # blocks the prefill side need not export (cached on decode)
    local_ttft_s: float | None = None
    remote_ttft_s: float | None = None


@dataclass(slots=True)
class Estimates:
    """Measured throughputs (EWMA), seeded from the config."""

    prefill_tps: float
    decode_tps: float
    bandwidth: float
    overhead_s: float
    alpha: float = 0.2

    @classmethod
    def from_config(cls, c: DeciderConfig) -> Estimates:
        return cls(c.prefill_tokens_per_s, c.decode_prefill_tokens_per_s, c.transfer_bytes_per_s, c.transfer_overhead_s, c.ewma_alpha)

    def _mix(self, old: float, new: float) -> float:
        return (1 - self.alpha) * old + self.alpha * new

    def observe_remote_prefill(self, tokens: int, seconds: float) -> None:
        if tokens > 0 and seconds > 0:
            self.prefill_tps = self._mix(self.prefill_tps, tokens / seconds)

    def observe_local_prefill(self, tokens: int, seconds: float) -> None:
        if tokens > 0 and seconds > 0:
            self.decode_tps = self._mix(self.decode_tps, tokens / seconds)

    def observe_transfer(self, nbytes: int, seconds: float, overhead_s: float | None = None) -> None:
        if nbytes > 0 and seconds > 0:
            self.bandwidth = self._mix(self.bandwidth, nbytes / seconds)
        if overhead_s is not None and overhead_s >= 0:
            self.overhead_s = self._mix(self.overhead_s, overhead_s)


def decide(config: DeciderConfig, inputs: SplitInputs, estimates: Estimates | None = None) -> Decision:
    """Split or not, and why."""
    skip = inputs.cached_blocks
    if config.policy == "never":
        return Decision(False, "policy_never")
    if inputs.moved_blocks == 0:
        return Decision(False, "nothing_to_transfer")
    if config.policy == "always":
        return Decision(True, "policy_always", skip)
    if config.policy == "prefix":
        if inputs.uncached_tokens >= config.min_uncached_tokens:
            return Decision(True, "uncached_above_threshold", skip)
        return Decision(False, "uncached_below_threshold")
    est = estimates or Estimates.from_config(config)
    local, remote = predict_ttft(inputs, est)
    if remote < local:
        return Decision(True, "remote_faster", skip, local, remote)
    return Decision(False, "local_faster", 0, local, remote)


def predict_ttft(inputs: SplitInputs, est: Estimates) -> tuple[float, float]:
    """(local, remote) predicted time to first token, in seconds."""
    uncached = inputs.uncached_tokens
    local = (inputs.decode_queue_tokens + uncached) / est.decode_tps
    moved_tokens = inputs.moved_blocks * inputs.block_size
    tail = max(1, inputs.num_prompt_tokens - (inputs.cached_blocks * inputs.block_size + moved_tokens))
    handoff = (
        (inputs.prefill_queue_tokens + uncached) / est.prefill_tps
        + est.overhead_s
        + moved_tokens * inputs.kv_bytes_per_token / est.bandwidth
    )
    remote = max(handoff, inputs.decode_queue_tokens / est.decode_tps) + tail / est.decode_tps
    return local, remote
