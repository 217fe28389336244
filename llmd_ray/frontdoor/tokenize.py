"""``/tokenize`` and ``/detokenize`` bodies as vLLM's request models (errors name the field)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from llmd_ray.errors import InvalidRequestError
from llmd_ray.frontdoor.errors import format_validation_error


def tokenize_request(op: str, body: dict, served_model: str, qos: Any) -> Any:
    """vLLM's ``TokenizeRequest`` (completion or chat form) or ``DetokenizeRequest`` for ``body``."""
    from vllm.entrypoints.serve.tokenize.protocol import DetokenizeRequest, TokenizeRequest

    model = TokenizeRequest if op == "tokenize" else DetokenizeRequest
    try:
        req = TypeAdapter(model).validate_python(body)
    except ValidationError as e:
        message, param = format_validation_error(e.errors(include_url=False), "prompt")
        raise InvalidRequestError(message, param=param) from None
    qos.model_class(served_model, req.model)  # 404 for a model this app does not serve
    if req.model is not None:
        req.model = served_model
    return req
