"""``PDConfig``: how the P/D deployments move KV and decide to split (pure pydantic)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmd_ray.pd.decider import DeciderConfig

Transport = Literal["object_store", "nixl"]
OBJECT_STORE_CONNECTOR = {
    "kv_connector": "ShmConnector",
    "kv_connector_module_path": "llmd_ray.pd.connector",
    "kv_role": "kv_both",
}


class PDConfig(BaseModel):
    """The ``pd:`` block of a P/D serve config."""

    model_config = ConfigDict(extra="forbid")

    transport: Transport = Field(
        default="object_store",
        description="`object_store`: llmd-ray's connector, KV as numpy through Ray's object store, owned by the decode side; `nixl`: vLLM's NixlConnector (GPU to GPU, or CPU buffers).",
    )
    decider: DeciderConfig = Field(default_factory=DeciderConfig, description="When to prefill remotely.")
    prefill_timeout_s: float = Field(
        default=60.0, gt=0, description="A remote prefill (handoff included) slower than this is abandoned; decode prefills locally."
    )
    nixl_buffer_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="nixl: where NIXL registers KV buffers; `auto`: the engine's device."
    )
    shm_dir: str | None = Field(
        default=None, description="object_store: directory for engine<->replica KV buffers; default /dev/shm/llmd-kv."
    )

    def kv_transfer_config(self, device: str, role: Literal["prefill", "decode"]) -> dict[str, Any]:
        """vLLM ``KVTransferConfig`` fields for an engine of ``role`` on ``device`` (`cpu`/`gpu`).

        A load that fails is recomputed (``kv_load_failure_policy``), so a lost
        handoff costs a local prefill, never the request.
        """
        if self.transport == "object_store":  # role-agnostic: what moves is set per request
            return {**OBJECT_STORE_CONNECTOR, "kv_load_failure_policy": "recompute"}
        buffer = self.nixl_buffer_device
        if buffer == "auto":
            buffer = "cpu" if device == "cpu" else "cuda"
        return {
            "kv_connector": "NixlConnector",
            "kv_buffer_device": buffer,
            "kv_role": "kv_producer" if role == "prefill" else "kv_consumer",
            "kv_load_failure_policy": "recompute",
        }
