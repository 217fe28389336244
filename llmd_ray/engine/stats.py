"""Engine stats: the snapshot routing and autoscaling read, kept up to date
from vLLM's per-step scheduler stats.

``StatsRecorder`` is pure: the vLLM stat-logger adapter in ``engine.py`` feeds
it plain numbers, and tests feed it directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace


@dataclass(slots=True)
class EngineStats:
    """What one engine reports: load, KV usage and prefix-cache counters."""

    num_waiting: int = 0
    num_running: int = 0
    kv_cache_usage: float = 0.0  # fraction of KV blocks in use, [0, 1]
    prefix_cache_queries: int = 0  # tokens looked up in the prefix cache, cumulative
    prefix_cache_hits: int = 0  # of which found, cumulative
    prompt_tokens: int = 0  # cumulative
    generation_tokens: int = 0  # cumulative
    finished_requests: int = 0  # cumulative, any finish reason
    aborted_requests: int = 0  # cumulative: by the caller (disconnect) or by the engine
    preemptions: int = 0  # cumulative
    block_size: int = 0
    num_blocks: int = 0
    # LoRA (engines with enable_lora): the adapters in the engine's slots (LoraSlots), least recently used
    # first, the number of slots, and the loads so far (cumulative).
    lora_adapters: tuple[str, ...] = ()
    max_loras: int = 0
    lora_loads: int = 0
    # The KV connector's transfer counters, cumulative: each of vLLM's per-step KVConnectorStats series summed
    # (NIXL: bytes_transferred, num_failed_transfers, ...; ShmConnector: loaded_blocks, load_failed_blocks, ...),
    # keyed "<field>" or, under a MultiConnector, "<connector>.<field>".
    kv_connector: dict[str, float] = field(default_factory=dict)
    updated_at: float = field(default_factory=time.time)

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["prefix_cache_hit_rate"] = self.prefix_cache_hit_rate
        return d


class StatsRecorder:
    """Accumulates per-step figures into an :class:`EngineStats`."""

    def __init__(self, block_size: int = 0, num_blocks: int = 0):
        self.stats = EngineStats(block_size=block_size, num_blocks=num_blocks)

    def record_scheduler(
        self,
        *,
        num_waiting: int,
        num_running: int,
        kv_cache_usage: float,
        prefix_queries: int,
        prefix_hits: int,
        now: float | None = None,
    ) -> None:
        s = self.stats
        s.num_waiting = num_waiting
        s.num_running = num_running
        s.kv_cache_usage = min(max(kv_cache_usage, 0.0), 1.0)
        s.prefix_cache_queries += prefix_queries
        s.prefix_cache_hits += prefix_hits
        s.updated_at = time.time() if now is None else now

    def record_iteration(
        self, *, prompt_tokens: int, generation_tokens: int, preemptions: int, finish_reasons: list[str]
    ) -> None:
        s = self.stats
        s.prompt_tokens += prompt_tokens
        s.generation_tokens += generation_tokens
        s.preemptions += preemptions
        s.finished_requests += len(finish_reasons)
        s.aborted_requests += sum(1 for r in finish_reasons if r == "abort")

    def record_connector(self, data: dict | None) -> None:
        """Add one step's KV connector stats (``SchedulerStats.kv_connector_stats``, series of numbers)."""
        totals = self.stats.kv_connector
        for key, value in connector_sums(data or {}).items():
            totals[key] = totals.get(key, 0) + value

    def record_lora(self, slots: "LoraSlots", running: Iterable[str]) -> int:
        """One engine step ran ``running`` adapters: update ``slots`` and the stats; returns the loads."""
        loads = slots.step(running)
        s = self.stats
        s.lora_adapters, s.max_loras, s.lora_loads = tuple(slots.order), slots.capacity, slots.loads
        return loads

    def record_abort(self) -> None:
        """A request abandoned by its caller (disconnect, cancel) was aborted."""
        self.stats.aborted_requests += 1

    def snapshot(self) -> EngineStats:
        return replace(self.stats, kv_connector=dict(self.stats.kv_connector))


def connector_sums(data: dict, prefix: str = "") -> dict[str, float]:
    """Each numeric series (or number) of a KV connector stats payload, summed; nested payloads (a
    MultiConnector's, one per connector) flattened as ``<connector>.<field>``. Anything else is ignored."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(connector_sums(value, name + "."))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)):
            out[name] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            out[name] = sum(value)
    return out


@dataclass(slots=True)
class LoraSlots:
    """vLLM's LoRA slots as the engine's steps reveal them.

    Each step vLLM activates the adapters of its batch (``SchedulerStats.running_lora_adapters``) into
    ``max_loras`` slots, evicting the least recently used; an adapter not in a slot is loaded (from its
    host-memory cache or from disk). This replays that LRU over the running adapters of each step, so
    ``loads`` counts the adapter loads the engine made (vLLM does not report them itself).
    """

    capacity: int
    order: list[str] = field(default_factory=list)  # least recently used first
    loads: int = 0

    def step(self, running: Iterable[str]) -> int:
        new = 0
        for adapter in sorted(running):
            if adapter in self.order:
                self.order.remove(adapter)
            else:
                new += 1
            self.order.append(adapter)
        if len(self.order) > self.capacity:
            del self.order[:len(self.order) - self.capacity]
        self.loads += new
        return new
