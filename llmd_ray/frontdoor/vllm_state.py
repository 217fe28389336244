"""vLLM's OpenAI serving layer, set up in the ingress without an engine.

The ingress parses the ``vllm serve`` command line that
``config.vllm_cli_args`` derives from the app's ``EngineConfig`` and
``ingress.openai`` with vLLM's own parser, builds the model's ``VllmConfig``
the way vLLM's CPU-only render server does (model, tokenizer, generation
config and structured-output settings; no KV cache, no weights), a renderer
and an input processor, and then runs vLLM's own ``init_app_state`` over a
:class:`RemoteEngineClient`. The resulting state holds the very serving
objects ``vllm serve`` uses: chat and completion serving (templates, tools,
sampling params, response models, tool-call and reasoning parsers), models,
tokenization.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from llmd_ray.engine.config import EngineConfig
from llmd_ray.errors import ConfigError
from llmd_ray.frontdoor.backend import Backend
from llmd_ray.frontdoor.config import OpenAIServerConfig, vllm_cli_args


@dataclass(slots=True)
class VllmFrontend:
    """vLLM's serving objects (a Starlette ``State`` from ``init_app_state``) and what built them."""

    state: Any
    args: argparse.Namespace
    client: Any  # RemoteEngineClient

    @property
    def chat(self) -> Any:
        return self.state.openai_serving_chat

    @property
    def completion(self) -> Any:
        return self.state.openai_serving_completion

    @property
    def models(self) -> Any:
        return self.state.openai_serving_models

    @property
    def tokenization(self) -> Any:
        return self.state.serving_tokenization

    @property
    def max_model_len(self) -> int:
        return self.client.model_config.max_model_len


def parse_args(engine: EngineConfig, model_path: str, openai: OpenAIServerConfig) -> argparse.Namespace:
    """vLLM's parsed and validated ``vllm serve`` arguments for this app (ConfigError if vLLM refuses them)."""
    import contextlib
    import io

    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    flags = vllm_cli_args(engine, model_path, openai)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):  # argparse reports there, then exits: not in a replica
            args = make_arg_parser(FlexibleArgumentParser()).parse_args(flags)
            validate_parsed_serve_args(args)
    except SystemExit:
        raise ConfigError(f"engine / ingress.openai: vLLM refuses `vllm serve {' '.join(flags)}`: "
                          f"{errors.getvalue().strip()[-500:]}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"engine / ingress.openai: vLLM refuses `vllm serve {' '.join(flags)}`: {e}") from None
    return args


def build_vllm_config(args: argparse.Namespace) -> Any:
    """The model's VllmConfig, as vLLM's render server builds it (blocking: reads the model's config files)."""
    import vllm.envs as envs
    from vllm import AsyncEngineArgs
    from vllm.config import VllmConfig

    engine_args = AsyncEngineArgs.from_cli_args(args)
    model_config = engine_args.create_model_config()
    model_config.quantization = None  # no weights here
    envs.VLLM_CPU_KVCACHE_SPACE = 0  # no KV cache here either
    return VllmConfig(
        model_config=model_config,
        logging_config=engine_args.create_logging_config(),
        structured_outputs_config=engine_args.create_structured_outputs_config(),
    )


def build_client(args: argparse.Namespace, backend: Backend) -> Any:
    """The engine client the serving classes run over (blocking: loads the tokenizer)."""
    from vllm.renderers import renderer_from_config
    from vllm.v1.engine.input_processor import InputProcessor

    from llmd_ray.frontdoor.engine_client import RemoteEngineClient

    vllm_config = build_vllm_config(args)
    renderer = renderer_from_config(vllm_config)
    from llmd_ray.frontdoor.lora import lora_config_of

    return RemoteEngineClient(vllm_config, renderer, InputProcessor(vllm_config, renderer), backend,
                              lora_config_of(args))


async def start_frontend(engine: EngineConfig, model_path: str, openai: OpenAIServerConfig,
                         backend: Backend) -> VllmFrontend:
    """vLLM's serving state over ``backend``; the blocking set-up runs in a worker thread."""
    import asyncio

    from starlette.datastructures import State
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    args = await asyncio.to_thread(parse_args, engine, model_path, openai)
    client = await asyncio.to_thread(build_client, args, backend)
    state = State()
    await init_app_state(client, state, args, supported_tasks=("generate",))
    return VllmFrontend(state, args, client)
