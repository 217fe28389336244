"""OpenAI request models (the HTTP boundary), validated with pydantic.

Only what llmd-ray implements is accepted; unknown fields are ignored, as the
OpenAI API does, but known fields are type- and range-checked so that a bad
request is answered with a 400 that names the field. ``ignore_eos`` and
``min_tokens`` are vLLM's extensions, used by benchmarks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

Number = Annotated[float, Field(strict=False)]


class StreamOptions(BaseModel):
    include_usage: StrictBool = Field(default=False, description="Send a final chunk carrying `usage`.")


class _SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, description="Served model name; the app's model if omitted.")
    max_tokens: StrictInt | None = Field(
        default=None, ge=1, description="Tokens to generate; defaults to the rest of the context."
    )
    temperature: Number = Field(default=1.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: Number = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: StrictInt | None = Field(
        default=None, ge=-(2**63), le=2**63 - 1, description="Per-request sampling seed (a signed 64-bit integer)."
    )
    stop: str | list[str] | None = Field(default=None, validate_default=True, description="Up to 4 stop strings.")
    n: StrictInt = Field(default=1, ge=1, le=1, description="Only n=1 is supported.")
    stream: StrictBool = Field(default=False, description="Stream server-sent events.")
    stream_options: StreamOptions | None = Field(default=None, description="Streaming options.")
    user: str | None = Field(default=None, description="End-user id (not logged).")
    ignore_eos: StrictBool = Field(default=False, description="vLLM extension: keep generating past EOS.")
    min_tokens: StrictInt = Field(default=0, ge=0, description="vLLM extension: minimum tokens before EOS/stop.")

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops


class CompletionRequest(_SamplingFields):
    """``POST /v1/completions``."""

    prompt: str | list[StrictInt] | list[str] | list[list[StrictInt]] = Field(
        description="A string or a list of token ids (a batch of one is also accepted)."
    )
    max_tokens: StrictInt | None = Field(default=16, ge=1, description="Tokens to generate (OpenAI default 16).")
    logprobs: StrictInt | None = Field(default=None, ge=0, le=20, description="Top alternatives per token.")
    echo: StrictBool = Field(default=False, description="Not supported; must be false.")
    suffix: str | None = Field(default=None, description="Not supported.")

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and v and isinstance(v[0], (list, str)):
            if len(v) != 1:
                raise ValueError("only one prompt per request is supported")
            v = v[0]
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be empty")
        if isinstance(v, str) and v == "":
            raise ValueError("prompt must not be empty")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("suffix is not supported")
        return v


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"] = Field(description="Only text parts are supported.")
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(description="Message author.")
    content: str | list[ContentPart] | None = Field(default=None, description="Text or text parts.")
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far; at least one message.")
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1, description="Alias of max_tokens.")
    logprobs: StrictBool = Field(default=False, description="Return log-probabilities of output tokens.")
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20, description="Alternatives per token.")

    @property
    def output_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


def format_validation_error(errors: list[dict]) -> tuple[str, str | None]:
    """A pydantic error list as (message, param), param in ``a.b[0].c`` form."""
    first = errors[0]
    param = _loc_to_param(first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        msg = "field required"
    parts = [f"{param}: {msg}" if param else msg]
    if len(errors) > 1:
        parts.append(f"(and {len(errors) - 1} more error(s))")
    return " ".join(parts), param


def _loc_to_param(loc: tuple) -> str | None:
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif item in ("str", "list[int]", "list[str]", "list[list[int]]", "list[ContentPart]") or "[" in str(item):
            break  # union-branch labels pydantic inserts; the field path is before them
        else:
            out += f".{item}" if out else str(item)
    return out or None


# ------------------------------------------------------------------ OpenAPI
REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "CompletionRequest": CompletionRequest,
    "ChatCompletionRequest": ChatCompletionRequest,
}
ERROR_STATUSES = {
    "400": "Invalid request: the `param` field names the field at fault.",
    "401": "Missing or invalid API key (when keys are configured).",
    "403": "The API key may not use the requested QoS class.",
    "404": "Unknown model.",
    "413": "Request body above the configured limit.",
    "429": "Rate limit exceeded, or a sheddable request shed while saturated; see Retry-After.",
    "503": "No capacity within the QoS class's queue wait, or the engine failed; see Retry-After.",
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}


def openapi_extra(model: str, headers: dict[str, str]) -> dict:
    """``openapi_extra`` of a route whose body is read raw but validated as ``REQUEST_MODELS[model]``."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        },
        "parameters": [
            {"name": h, "in": "header", "required": False, "schema": {"type": "string"}, "description": d}
            for h, d in headers.items()
        ],
        "responses": {
            code: {"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
            for code, d in ERROR_STATUSES.items()
        },
        "security": [{}, {"bearer": []}],
    }


def add_openapi_components(doc: dict) -> dict:
    """Put the request models (and their nested models), the error body and the bearer scheme in ``components``."""
    comps = doc.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    for name, model in REQUEST_MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    schemas["ErrorResponse"] = _ERROR_SCHEMA
    comps.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "API key, when the server has keys configured.",
    }
    return doc
