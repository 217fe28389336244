"""The app builder: ``build_app(args) -> Application``, used by Serve YAML (``import_path: llmd_ray:build_app``),
by RayService, and from Python. One builder for every topology: aggregated (one ``LLMServer`` deployment, or
aggregated variants), P/D (prefill and decode variants) and mixed (both), all from ``AppArgs.variants``; and
several base models in one app (``AppArgs.models``), each its own deployment(s) and router, one front door."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray import serve
from ray.serve import Application

from llmd_ray.engine.config import EngineConfig
from llmd_ray.pd.config import PDConfig
from llmd_ray.serving.ingress import IngressConfig, OpenAIIngress
from llmd_ray.serving.kv_index import KVIndex
from llmd_ray.serving.feature import ReplicaFeatures
from llmd_ray.serving.routing_state import routing_state_deployment
from llmd_ray.serving.router_args import KV_INDEX_DEPLOYMENT, RouterArgs, request_router_config  # noqa: F401 (re-export)
from llmd_ray.serving.server import LLMServer
from llmd_ray.tiers.config import KVTiersConfig
from llmd_ray.topology import QoSConfig, Variant, entry_variants, pd_groups, resolve_engines
from llmd_ray.topology.carry import carried
from llmd_ray.topology.variant import reject_moved_keys


_MOVED = {
    "prefill": "P/D is variants with roles: write `variants: [{name: prefill, role: prefill, ...}, "
               "{name: decode, role: decode, ...}]` and the transport and decider under `pd:`",
    "decode": "P/D is variants with roles: write `variants: [{name: prefill, role: prefill, ...}, "
              "{name: decode, role: decode, ...}]` and the transport and decider under `pd:`",
}


class ModelArgs(BaseModel):
    """One base model of a multi-model app (an entry of ``AppArgs.models``): its own deployment(s) and router."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = Field(description="The model's vLLM engine (`model`: path or name; clients name it by "
                                 "`served_model_name`, else `model`).")
    num_replicas: int = Field(default=1, ge=1, description="Without variants: replicas of its deployment "
                              "`LLMServer-<name>`.")
    variants: list[Variant] | None = Field(
        default=None, min_length=1, description="Its variants, as `AppArgs.variants` (their names unique in the app).")
    replica_num_cpus: float | None = Field(default=None, ge=0, description="None: the app's `replica_num_cpus`.")
    replica_num_gpus: float | None = Field(default=None, ge=0, description="None: the app's `replica_num_gpus`.")
    max_ongoing_requests: int | None = Field(default=None, ge=1, description="None: the app's.")
    router: RouterArgs | None = Field(default=None, description="Its request routing; None: the app's `router`.")


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
    models: list[ModelArgs] | None = Field(
        default=None, min_length=1,
        description="Several base models in one app: each its own engine deployment(s) and router; the ingress "
        "dispatches by the request's `model` and `/v1/models` lists them all (first listed: the default). Replaces "
        "`engine`, `num_replicas` and `variants`. None: one model (`engine`).",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return reject_moved_keys(data, _MOVED, "an app field")

    @model_validator(mode="after")
    def _check_variants(self) -> "AppArgs":
        if self.models is not None:
            model_apps(self)  # each model's topology valid (errors name models[i] and the field)
            return self
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


def model_apps(a: AppArgs) -> list[AppArgs]:
    """Each entry of ``a.models`` as the one-model app it is (the app's ingress, QoS, P/D and defaults)."""
    for f in ("engine", "num_replicas", "variants"):
        if f in a.model_fields_set:
            raise ValueError(f"{f}: with `models`, set it in each model's entry")
    if a.kv_tiers is not None:
        raise ValueError("kv_tiers: KV tiers serve one model per app (the shared tier's hashes are not per model)")
    out, names, variants = [], set(), set()
    for i, m in enumerate(a.models):
        fields: dict[str, Any] = {
            "engine": m.engine, "router": m.router or a.router, "ingress": a.ingress, "qos": a.qos,
            "ingress_replicas": a.ingress_replicas,
            "replica_num_cpus": a.replica_num_cpus if m.replica_num_cpus is None else m.replica_num_cpus,
            "replica_num_gpus": a.replica_num_gpus if m.replica_num_gpus is None else m.replica_num_gpus,
            "max_ongoing_requests": m.max_ongoing_requests or a.max_ongoing_requests}
        if m.variants is not None:
            fields["variants"] = m.variants
            if "pd" in a.model_fields_set:
                fields["pd"] = a.pd
        if m.variants is None or "num_replicas" in m.model_fields_set:
            fields["num_replicas"] = m.num_replicas
        try:
            sub = AppArgs.model_validate(fields)
        except (ValidationError, ValueError) as e:
            raise ValueError(f"models[{i}]: {e}") from None
        if sub.router.uses_precise_index():
            raise ValueError(f"models[{i}].router: the precise prefix index serves one model per app")
        if m.engine.name in names:
            raise ValueError(f"models[{i}].engine: model name '{m.engine.name}' is served twice")
        shared = {v.name for v in m.variants or []} & variants
        if shared:
            raise ValueError(f"models[{i}].variants: variant name(s) {sorted(shared)} used by another model")
        names.add(m.engine.name)
        variants |= {v.name for v in m.variants or []}
        out.append(sub)
    return out


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Application:
    """Build the OpenAI app: ingress -> one ``LLMServer`` deployment, or -> one deployment per variant (P/D:
    ingress -> decode variants -> their group's prefill variant); with ``models``, that per model."""
    a = AppArgs.model_validate(args or {})
    ingress = OpenAIIngress.options(num_replicas=a.ingress_replicas)
    common = (a.ingress.model_dump(), a.qos.model_dump())
    subs = model_apps(a) if a.models is not None else [a]
    # Routers sharing decisions (issue 16) reach RoutingState by name; bound to the ingress so it is in the app.
    shared = {"routing_state": routing_state_deployment()} if any(
        s.router.shares_decisions(a.ingress_replicas) for s in subs) else {}
    if a.models is None:
        llm, engine, dispatch = _model_backend(a)
        return ingress.bind(llm, engine, *common, *([dispatch] if dispatch else []), **shared)
    specs, first_rank = [], 0
    for sub in subs:  # each model's replicas pinned to cores after the earlier models' (cpu.py)
        name = "LLMServer-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", sub.engine.name)
        llm, engine, dispatch = _model_backend(sub, name, first_rank)
        specs.append({"llm": llm, "engine": engine, "dispatch": dispatch})
        first_rank += sum(v.max_replicas for v in sub.variants) if sub.variants else sub.num_replicas
    return ingress.bind(None, None, *common, None, models=specs, **shared)


def _model_backend(a: AppArgs, name: str = "LLMServer", first_rank: int = 0) -> tuple[Any, dict, dict | None]:
    """One model's engine deployment(s), bound: (the ingress's handle or {variant: handle}, engine, dispatch)."""
    share = a.router.shares_decisions(a.ingress_replicas)
    if share != a.router.share_decisions:  # resolved: the routers' kwargs say on or off
        a = a.model_copy(update={"router": a.router.model_copy(update={"share_decisions": share})})
    precise = a.router.uses_precise_index()
    engine = a.engine.model_copy(update={"kv_events": True}) if precise else a.engine
    kv_index = (
        serve.deployment(KVIndex).options(name=KV_INDEX_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0}).bind()
        if precise else None
    )
    store = shared_kv_store(a.kv_tiers, kv_index) if a.kv_tiers is not None else None
    tiers = a.kv_tiers.model_dump() if a.kv_tiers is not None else None
    if a.variants is None:
        features = ReplicaFeatures(tiers=tiers).model_dump()
        llm = _deployment(a, name=name).bind(engine.model_dump(), kv_index, features, store=store,
                                             **({"rank_offset": first_rank} if first_rank else {}))
        return llm, engine.model_dump(), None
    engines = dict(zip((v.name for v in a.variants), resolve_engines(engine, a.variants)))
    offsets = _rank_offsets(a.variants)
    groups = pd_groups(a.variants)
    bound: dict[str, Any] = {}
    for v in sorted(a.variants, key=lambda v: v.role != "prefill"):  # a decode variant binds its prefill's handle
        features = ReplicaFeatures(role=v.role, pd=a.pd if v.role != "aggregated" else None,
                                   tiers=tiers if v.role == "aggregated" else None).model_dump()
        prefill = bound[groups[v.pd_group].prefill] if v.role == "decode" else None
        bound[v.name] = _deployment(a, v).bind(engines[v.name].model_dump(), kv_index, features, store=store,
                                               prefill=prefill, rank_offset=first_rank + offsets[v.name])
    entry = {v.name: bound[v.name] for v in entry_variants(a.variants)}
    return entry, engine.model_dump(), {"accelerators": {v.name: v.accelerator for v in a.variants}}


def _rank_offsets(variants: list[Variant]) -> dict[str, int]:
    """Each variant's first replica rank for core pinning: the earlier variants' most replicas come first."""
    out, n = {}, 0
    for v in variants:
        out[v.name] = n
        n += v.max_replicas
    return out


def _deployment(a: AppArgs, v: Variant | None = None, name: str = "LLMServer"):
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
    return engine_deployment(LLMServer, name if v is None else v.deployment_name, scale,
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
        name=SHARED_KV_STORE_DEPLOYMENT, num_replicas=1, max_ongoing_requests=1000,
        ray_actor_options={"num_cpus": 0, **({"resources": tiers.shared_store_resources} if tiers.shared_store_resources else {})},
    ).bind(tiers.shared_bytes, kv_index)
