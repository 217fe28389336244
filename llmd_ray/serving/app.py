"""App builders: ``build_app(args) -> Application``, used by Serve YAML
(``import_path: llmd_ray:build_app``), by RayService, and from Python."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from llmd_ray.engine.config import EngineConfig
from llmd_ray.kv.tier_config import KVTiersConfig
from llmd_ray.routing.config import parse_config
from llmd_ray.serving.ingress import IngressConfig, OpenAIIngress
from llmd_ray.serving.qos import QoSConfig
from llmd_ray.serving.kv_index import KVIndex
from llmd_ray.serving.server import LLMServer


KV_INDEX_DEPLOYMENT = "KVIndex"


class RouterArgs(BaseModel):
    """How requests are routed to LLMServer replicas."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["llmd", "pow2"] = Field(
        default="llmd",
        description="`llmd`: the prefix-cache- and load-aware plugin router; `pow2`: Ray Serve's default power-of-two router.",
    )
    config: dict[str, Any] | str | None = Field(
        default=None,
        description="EndpointPickerConfig (plugins + schedulingProfiles) as a mapping or YAML text; None: the default profile.",
    )
    stats_period_s: float = Field(
        default=0.5, gt=0, description="How often replicas' record_routing_stats is polled for routers."
    )
    block_size: int | None = Field(default=None, ge=1, description="KV block size; the replicas' reported size if unset.")
    precise_index: bool | None = Field(
        default=None,
        description="Run the KVIndex deployment (vLLM KV events) and mirror it in routers; None: on when the config uses `precise-prefix-cache` or `matchSource: precise`. Turns on `engine.kv_events`.",
    )
    kv_index_sync_s: float = Field(default=0.2, gt=0, description="How often routers pull KV-index deltas.")
    kv_index_speculative_ttl_s: float = Field(
        default=5.0, ge=0,
        description="With the precise index: a routed request's blocks count as held by its replica for this long, "
        "until the engine's KV events (sent after prefill) confirm them; 0 turns it off.",
    )

    def uses_precise_index(self) -> bool:
        if self.policy != "llmd":
            return False
        if self.precise_index is not None:
            return self.precise_index
        return any(
            spec.type == "precise-prefix-cache" or (spec.parameters or {}).get("matchSource") == "precise"
            for spec in parse_config(self.config).plugins
        )


class AppArgs(BaseModel):
    """Arguments of the aggregated app (the ``args:`` block of a Serve config)."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = Field(default_factory=EngineConfig, description="The vLLM engine of each replica.")
    num_replicas: int = Field(default=2, ge=1, description="LLMServer replicas (one engine each).")
    replica_num_cpus: float = Field(
        default=1.0, ge=0, description="Ray CPUs reserved per LLMServer replica (its engine's cores)."
    )
    replica_num_gpus: float = Field(default=0.0, ge=0, description="Ray GPUs reserved per replica.")
    max_ongoing_requests: int = Field(default=256, ge=1, description="In-flight requests per replica.")
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="OpenAI ingress limits.")
    ingress_replicas: int = Field(default=1, ge=1, description="OpenAI ingress replicas.")
    router: RouterArgs = Field(default_factory=RouterArgs, description="Request routing to LLMServer replicas.")
    qos: QoSConfig = Field(
        default_factory=QoSConfig,
        description="QoS classes (priority, TTFT/ITL objectives, sheddability) and how requests select them; "
        "read by the ingress's flow control, and the one source for the router and the autoscaler.",
    )
    kv_tiers: KVTiersConfig | None = Field(
        default=None,
        description="KV cache tiers beyond each engine's own cache: a local host-memory pool with disk spill, and a "
        "shared tier in the Ray object store (llmd_ray.kv.tiered_server); None: off.",
    )


def request_router_config(router: RouterArgs) -> RequestRouterConfig:
    """Serve's RequestRouterConfig for the chosen policy (validates the plugin config eagerly)."""
    if router.policy == "pow2":
        return RequestRouterConfig(request_routing_stats_period_s=router.stats_period_s)
    from llmd_ray.routing.scheduler import Scheduler

    Scheduler.from_config(router.config)  # a bad plugin config fails here, naming plugin and field
    return RequestRouterConfig(
        request_router_class="llmd_ray.routing.router:LLMDRequestRouter",
        request_router_kwargs={
            "config": router.config, "block_size": router.block_size,
            "kv_index": KV_INDEX_DEPLOYMENT if router.uses_precise_index() else None,
            "kv_index_sync_s": router.kv_index_sync_s,
            "speculative_ttl_s": router.kv_index_speculative_ttl_s,
        },
        request_routing_stats_period_s=router.stats_period_s,
    )


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Application:
    """Build the aggregated OpenAI app: ingress -> N LLMServer replicas."""
    a = AppArgs.model_validate(args or {})
    precise = a.router.uses_precise_index()
    engine = a.engine.model_copy(update={"kv_events": True}) if precise else a.engine
    server_cls = LLMServer
    if a.kv_tiers is not None:  # KV tiers (issue 9)
        from llmd_ray.kv.tiered_server import TieredLLMServer as server_cls
    server = serve.deployment(server_cls).options(
        name="LLMServer",
        num_replicas=a.num_replicas,
        max_ongoing_requests=a.max_ongoing_requests,
        ray_actor_options={"num_cpus": a.replica_num_cpus, "num_gpus": a.replica_num_gpus},
        health_check_period_s=10,
        health_check_timeout_s=30,
        graceful_shutdown_timeout_s=20,
        request_router_config=request_router_config(a.router),
    )
    ingress = OpenAIIngress.options(num_replicas=a.ingress_replicas)
    kv_index = (
        serve.deployment(KVIndex).options(name=KV_INDEX_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0}).bind()
        if precise else None
    )
    server_args: tuple = ()
    if a.kv_tiers is not None:
        server_args = (a.kv_tiers.model_dump(), shared_kv_store(a.kv_tiers, kv_index))
    return ingress.bind(
        server.bind(engine.model_dump(), kv_index, *server_args),
        engine.model_dump(),
        a.ingress.model_dump(),
        a.qos.model_dump(),
    )


SHARED_KV_STORE_DEPLOYMENT = "SharedKVStore"


def shared_kv_store(tiers: KVTiersConfig, kv_index: Any):
    """The shared KV tier's long-lived owner of object-store blocks (issue 9); None when off."""
    if not tiers.shared:
        return None
    from llmd_ray.kv.shared_store import SharedKVStore

    return serve.deployment(SharedKVStore).options(
        name=SHARED_KV_STORE_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000,
    ).bind(tiers.shared_bytes, kv_index)
