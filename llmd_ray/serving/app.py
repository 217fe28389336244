"""App builders: ``build_app(args) -> Application``, used by Serve YAML
(``import_path: llmd_ray:build_app``), by RayService, and from Python."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from llmd_ray.engine.config import EngineConfig
from llmd_ray.tiers.config import KVTiersConfig
from llmd_ray.routing.config import parse_config
from llmd_ray.serving.ingress import IngressConfig, OpenAIIngress
from llmd_ray.serving.qos import QoSConfig
from llmd_ray.serving.kv_index import KVIndex
from llmd_ray.serving.server import LLMServer
from llmd_ray.serving.variants import VariantArgs, deployment_name, resolve_variants


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
        "shared tier in the Ray object store (llmd_ray.tiers.server); None: off.",
    )
    variants: list[VariantArgs] | None = Field(
        default=None, min_length=1,
        description="Variants of the model (engine overrides, replica bounds, hardware), each its own deployment "
        "`LLMServer-<name>` that the ingress dispatches over and the variant autoscaler sizes; list the cheapest "
        "first (ties go to it). None: one `LLMServer` deployment of `num_replicas`.",
    )

    @model_validator(mode="after")
    def _check_variants(self) -> "AppArgs":
        if self.variants is not None:
            if "num_replicas" in self.model_fields_set:
                raise ValueError("num_replicas: with variants, set variants[].num_replicas or variants[].autoscaling")
            resolve_variants(self.engine, self.variants)  # names unique, engines valid (errors name the field)
        return self


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
    """Build the aggregated OpenAI app: ingress -> N LLMServer replicas, or -> one deployment per variant."""
    a = AppArgs.model_validate(args or {})
    precise = a.router.uses_precise_index()
    engine = a.engine.model_copy(update={"kv_events": True}) if precise else a.engine
    server_cls = LLMServer
    if a.kv_tiers is not None:  # KV tiers (issue 9)
        from llmd_ray.tiers.server import TieredLLMServer as server_cls
    ingress = OpenAIIngress.options(num_replicas=a.ingress_replicas)
    kv_index = (
        serve.deployment(KVIndex).options(name=KV_INDEX_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0}).bind()
        if precise else None
    )
    server_args: tuple = ()
    if a.kv_tiers is not None:
        server_args = (a.kv_tiers.model_dump(), shared_kv_store(a.kv_tiers, kv_index))
    common = (engine.model_dump(), a.ingress.model_dump(), a.qos.model_dump())
    if a.variants is None:
        return ingress.bind(_server(server_cls, a).bind(engine.model_dump(), kv_index, *server_args), *common)
    llms = {v.name: _server(server_cls, a, v).bind(eng.model_dump(), kv_index, *server_args)
            for v, eng in zip(a.variants, resolve_variants(engine, a.variants))}
    return ingress.bind(llms, *common, {"accelerators": {v.name: v.accelerator for v in a.variants}})


def _server(cls: type, a: AppArgs, v: VariantArgs | None = None):
    """The app's one ``LLMServer`` deployment, or variant ``v``'s ``LLMServer-<name>`` with its overrides."""

    def pick(field: str, default: Any) -> Any:
        value = None if v is None else getattr(v, field)
        return default if value is None else value

    actor: dict[str, Any] = {"num_cpus": pick("replica_num_cpus", a.replica_num_cpus),
                             "num_gpus": pick("replica_num_gpus", a.replica_num_gpus)}
    if v is not None and v.resources:
        actor["resources"] = dict(v.resources)
    if v is None:
        scale: dict[str, Any] = {"num_replicas": a.num_replicas}
    elif v.autoscaling is not None:
        scale = {"autoscaling_config": v.autoscaling.serve_config()}
    else:
        scale = {"num_replicas": v.num_replicas}
    return engine_deployment(cls, "LLMServer" if v is None else deployment_name(v.name), scale,
                             pick("max_ongoing_requests", a.max_ongoing_requests), actor, a.router)


def engine_deployment(cls: type, name: str, scale: dict[str, Any], max_ongoing_requests: int,
                      actor: dict[str, Any], router: RouterArgs):
    """A deployment of engine replicas (LLMServer, a variant, PrefillServer, DecodeServer): the options they share.

    ``scale`` is ``{"num_replicas": n}`` or ``{"autoscaling_config": ...}``. The health check allows an engine
    step of up to 30 s; a replica being stopped gets 20 s to finish its streams.
    """
    return serve.deployment(cls).options(
        name=name,
        **scale,
        max_ongoing_requests=max_ongoing_requests,
        ray_actor_options=actor,
        health_check_period_s=10,
        health_check_timeout_s=30,
        graceful_shutdown_timeout_s=20,
        request_router_config=request_router_config(router),
    )


SHARED_KV_STORE_DEPLOYMENT = "SharedKVStore"


def shared_kv_store(tiers: KVTiersConfig, kv_index: Any):
    """The shared KV tier's long-lived owner of object-store blocks (issue 9); None when off."""
    if not tiers.shared:
        return None
    from llmd_ray.tiers.shared_store import SharedKVStore

    return serve.deployment(SharedKVStore).options(
        name=SHARED_KV_STORE_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000,
    ).bind(tiers.shared_bytes, kv_index)
