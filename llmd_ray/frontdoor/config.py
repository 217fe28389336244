"""The front door's configuration, and the one vLLM command line it implies.

``IngressConfig`` is ``AppArgs.ingress``. Its ``openai`` block holds the
options of vLLM's OpenAI serving layer (tool-call and reasoning parsers, chat
template, usage details). :func:`vllm_cli_args` turns an ``EngineConfig`` and
that block into the flags of ``vllm serve``: the front door parses them with
vLLM's own argument parser, and the parity test starts vLLM's own server with
the very same list, so both serve the model the same way.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmd_ray.engine.config import EngineConfig
from llmd_ray.serving.auth import AuthConfig
from llmd_ray.serving.flow_control import FlowControlConfig


class OpenAIServerConfig(BaseModel):
    """vLLM's OpenAI serving options (the flags of ``vllm serve`` of the same name)."""

    model_config = ConfigDict(extra="forbid")

    tool_call_parser: str | None = Field(
        default="hermes", description="vLLM tool-call parser (`--tool-call-parser`), e.g. `hermes`, `llama3_json`; "
        "None: tool calls only through named or required `tool_choice`.",
    )
    enable_auto_tool_choice: bool = Field(
        default=True, description="Allow `tool_choice: auto` (needs `tool_call_parser`).")
    reasoning_parser: str | None = Field(default=None, description="vLLM reasoning parser (`--reasoning-parser`).")
    chat_template: str | None = Field(default=None, description="Chat template (path or text); None: the model's.")
    response_role: str = Field(default="assistant", description="Role of the generated chat message.")
    enable_prompt_tokens_details: bool = Field(
        default=True, description="Report `usage.prompt_tokens_details.cached_tokens` (the engine's prefix-cache hits).")
    enable_force_include_usage: bool = Field(default=False, description="Send usage on every stream.")
    extra_args: list[str] = Field(
        default_factory=list, description="More `vllm serve` frontend flags, passed through unchanged.")

    def flags(self) -> list[str]:
        out: list[str] = []
        if self.tool_call_parser:
            out += ["--tool-call-parser", self.tool_call_parser]
            if self.enable_auto_tool_choice:
                out.append("--enable-auto-tool-choice")
        if self.reasoning_parser:
            out += ["--reasoning-parser", self.reasoning_parser]
        if self.chat_template:
            out += ["--chat-template", self.chat_template]
        out += ["--response-role", self.response_role]
        if self.enable_prompt_tokens_details:
            out.append("--enable-prompt-tokens-details")
        if self.enable_force_include_usage:
            out.append("--enable-force-include-usage")
        return out + list(self.extra_args)


class IngressConfig(BaseModel):
    """Limits and behaviour of the OpenAI ingress (``AppArgs.ingress``)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body accepted (413 above).")
    max_tokens_limit: int | None = Field(
        default=None, ge=1, description="Largest max_tokens accepted; None means the model's context."
    )
    max_prompt_tokens: int | None = Field(
        default=None, ge=1, description="Longest prompt accepted, in tokens; None means the model's context."
    )
    max_stream_migrations: int = Field(
        default=3, ge=0, description="How often one stream may move to another replica when its replica dies "
        "mid-stream (it goes on from the tokens streamed); past that, or 0, the stream ends with an error event.",
    )
    flow_control: FlowControlConfig = Field(
        default_factory=FlowControlConfig, description="Admission gate: priority queue, saturation, shedding."
    )
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Optional API keys, rate limits, key classes.")
    openai: OpenAIServerConfig = Field(
        default_factory=OpenAIServerConfig, description="vLLM's OpenAI serving layer: tool-call and reasoning "
        "parsers, chat template, usage details.",
    )
    allow_runtime_lora_updating: bool = Field(
        default=False, description="Serve `POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter` (vLLM's "
        "`VLLM_ALLOW_RUNTIME_LORA_UPDATING`); API keys, when configured, are required. Off: both are 404s.",
    )
    unknown_fields: Literal["reject", "ignore"] = Field(
        default="reject", description="A chat/completion request field that neither OpenAI's API nor vLLM's "
        "request model declares: `reject` answers 400 naming it (never a silent drop); `ignore` drops it, as "
        "vLLM's own server does.",
    )


def vllm_cli_args(engine: EngineConfig, model_path: str, openai: OpenAIServerConfig, device: str = "cpu") -> list[str]:
    """``vllm serve`` flags for this engine and serving config (engine arguments first, then the frontend's)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    actions = {a.dest: a for a in make_arg_parser(FlexibleArgumentParser())._actions}
    args = engine.engine_args(model_path, device)
    out = ["--model", str(args.pop("model"))]
    for key, value in args.items():
        out += _flag(actions, key, value)
    if engine.lora_modules:  # the model's declared LoRA adapters (a frontend flag: not an engine argument)
        from llmd_ray.engine.tiny_lora import resolve_adapter

        out += ["--lora-modules", *(f"{n}={resolve_adapter(p)}" for n, p in engine.lora_modules.items())]
    return out + openai.flags()


def _flag(actions: dict[str, Any], key: str, value: Any) -> list[str]:
    import argparse

    action = actions.get(key)
    if action is None:
        raise ValueError(f"engine argument {key!r} has no `vllm serve` flag")
    name = action.option_strings[0]
    if value is None:
        return []
    if isinstance(action, argparse.BooleanOptionalAction):
        return [name if value else "--no-" + name[2:]]
    if action.nargs == 0:  # store_true
        return [name] if value else []
    if isinstance(value, (list, tuple)):
        return [name, *map(str, value)] if action.nargs in ("+", "*") else [name, json.dumps(list(value))]
    if isinstance(value, dict):
        return [name, json.dumps(value)]
    return [name, str(value)]
