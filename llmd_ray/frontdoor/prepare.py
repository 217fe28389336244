"""Request preparation: a JSON body into vLLM's own request model, checked and classified.

Parsing is vLLM's (``ChatCompletionRequest`` / ``CompletionRequest`` of the
running vLLM, every field it knows, its validators); a failure is a 400 that
names the field. On top, llmd-ray refuses what it cannot honour (a 400 naming
the field, never a silent drop): fields vLLM knows but llmd-ray cannot serve
(``UNHONOURED``), and fields that neither OpenAI's request type nor vLLM's
request model declares (vLLM would ignore them; ``ingress.unknown_fields:
ignore`` does the same). It then applies its own limits, and picks the QoS
class (a ``<model>:<class>`` name or alias is resolved to the served model
before vLLM sees it). Rendering, tokenization and sampling parameters then
happen in vLLM's serving class (``pipeline.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Container
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from llmd_ray.errors import InvalidRequestError
from llmd_ray.frontdoor.errors import clean_param, format_validation_error

Kind = Literal["chat", "completion"]

# Fields of vLLM's request models that llmd-ray cannot honour, and why.
UNHONOURED: dict[str, str] = {
    "kv_transfer_params": "llmd-ray runs prefill/decode disaggregation itself (variants with roles prefill and "
    "decode); clients cannot pass KV transfer parameters",
}


@dataclass(slots=True)
class Prepared:
    """A parsed request and what llmd-ray decided about it."""

    kind: Kind
    request: Any  # vLLM's ChatCompletionRequest or CompletionRequest
    qos: str
    tenant: str

    @property
    def prompt_param(self) -> str:
        return "messages" if self.kind == "chat" else "prompt"

    @property
    def stream(self) -> bool:
        return bool(self.request.stream)


def request_model(kind: Kind) -> type:
    if kind == "chat":
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    return CompletionRequest


@functools.cache
def known_fields(kind: Kind) -> frozenset[str]:
    """Top-level fields of a request body that OpenAI's request type or vLLM's request model declares."""
    model = request_model(kind)
    names = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    try:  # OpenAI's own parameters (vLLM ignores the few it does not declare, e.g. `store`, `metadata`)
        if kind == "chat":
            from openai.types.chat.completion_create_params import CompletionCreateParamsBase
        else:
            from openai.types.completion_create_params import CompletionCreateParamsBase
        names |= set(CompletionCreateParamsBase.__annotations__)
    except ImportError:  # the openai package is vLLM's dependency; without it, vLLM's fields alone
        pass
    return frozenset(names | {"stream"})


def check_unknown_fields(kind: Kind, body: dict) -> None:
    """400 naming every top-level field neither OpenAI nor vLLM declares (``param``: the first of them)."""
    unknown = [k for k in body if k not in known_fields(kind)]
    if unknown:
        names = ", ".join(f"'{k[:64]}'" for k in unknown[:20])
        raise InvalidRequestError(
            f"{unknown[0][:64]}: unrecognized request argument(s) supplied: {names} (neither OpenAI's nor vLLM's "
            f"{request_model(kind).__name__} has them; the server is set to refuse fields it would ignore)",
            param=unknown[0][:64], code="unrecognized_argument")


def parse(kind: Kind, body: dict, unknown_fields: str = "reject") -> Any:
    """``body`` as vLLM's request model; InvalidRequestError (400, naming the field) if it is not one.

    ``unknown_fields``: ``reject`` (400 naming fields neither OpenAI nor vLLM declares) or ``ignore`` (as vLLM).
    """
    if unknown_fields == "reject" and isinstance(body, dict):
        check_unknown_fields(kind, body)
    for name, why in UNHONOURED.items():
        if body.get(name) is not None:
            raise InvalidRequestError(f"{name}: not supported: {why}", param=name)
    from vllm.exceptions import VLLMClientError

    prompt_param = "messages" if kind == "chat" else "prompt"
    try:
        return request_model(kind).model_validate(body)
    except ValidationError as e:
        message, param = format_validation_error(e.errors(include_url=False), prompt_param)
        raise InvalidRequestError(message, param=param) from None
    except (VLLMClientError, ValueError, TypeError) as e:  # a validator's vLLM error, outside pydantic's wrapping
        param = clean_param(getattr(e, "parameter", None), prompt_param)
        text = str(e.args[0] if e.args else e)[:500]
        raise InvalidRequestError(f"{param}: {text}" if param else text, param=param) from None


def check_limits(prepared: Prepared, body: dict, max_tokens_limit: int | None) -> None:
    """llmd-ray's own cap on requested output tokens (the prompt's is checked once it is tokenized)."""
    req = prepared.request
    if max_tokens_limit is None:
        return
    for field in ("max_completion_tokens", "max_tokens"):  # as sent: a default (16 for completions) is capped
        value = getattr(req, field, None) if field in body else None
        if value is not None and value > max_tokens_limit:
            raise InvalidRequestError(f"{field}: {value} exceeds this server's limit of {max_tokens_limit}",
                                      param=field)


def prepare(kind: Kind, body: dict, *, qos_config: Any, served_model: str, qos_header: str | None = None,
            key_class: str | None = None, principal_name: str | None = None, session_id: str | None = None,
            max_tokens_limit: int | None = None, unknown_fields: str = "reject",
            adapters: Container[str] = ()) -> Prepared:
    """Parse, classify and check one request body."""
    req = parse(kind, body, unknown_fields)
    adapter = req.model is not None and req.model in adapters  # a LoRA adapter: vLLM's serving class resolves it
    model = None if adapter else req.model
    qos = qos_config.select(served_model=served_model, model=model, header=qos_header, key_class=key_class)
    if model is not None and model != served_model:
        req.model = served_model  # a QoS alias of the served model: vLLM serves the model itself
    if session_id and not req.session_id:
        req.session_id = session_id
    tenant = principal_name or (req.user or "-")[:128]
    prepared = Prepared(kind, req, qos, tenant)
    check_limits(prepared, body, max_tokens_limit)
    return prepared
