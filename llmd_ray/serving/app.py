"""The app builder: ``build_app(args) -> Application``, used by Serve YAML (``import_path: llmd_ray:build_app``),
by RayService, and from Python. One builder for every topology: aggregated (one ``LLMServer`` deployment, or
aggregated variants), P/D (prefill and decode variants) and mixed (both), all from ``AppArgs.variants``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from llmd_ray.engine.config import EngineConfig
from llmd_ray.pd.config import PDConfig
from llmd_ray.routing.config import parse_config
from llmd_ray.serving.ingress import IngressConfig, OpenAIIngress
from llmd_ray.serving.kv_index import KVIndex
from llmd_ray.serving.feature import ReplicaFeatures
from llmd_ray.serving.server import LLMServer
from llmd_ray.tiers.config import KVTiersConfig
from llmd_ray.topology import QoSConfig, Variant, entry_variants, pd_groups, resolve_engines
from llmd_ray.topology.carry import carried
from llmd_ray.topology.variant import reject_moved_keys


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


_MOVED = {
    "prefill": "P/D is variants with roles: write `variants: [{name: prefill, role: prefill, ...}, "
               "{name: decode, role: decode, ...}]` and the transport and decider under `pd:`",
    "decode": "P/D is variants with roles: write `variants: [{name: prefill, role: prefill, ...}, "
              "{name: decode, role: decode, ...}]` and the transport and decider under `pd:`",
}


class AppArgs(BaseModel):
    """Arguments of the app (the ``args:`` block of a Serve config): aggregated, P/D or mixed."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = Field(default_factory=EngineConfig, description="The vLLM engine of each replica "
                                 "(variants merge their `engine` overrides over it).")
    num_replicas: int = Field(default=2, ge=1, description="Without variants: replicas of the one `LLMServer` "
                              "deployment (one engine each).")
    replica_num_cpus: float = Field(
        default=1.0, ge=0, description="Ray CPUs reserved per engine replica (its engine's cores)."
    )
    replica_num_gpus: float = Field(default=0.0, ge=0, description="Ray GPUs reserved per engine replica.")
    max_ongoing_requests: int = Field(default=256, ge=1, description="In-flight requests per engine replica.")
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="OpenAI ingress limits.")
    ingress_replicas: int = Field(default=1, ge=1, description="OpenAI ingress replicas.")
    router: RouterArgs = Field(default_factory=RouterArgs, description="Request routing to engine replicas.")
    qos: QoSConfig = Field(
        default_factory=QoSConfig,
        description="QoS classes (priority, TTFT/ITL objectives in seconds, sheddability) and how requests select "
        "them; read by the ingress's flow control, the router and the variant autoscaler (the one source).",
    )
    kv_tiers: KVTiersConfig | None = Field(
        default=None,
        description="KV cache tiers beyond each engine's own cache: a local host-memory pool with disk spill, and a "
        "shared tier in the Ray object store (llmd_ray.tiers); None: off. Aggregated variants only.",
    )
    pd: PDConfig = Field(default_factory=PDConfig, description="P/D (variants with roles prefill and decode): KV "
                         "transport, split decider, prefill timeout.")
    variants: list[Variant] | None = Field(
        default=None, min_length=1,
        description="The topology: each variant (role, hardware, engine overrides, replica bounds, price, profile, "
        "pods) is its own deployment `LLMServer-<name>`; the ingress dispatches over the aggregated and decode "
        "variants, decode variants prefill remotely on their group's prefill variant, and the variant autoscaler "
        "sizes the autoscaled ones. List the cheapest first (ties go to it). None: one `LLMServer` deployment "
        "of `num_replicas`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return reject_moved_keys(data, _MOVED, "an app field")

    @model_validator(mode="after")
    def _check_variants(self) -> "AppArgs":
        if self.variants is None:
            if "pd" in self.model_fields_set:
                raise ValueError("pd: P/D needs variants with roles prefill and decode")
            return self
        if "num_replicas" in self.model_fields_set:
            raise ValueError("num_replicas: with variants, set each variant's num_replicas or min/max_replicas")
        groups = pd_groups(self.variants)  # names unique; every decode group has its prefill variant
        if groups and self.kv_tiers is not None:
            raise ValueError("kv_tiers: KV tiers run on aggregated variants; this topology has P/D variants")
        resolve_engines(self.engine, self.variants)  # engines valid (errors name the field)
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
    """Build the OpenAI app: ingress -> one ``LLMServer`` deployment, or -> one deployment per variant (P/D:
    ingress -> decode variants -> their group's prefill variant)."""
    a = AppArgs.model_validate(args or {})
    precise = a.router.uses_precise_index()
    engine = a.engine.model_copy(update={"kv_events": True}) if precise else a.engine
    ingress = OpenAIIngress.options(num_replicas=a.ingress_replicas)
    kv_index = (
        serve.deployment(KVIndex).options(name=KV_INDEX_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0}).bind()
        if precise else None
    )
    common = (engine.model_dump(), a.ingress.model_dump(), a.qos.model_dump())
    store = shared_kv_store(a.kv_tiers, kv_index) if a.kv_tiers is not None else None
    tiers = a.kv_tiers.model_dump() if a.kv_tiers is not None else None
    if a.variants is None:
        features = ReplicaFeatures(tiers=tiers).model_dump()
        return ingress.bind(_deployment(a).bind(engine.model_dump(), kv_index, features, store=store), *common)
    engines = dict(zip((v.name for v in a.variants), resolve_engines(engine, a.variants)))
    offsets = _rank_offsets(a.variants)
    groups = pd_groups(a.variants)
    bound: dict[str, Any] = {}
    for v in sorted(a.variants, key=lambda v: v.role != "prefill"):  # a decode variant binds its prefill's handle
        features = ReplicaFeatures(role=v.role, pd=a.pd if v.role != "aggregated" else None,
                                   tiers=tiers if v.role == "aggregated" else None).model_dump()
        prefill = bound[groups[v.pd_group].prefill] if v.role == "decode" else None
        bound[v.name] = _deployment(a, v).bind(engines[v.name].model_dump(), kv_index, features, store=store,
                                               prefill=prefill, rank_offset=offsets[v.name])
    entry = {v.name: bound[v.name] for v in entry_variants(a.variants)}
    return ingress.bind(entry, *common, {"accelerators": {v.name: v.accelerator for v in a.variants}})


def _rank_offsets(variants: list[Variant]) -> dict[str, int]:
    """Each variant's first replica rank for core pinning: the earlier variants' most replicas come first."""
    out, n = {}, 0
    for v in variants:
        out[v.name] = n
        n += v.max_replicas
    return out


def _deployment(a: AppArgs, v: Variant | None = None):
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
    elif v.autoscaled:  # the variant autoscaler reads the variant and the classes from here (topology.carry)
        scale = {"autoscaling_config": v.serve_autoscaling_config(carried(v, a.qos))}
    else:
        scale = {"num_replicas": v.num_replicas}
    return engine_deployment(LLMServer, "LLMServer" if v is None else v.deployment_name, scale,
                             pick("max_ongoing_requests", a.max_ongoing_requests), actor, a.router)


def engine_deployment(cls: type, name: str, scale: dict[str, Any], max_ongoing_requests: int,
                      actor: dict[str, Any], router: RouterArgs):
    """A deployment of engine replicas (LLMServer, or a variant of any role): the options they share.

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
