"""``ShmConnectorStats``: the P/D connector's transfer counters, as vLLM's ``KVConnectorStats``.

The worker counts each step's blocks (exported, loaded, failed to load and so recomputed) and hands them to vLLM
(``get_kv_connector_stats``), which carries them to the scheduler's stats; the replica's ``Engine`` sums them into
``EngineStats.kv_connector``. So a load that failed and was silently recomputed (``kv_load_failure_policy =
recompute``, same tokens, only slower) shows, and so does a handoff that was never loaded at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats

FIELDS = ("exported_blocks", "loaded_blocks", "load_failed_blocks")


@dataclass
class ShmConnectorStats(KVConnectorStats):
    """``data``: field -> one count per worker step that moved blocks."""

    def __post_init__(self):
        if not self.data:
            self.reset()

    def reset(self) -> None:
        self.data = {k: [] for k in FIELDS}

    def add(self, key: str, n: int) -> None:
        self.data.setdefault(key, []).append(int(n))

    def aggregate(self, other: KVConnectorStats) -> ShmConnectorStats:
        for k, v in (other.data or {}).items():
            self.data.setdefault(k, []).extend(v)
        return self

    def reduce(self) -> dict[str, int | float]:
        return {k: sum(v) for k, v in self.data.items()}

    def is_empty(self) -> bool:
        return not any(self.data.values())

    def take(self) -> ShmConnectorStats | None:
        """This step's counts (None when nothing moved), and a fresh start."""
        if self.is_empty():
            return None
        out = ShmConnectorStats(data=self.data)
        self.reset()
        return out

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> ShmConnectorStats:
        return cls(data={k: list(v) for k, v in (data or {}).items()})
