"""App builders: ``build_app(args) -> Application``, used by Serve YAML
(``import_path: llmd_ray:build_app``), by RayService, and from Python."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from llmd_ray.engine.config import EngineConfig
from llmd_ray.serving.ingress import IngressConfig, OpenAIIngress
from llmd_ray.serving.server import LLMServer


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


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Application:
    """Build the aggregated OpenAI app: ingress -> N LLMServer replicas."""
    a = AppArgs.model_validate(args or {})
    server = serve.deployment(LLMServer).options(
        name="LLMServer",
        num_replicas=a.num_replicas,
        max_ongoing_requests=a.max_ongoing_requests,
        ray_actor_options={"num_cpus": a.replica_num_cpus, "num_gpus": a.replica_num_gpus},
        health_check_period_s=10,
        health_check_timeout_s=30,
        graceful_shutdown_timeout_s=20,
    )
    ingress = OpenAIIngress.options(num_replicas=a.ingress_replicas)
    return ingress.bind(
        server.bind(a.engine.model_dump()),
        a.engine.model_dump(),
        a.ingress.model_dump(),
    )
