"""``build_pd_app``: the P/D application (``import_path: llmd_ray.serving.pd_app:build_pd_app``).

    OpenAIIngress (unchanged for clients) -> DecodeServer x D -> PrefillServer x P

Each role has its own engine config, replica count and request router: the
prefill deployment's router runs the routing framework's ``prefill`` profile
(prefix-aware: prompts sharing a prefix meet the same prefill cache), the
decode deployment's router its ``decode`` profile. Engines are pinned to cores
of their own: prefill replicas take ranks ``0..P-1``, decode replicas
``P..P+D-1``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from llmd_ray.engine.config import EngineConfig
from llmd_ray.pd.config import PDConfig
from llmd_ray.serving.app import RouterArgs, engine_deployment
from llmd_ray.serving.ingress import IngressConfig, OpenAIIngress
from llmd_ray.pd.servers import DecodeServer, PrefillServer


def role_router_config(role: str) -> dict[str, Any]:
    """The default EndpointPickerConfig of a role: one profile named after it."""
    prefix_weight = 3 if role == "prefill" else 2
    return {
        "plugins": [
            {"type": "role", "name": f"{role}-role", "parameters": {"role": role}},
            {"type": "prefix-cache"},
            {"type": "queue"},
            {"type": "kv-cache-utilization"},
            {"type": "max-score"},
        ],
        "schedulingProfiles": [
            {
                "name": role,
                "plugins": [
                    {"pluginRef": f"{role}-role"},
                    {"pluginRef": "prefix-cache", "weight": prefix_weight},
                    {"pluginRef": "queue", "weight": 2},
                    {"pluginRef": "kv-cache-utilization", "weight": 1},
                    {"pluginRef": "max-score"},
                ],
            }
        ],
    }


class RoleArgs(BaseModel):
    """One role's deployment (``prefill:`` or ``decode:``)."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(default=1, ge=1, description="Replicas (one engine each).")
    engine: EngineConfig | None = Field(default=None, description="This role's engine; None: the app's `engine`.")
    replica_num_cpus: float = Field(default=1.0, ge=0, description="Ray CPUs reserved per replica.")
    replica_num_gpus: float = Field(default=0.0, ge=0, description="Ray GPUs reserved per replica.")
    max_ongoing_requests: int = Field(default=256, ge=1, description="In-flight requests per replica.")
    router: RouterArgs | None = Field(default=None, description="Routing to this role's replicas; None: the role's profile.")


class PDAppArgs(BaseModel):
    """Arguments of the P/D app (the ``args:`` block of a Serve config)."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = Field(default_factory=EngineConfig, description="The engine of both roles unless a role sets its own.")
    prefill: RoleArgs = Field(default_factory=RoleArgs, description="The PrefillServer deployment.")
    decode: RoleArgs = Field(default_factory=RoleArgs, description="The DecodeServer deployment (the orchestrator).")
    pd: PDConfig = Field(default_factory=PDConfig, description="KV transport, split decider, prefill timeout.")
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="OpenAI ingress limits.")
    ingress_replicas: int = Field(default=1, ge=1, description="OpenAI ingress replicas.")


def _deployment(cls, name: str, role: RoleArgs, role_name: str):
    router = role.router or RouterArgs(config=role_router_config(role_name))
    return engine_deployment(cls, name, {"num_replicas": role.num_replicas}, role.max_ongoing_requests,
                             {"num_cpus": role.replica_num_cpus, "num_gpus": role.replica_num_gpus}, router)


def build_pd_app(args: dict[str, Any] | PDAppArgs | None = None) -> Application:
    """Build the P/D OpenAI app: ingress -> DecodeServer -> PrefillServer."""
    a = PDAppArgs.model_validate(args or {})
    prefill_engine = (a.prefill.engine or a.engine).model_dump()
    decode_engine = (a.decode.engine or a.engine).model_dump()
    pd = a.pd.model_dump()
    prefill = _deployment(PrefillServer, "PrefillServer", a.prefill, "prefill").bind(prefill_engine, pd, 0)
    decode = _deployment(DecodeServer, "DecodeServer", a.decode, "decode").bind(
        decode_engine, prefill, pd, a.prefill.num_replicas
    )
    ingress = OpenAIIngress.options(num_replicas=a.ingress_replicas)
    return ingress.bind(decode, decode_engine, a.ingress.model_dump())
