"""LoRA adapters at the front door: vLLM's own adapter registry, ids stable across ingresses, admin routes.

* **Declared adapters** (``engine.lora_modules``, per model) become ``vllm serve
  --lora-modules name=path`` (``config.vllm_cli_args``); vLLM's ``init_app_state`` hands them to its
  ``OpenAIServingModels``, which lists them in ``/v1/models`` (``parent`` = the
  base model) and turns a request whose ``model`` names one into vLLM's
  ``LoRARequest`` (its serving classes' ``_maybe_get_adapters``).
* **Engines load adapters lazily**: ``RemoteEngineClient.add_lora`` (which
  vLLM calls for every load) only checks the adapter here, as the engine would
  (the directory, its PEFT config against the engine's ``max_lora_rank``);
  each replica's vLLM loads it on the first request that names it and keeps
  at most ``max_loras`` active (its LRU). Adapter paths must be readable on
  the replicas' hosts too (one host, or a shared file system).
* **Stable ids**: vLLM numbers adapters per ``OpenAIServingModels`` in load
  order, so two ingress replicas could give one id to two adapters, and an
  engine keys its loaded adapters by id. :func:`stable_lora_id` derives the id
  the engine sees from ``(name, path)`` instead (``RemoteEngineClient.generate``).
* **Admin routes** ``POST /v1/load_lora_adapter`` and
  ``/v1/unload_lora_adapter`` run vLLM's request models and its
  ``OpenAIServingModels.load_lora_adapter`` / ``unload_lora_adapter``. As
  vLLM's server serves them only with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``,
  llmd-ray serves them only with ``ingress.allow_runtime_lora_updating`` (404
  otherwise, as an unknown route), and requires an API key when keys are on.
  Limitation: with ``ingress_replicas > 1`` a load reaches only the ingress
  replica that took the POST (Serve has no broadcast to the replicas of a
  deployment); declare adapters in the config, or run one ingress replica,
  to have every ingress serve them. In a multi-model app the routes serve
  the first model (vLLM's request has no base-model field).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
from typing import Any

ADMIN_OPS = ("load", "unload")


def lora_config_of(args: argparse.Namespace) -> Any:
    """vLLM's ``LoRAConfig`` of the ``vllm serve`` arguments (None without ``--enable-lora``)."""
    if not getattr(args, "enable_lora", False):
        return None
    from vllm.config.lora import LoRAConfig

    kwargs = {k: getattr(args, k) for k in ("max_lora_rank", "max_loras") if getattr(args, k, None) is not None}
    return LoRAConfig(**kwargs)


def stable_lora_id(name: str, path: str) -> int:
    """A positive 31-bit id for ``(name, path)``, the same in every ingress replica and process."""
    digest = hashlib.sha256(f"{name}\0{path}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1) + 1


def with_stable_id(lora_request: Any) -> Any:
    """``lora_request`` (vLLM's ``LoRARequest``) with its id replaced by :func:`stable_lora_id`."""
    import msgspec

    return msgspec.structs.replace(lora_request, lora_int_id=stable_lora_id(lora_request.lora_name,
                                                                              lora_request.lora_path))


def check_adapter(lora_request: Any, lora_config: Any, max_position_embeddings: int | None) -> None:
    """Raise what the engine would raise loading ``lora_request`` (not found; illegal for this engine)."""
    from vllm.exceptions import LoRAAdapterNotFoundError
    from vllm.lora.peft_helper import PEFTHelper

    if lora_config is None:
        raise ValueError("LoRA is not enabled for this model (engine.enable_lora)")
    path = lora_request.lora_path
    if not os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise LoRAAdapterNotFoundError(lora_request.lora_name, path)
    PEFTHelper.from_local_dir(path, max_position_embeddings).validate_legal(lora_config)


async def check_adapter_async(lora_request: Any, lora_config: Any, max_position_embeddings: int | None) -> None:
    await asyncio.to_thread(check_adapter, lora_request, lora_config, max_position_embeddings)


async def admin(op: str, request: Any, *, models: Any, admission: Any, allowed: bool, max_body_bytes: int) -> Any:
    """``POST /v1/{op}_lora_adapter`` as vLLM's server answers it, behind llmd-ray's keys."""
    from fastapi.responses import JSONResponse, Response
    from pydantic import ValidationError
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse
    from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest

    from llmd_ray.errors import InvalidRequestError, LLMDRayError
    from llmd_ray.serving.http_util import error_response, read_json_body

    if not allowed:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    try:
        admission.authenticate(request.headers.get("authorization"), rate_limited=False)
        body = await read_json_body(request, max_body_bytes)
        model = LoadLoRAAdapterRequest if op == "load" else UnloadLoRAAdapterRequest
        try:
            parsed = model.model_validate(body)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"]) or None
            raise InvalidRequestError(f"{field}: {first['msg']}" if field else first["msg"], param=field) from None
    except LLMDRayError as e:
        return error_response(e)
    result = await (models.load_lora_adapter(parsed) if op == "load" else models.unload_lora_adapter(parsed))
    if isinstance(result, ErrorResponse):
        return JSONResponse(result.model_dump(), status_code=result.error.code)
    return Response(status_code=200, content=result)
