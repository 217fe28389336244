"""Features of the one engine replica (``LLMServer``): what makes a replica more than an engine.

A replica's behaviour is its engine plus a list of features, each owning its own state:
``KVEvents`` (``serving/kv_events.py``: vLLM KV events for the precise prefix index), ``KVTiers``
(``tiers/feature.py``: the local and shared KV tiers), ``PrefillRole`` and ``DecodeRole``
(``pd/roles.py``: P/D). ``ReplicaFeatures`` says which a replica has; ``build_app`` derives it from
the variant (role) and the app's args (``kv_tiers``, the router's precise index).

The contract, called by ``LLMServer`` in this order:

* ``engine_args()`` -- before the engine starts: the vLLM engine args the feature needs. Several
  features' ``kv_transfer_config`` are chained into one (``merge_engine_args``).
* ``await started(replica)`` -- the engine is up (``replica.engine``): start tasks, register, size state.
* ``wrap(replica, request, inner)`` -- around every ``generate``: an async iterator of chunks that may
  change the request (e.g. set ``kv_transfer_params``), act before the first chunk and after the last,
  and must yield what ``inner(request)`` yields. Features wrap in list order (the first is outermost).
* ``info()`` / ``stats()`` -- extra fields of the replica's ``model_info()`` / ``stats()``.
* ``await reset()`` -- after the engine's prefix cache was reset (drop what mirrors it).
* ``release()`` -- at shutdown; never raises.

A feature may also expose handle methods; ``LLMServer`` forwards ``prefill``, ``pd_stats`` and
``tier_stats`` to the feature that has them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmd_ray.engine.types import GenerateChunk, GenerateRequest
from llmd_ray.pd.config import PDConfig
from llmd_ray.tiers.config import KVTiersConfig

Inner = Callable[[GenerateRequest], AsyncIterator[GenerateChunk]]


class ReplicaFeatures(BaseModel):
    """Which features an engine replica has (built by ``build_app``; a plain dict over Serve)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["aggregated", "prefill", "decode"] = Field(default="aggregated", description="The variant's "
                                                             "role: prefill and decode add P/D's role features.")
    pd: PDConfig | None = Field(default=None, description="P/D transport, decider and timeout (roles prefill and decode).")
    tiers: KVTiersConfig | None = Field(default=None, description="The KV tiers; None: off.")


class Feature:
    """Base of the replica's features: every hook is a no-op (see the module docstring for the contract)."""

    name = "feature"

    def engine_args(self) -> dict[str, Any]:
        return {}

    async def started(self, replica: Any) -> None:
        return None

    def wrap(self, replica: Any, request: GenerateRequest, inner: Inner) -> AsyncIterator[GenerateChunk]:
        return inner(request)

    def info(self) -> dict[str, Any]:
        return {}

    def stats(self) -> dict[str, Any]:
        return {}

    async def reset(self) -> None:
        return None

    def release(self) -> None:
        return None


def merge_engine_args(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One engine-args dict; two ``kv_transfer_config`` (P/D's and the tiers') are chained in vLLM's
    ``MultiConnector``, the first given first."""
    from llmd_ray.tiers.config import with_pd

    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key == "kv_transfer_config" and key in out:
                out[key] = with_pd(out[key], value)
            elif key in out and out[key] != value:
                raise ValueError(f"two replica features set the engine arg {key!r} differently")
            else:
                out[key] = value
    return out
