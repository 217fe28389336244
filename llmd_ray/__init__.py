"""llmd-ray: llm-d's distributed LLM inference as a Ray Serve application.

The public API is small; heavy modules (Ray, vLLM) load on first use::

    from llmd_ray import build_app, AppArgs, EngineConfig
    serve.run(build_app({"engine": {"model": "tiny-llama"}, "num_replicas": 2}))

Errors are documented in :mod:`llmd_ray.errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmd_ray.errors import (
    AuthenticationError,
    ConfigError,
    EngineDeadError,
    EngineError,
    InvalidRequestError,
    LLMDRayError,
    ModelNotFoundError,
    PermissionDeniedError,
    PromptTooLongError,
    RateLimitError,
    RequestAbortedError,
    RequestError,
    RequestShedError,
    RequestTooLargeError,
    ServiceOverloadedError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # app builders and configuration
    "build_app",
    "AppArgs",
    "EngineConfig",
    "IngressConfig",
    # deployments and engine
    "LLMServer",
    "OpenAIIngress",
    "Engine",
    "GenerateRequest",
    "GenerateChunk",
    "SamplingOptions",
    # errors
    "LLMDRayError",
    "ConfigError",
    "RequestError",
    "InvalidRequestError",
    "PromptTooLongError",
    "AuthenticationError",
    "ModelNotFoundError",
    "RequestTooLargeError",
    "EngineError",
    "EngineDeadError",
    "RequestAbortedError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceOverloadedError",
    "RequestShedError",
]

_LAZY = {
    "build_app": "llmd_ray.serving.app",
    "AppArgs": "llmd_ray.serving.app",
    "IngressConfig": "llmd_ray.serving.ingress",
    "OpenAIIngress": "llmd_ray.serving.ingress",
    "LLMServer": "llmd_ray.serving.server",
    "EngineConfig": "llmd_ray.engine.config",
    "Engine": "llmd_ray.engine.engine",
    "GenerateRequest": "llmd_ray.engine.types",
    "GenerateChunk": "llmd_ray.engine.types",
    "SamplingOptions": "llmd_ray.engine.types",
}


_GONE = {  # names of earlier releases, and what to use instead
    "build_pd_app": "P/D is built by llmd_ray:build_app from variants with roles: args.variants: "
                    "[{name: prefill, role: prefill}, {name: decode, role: decode}] (see serve_configs/pd.yaml)",
    "PDAppArgs": "P/D's args are AppArgs with variants that have roles prefill and decode (see serve_configs/pd.yaml)",
}


def __getattr__(name: str) -> Any:
    if name in _GONE:
        raise AttributeError(f"llmd_ray.{name} is gone: {_GONE[name]}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmd_ray' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from llmd_ray.engine.config import EngineConfig
    from llmd_ray.engine.engine import Engine
    from llmd_ray.engine.types import GenerateChunk, GenerateRequest, SamplingOptions
    from llmd_ray.serving.app import AppArgs, build_app
    from llmd_ray.serving.ingress import IngressConfig, OpenAIIngress
    from llmd_ray.serving.server import LLMServer
