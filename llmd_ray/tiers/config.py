"""``KVTiersConfig``: the ``kv_tiers:`` block of a serve config (pure pydantic).

Per replica, a host-memory pool (tmpfs) spilling to an optional local disk
pool; cluster-wide, an optional shared tier in the Ray object store owned by
the ``SharedKVStore`` actor. ``connector_config`` renders the vLLM
``KVTransferConfig`` of one engine; ``with_pd`` chains it after the P/D
connector in vLLM's ``MultiConnector``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MiB = 1 << 20
TIERED_CONNECTOR = {"kv_connector": "TieredConnector", "kv_connector_module_path": "llmd_ray.tiers.connector"}
EXTRA_KEY = "llmd_tiers"


class KVTiersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory_bytes: int = Field(
        default=256 * MiB, ge=0,
        description="Local tier: host-memory (tmpfs) pool per replica, bytes; 0 turns the memory pool off.",
    )
    disk_dir: str | None = Field(
        default=None, description="Local tier: directory for the disk spill (one sub-directory per replica rank); None: no disk tier.",
    )
    disk_bytes: int = Field(default=1024 * MiB, ge=0, description="Local tier: disk spill budget per replica, bytes.")
    shared: bool = Field(default=False, description="Run the shared tier: blocks in the Ray object store, owned by the SharedKVStore actor.")
    shared_bytes: int = Field(default=512 * MiB, ge=0, description="Shared tier: object-store budget for the whole cluster, bytes (LRU).")
    shared_store_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Shared tier: custom Ray resources placing the SharedKVStore actor, which owns every shared "
        "block (its node's object store holds them all), e.g. a node with a large object store; empty: anywhere.",
    )
    min_load_blocks: int = Field(
        default=2, ge=1,
        description="Load from the tiers only runs of at least this many blocks (below it, recomputing is cheaper: "
        "measured crossover 2 blocks of 128 tokens for tiny-llama on CPU, bench/results/kv_tiers/crossover.json).",
    )
    async_save: bool = Field(
        default=True, description="Write saved blocks on a background thread (the copy out of the paged cache stays synchronous).",
    )
    shm_root: str | None = Field(
        default=None, description="tmpfs root of the memory pools and staged blocks; default /dev/shm/llmd-kv-tiers.",
    )

    @model_validator(mode="after")
    def _check(self) -> KVTiersConfig:
        if self.memory_bytes == 0 and not self.disk_dir and not self.shared:
            raise ValueError("kv_tiers: every tier is off (memory_bytes=0, no disk_dir, shared=false)")
        if self.shared and self.memory_bytes == 0 and not self.disk_dir:
            raise ValueError("kv_tiers.shared needs a local pool (memory_bytes > 0 or disk_dir): blocks reach the "
                             "object store from it")
        return self

    def connector_config(self, *, model: str, memory_dir: str, staged_dir: str, disk_dir: str | None,
                         stats_dir: str) -> dict[str, Any]:
        """vLLM ``KVTransferConfig`` fields of one engine (its own directories)."""
        extra = {
            "model": model, "memory_dir": memory_dir, "memory_bytes": self.memory_bytes,
            "disk_dir": disk_dir, "disk_bytes": self.disk_bytes, "staged_dir": staged_dir,
            "stats_dir": stats_dir, "min_load_blocks": self.min_load_blocks, "async_save": self.async_save,
        }
        return {**TIERED_CONNECTOR, "kv_role": "kv_both", "kv_load_failure_policy": "recompute",
                "kv_connector_extra_config": {EXTRA_KEY: extra}}


def with_pd(pd_config: dict[str, Any], tiers_config: dict[str, Any]) -> dict[str, Any]:
    """P/D first, tiers second, in vLLM's ``MultiConnector``.

    MultiConnector gives a request to the first connector that offers tokens:
    a P/D import (``llmd_import`` params) wins, otherwise the tiers are asked;
    every connector still sees every request's blocks, so the tiers also save
    what a P/D import loaded.
    """
    strip = lambda c: {k: v for k, v in c.items() if k not in ("kv_load_failure_policy",)}  # noqa: E731
    return {
        "kv_connector": "MultiConnector", "kv_role": "kv_both", "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"connectors": [strip(pd_config), strip(tiers_config)]},
    }
