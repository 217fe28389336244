"""``LLMServer``: the one engine-replica deployment, its behaviour composed from features.

Every engine replica of every topology is an ``LLMServer``: an aggregated replica, a P/D prefill or
decode replica, a replica with KV tiers or KV events. It pins its engine to cores derived from its
rank, records the demand the variant autoscaler reads, publishes engine stats to routers
(``record_routing_stats``) and policies (``record_autoscaling_stats``), exports vLLM-named metrics,
and fails its health check when the engine process dies so that Serve replaces it. What else it
does comes from its features (``llmd_ray.serving.feature``).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from llmd_ray.autoscaling.demand import DemandRecorder
from llmd_ray.engine.config import EngineConfig
from llmd_ray.engine.engine import Engine
from llmd_ray.engine.types import GenerateChunk, GenerateRequest
from llmd_ray.serving.feature import Feature, ReplicaFeatures, merge_engine_args
from llmd_ray.serving.metrics import EngineMetrics
from llmd_ray.serving.replica import EngineReplica, offset_rank, replica_context

logger = logging.getLogger("ray.serve")  # Serve captures this logger into replica logs


def _process_started() -> float | None:
    """When this process started (wall clock), or None where psutil cannot tell."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        return None


def build_features(replica_id: str, rank: int | None, config: EngineConfig, spec: ReplicaFeatures, *,
                   kv_index: Any = None, store: Any = None, prefill: Any = None) -> list[Feature]:
    """The replica's features, outermost first: the P/D role, then the KV tiers, then KV events."""
    features: list[Feature] = []
    if spec.role != "aggregated":
        from llmd_ray.engine.engine import _platform_is_gpu

        device = config.resolved_device(_platform_is_gpu())
    if spec.role == "decode":
        from llmd_ray.pd.roles import DecodeRole

        if prefill is None:
            raise ValueError("a decode replica needs its group's prefill deployment")
        features.append(DecodeRole(config.name, spec.pd, prefill, replica_id, device))
    elif spec.role == "prefill":
        from llmd_ray.pd.roles import PrefillRole

        features.append(PrefillRole(spec.pd, replica_id, device))
    if spec.tiers is not None:
        from llmd_ray.tiers.feature import KVTiers

        features.append(KVTiers(config, spec.tiers, store, replica_id, rank))
    if config.kv_events:
        from llmd_ray.serving.kv_events import KVEvents

        features.append(KVEvents(replica_id, kv_index))
    return features


class LLMServer(EngineReplica):
    """One engine per replica. Methods are called through a DeploymentHandle."""

    async def __init__(self, engine_config: EngineConfig | dict, kv_index: Any = None,
                       features: ReplicaFeatures | dict | None = None, *, store: Any = None, prefill: Any = None,
                       rank_offset: int = 0):
        self._startup_marks = {"process_started": _process_started(), "init_entered": time.time()}
        self.config = EngineConfig.model_validate(engine_config)
        self.spec = ReplicaFeatures.model_validate(features or {})
        self.rank = offset_rank(replica_context()[0], rank_offset)
        self.metrics = EngineMetrics(self.config.name, (self.config.max_loras or 1) if self.config.enable_lora else None)
        # The demand the variant autoscaler plans for is counted where every request passes: aggregated and
        # decode replicas (a prefill replica sees only the split ones and reports its load alone).
        self.demand = DemandRecorder() if self.spec.role != "prefill" else None
        self.features = build_features(self.replica_id, self.rank, self.config, self.spec, kv_index=kv_index,
                                       store=store, prefill=prefill)
        parts = [f.engine_args() for f in self.features]
        own = self.config.engine_kwargs.get("kv_transfer_config")
        if own and any("kv_transfer_config" in p for p in parts):  # the engine's own connector first, chained
            parts.insert(0, {"kv_transfer_config": own})
        extra = merge_engine_args(parts)
        self.engine = await Engine.start(self.config, replica_rank=self.rank, observers=[self.metrics.observe],
                                         extra_engine_args=extra or None)
        self._startup_marks["engine_started"] = time.time()
        for f in self.features:
            await f.started(self)
        self._startup_marks["ready"] = time.time()
        logger.info("LLMServer ready: %s", self.model_info())

    def startup_profile(self) -> dict:
        """Where this replica's start went: wall-clock marks (process started, ``__init__`` entered, engine
        started, ready) and the engine's phases in seconds (``Engine.startup_phases``)."""
        return {"marks": dict(self._startup_marks), "phases": dict(getattr(self.engine, "startup_phases", {})),
                "pid": os.getpid(), "rank": self.rank}

    @functools.cached_property
    def replica_id(self) -> str:
        """This Serve replica's unique id."""
        return replica_context()[1]

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        """Stream output deltas (one final chunk when ``request.stream`` is false), through the features.

        Cancelling the call (client disconnect) aborts the engine request.
        """
        bucket = None
        if self.demand is not None:
            bucket = self.demand.on_arrival(len(request.prompt_token_ids), request.sampling.max_tokens)
        first = True
        async for chunk in self._through(0, request):
            if first and bucket is not None:
                self.demand.on_cached(bucket, chunk.cached_tokens)
            first = False
            chunk.replica = self.replica_id
            yield chunk

    def _through(self, i: int, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        """Feature ``i`` and those after it around the engine's stream."""
        if i == len(self.features):
            return self.engine.generate(request)
        return self.features[i].wrap(self, request, lambda r: self._through(i + 1, r))

    # ------------------------------------------------- what features expose
    def _feature(self, method: str) -> Any:
        for f in self.features:
            if hasattr(f, method):
                return getattr(f, method)
        raise AttributeError(f"this replica ({self.spec.role}) has no feature with {method}()")

    async def prefill(self, request: Any) -> Any:
        """P/D prefill role: compute the prompt's KV and hand it to the caller (``pd.roles.PrefillRole``)."""
        return await self._feature("prefill")(self, request)

    def pd_stats(self) -> dict:
        """P/D: decode role: decisions, handoffs, fallbacks, estimates; prefill role: the request ids it is prefilling."""
        return {**self._feature("pd_stats")(), "rank": self.rank}

    def tier_stats(self) -> dict:
        """KV tiers: connector and shared-tier counters (``tiers.feature.KVTiers``)."""
        return {**self._feature("tier_stats")(), "rank": self.rank}

    async def reset_prefix_cache(self) -> None:
        await self.engine.reset_prefix_cache()
        for f in self.features:
            await f.reset()

    def info_extra(self) -> dict:
        out: dict[str, Any] = {"role": self.spec.role, "features": [f.name for f in self.features]}
        for f in self.features:
            out.update(f.info())
        return out

    def stats_extra(self) -> dict:
        out: dict[str, Any] = {"role": self.spec.role} if self.spec.role != "aggregated" else {}
        for f in self.features:
            out.update(f.stats())
        return out

    def release(self) -> None:
        for f in getattr(self, "features", []):
            try:
                f.release()
            except Exception:
                pass
