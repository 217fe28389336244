"""EngineConfig: the pydantic model that configures one vLLM engine.

It is the boundary between YAML/CLI configuration and vLLM: ``engine_args()``
maps it onto ``AsyncEngineArgs`` keyword arguments and ``environment()`` onto
the ``VLLM_*`` variables vLLM reads at start-up. Neither imports vLLM.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmd_ray.engine.tiny import TINY_MODEL_NAME


class EngineConfig(BaseModel):
    """Configuration of one vLLM engine (one Serve replica holds one engine)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(
        default=TINY_MODEL_NAME,
        description="`tiny-llama` (built locally on first use), a local HF model directory, or a hub id whose weights are present.",
    )
    served_model_name: str | None = Field(
        default=None, description="Name clients pass as `model`; defaults to `model`."
    )
    tokenizer: str | None = Field(default=None, description="Tokenizer path; defaults to the model's.")
    device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto", description="`auto` picks `gpu` when vLLM's platform is CUDA/ROCm, else `cpu`."
    )
    dtype: str = Field(
        default="auto",
        description="Model dtype; `auto` means float32 on CPU (8x faster than bf16 on AVX2) and the model's dtype on GPU.",
    )
    max_model_len: int | None = Field(default=4096, ge=16, description="Context length (prompt + output).")
    max_num_seqs: int = Field(default=64, ge=1, description="Max sequences batched per engine step.")
    max_num_batched_tokens: int | None = Field(
        default=None, ge=16, description="Token budget per engine step (chunked prefill)."
    )
    enable_prefix_caching: bool = Field(default=True, description="vLLM automatic prefix caching.")
    enforce_eager: bool | None = Field(
        default=None, description="Skip graph compilation; defaults to true on CPU (5 s start instead of 40-150 s)."
    )
    block_size: int | None = Field(default=None, ge=1, description="KV block size; vLLM's default (128 on CPU) if unset.")
    kv_cache_space_gib: int = Field(
        default=1, ge=1, description="CPU only: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)."
    )
    kv_cache_memory_bytes: int | None = Field(
        default=None, ge=1, description="Exact KV cache size in bytes; overrides kv_cache_space_gib."
    )
    num_kv_blocks: int | None = Field(
        default=None, ge=1, description="Force the number of KV blocks (vLLM num_gpu_blocks_override)."
    )
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="GPU only.")
    tensor_parallel_size: int = Field(default=1, ge=1, description="Tensor parallel degree.")
    cpu_cores_per_replica: int = Field(
        default=1, ge=1, description="CPU only: cores each replica's engine is pinned to."
    )
    cpu_bind: str = Field(
        default="auto",
        description="CPU only: `auto` derives the cores from the replica rank, `nobind` disables pinning, else a vLLM core list such as `0-1`.",
    )
    seed: int = Field(default=0, description="Engine seed.")
    max_logprobs: int = Field(default=20, ge=0, description="Largest `logprobs`/`top_logprobs` accepted.")
    engine_core_start: Literal["auto", "fork", "spawn"] = Field(
        default="auto",
        description="How vLLM's engine-core process is started. `fork` inherits the replica's imported torch and "
        "vLLM (measured here: the engine builds in ~5.5 s instead of ~11.5 s); `spawn` starts a fresh interpreter "
        "that imports them again (vLLM forces it inside a Ray actor). `auto`: `fork` on CPU, `spawn` on GPU (CUDA "
        "cannot be forked once initialised).",
    )
    warmup: bool = Field(
        default=True,
        description="Run two 1-token requests (greedy with logprobs, and seeded sampling) at start-up, so the first user request does not pay vLLM's lazy initialisation (~4 s measured here).",
    )
    kv_events: bool = Field(
        default=False,
        description="Publish vLLM KV cache events (ZMQ) to the app's KV-index actor, for the `precise-prefix-cache` scorer.",
    )
    enable_log_requests: bool = Field(default=False, description="Log request ids (never prompt text).")
    enable_lora: bool = Field(default=False, description="Serve LoRA adapters (vLLM `enable_lora`).")
    max_loras: int | None = Field(
        default=None, ge=1, description="LoRA adapters active in one batch (vLLM `max_loras`, its slots); vLLM's default if unset.")
    max_lora_rank: int | None = Field(default=None, ge=1, description="Largest adapter rank (vLLM `max_lora_rank`).")
    max_cpu_loras: int | None = Field(
        default=None, ge=1, description="Adapters kept in host memory (vLLM `max_cpu_loras`); `max_loras` if unset.")
    lora_modules: dict[str, str] = Field(
        default_factory=dict, description="LoRA adapters of this model served from the start, name -> local "
        "directory (or `tiny-lora-<k>`, built on first use): vLLM's `--lora-modules`. Needs `enable_lora`.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM AsyncEngineArgs passed through unchanged."
    )

    @model_validator(mode="after")
    def _check(self) -> "EngineConfig":
        if self.device == "gpu" and self.cpu_bind not in ("auto", "nobind"):
            raise ValueError("cpu_bind: only valid with device=cpu")
        lora = [k for k in ("max_loras", "max_lora_rank", "max_cpu_loras", "lora_modules") if getattr(self, k)]
        if lora and not self.enable_lora:
            raise ValueError(f"{lora[0]}: only valid with enable_lora: true")
        return self

    @property
    def name(self) -> str:
        """The model name clients use."""
        return self.served_model_name or self.model

    def resolved_device(self, platform_is_gpu: bool) -> Literal["cpu", "gpu"]:
        if self.device != "auto":
            return self.device
        return "gpu" if platform_is_gpu else "cpu"

    def engine_args(self, model_path: str, device: Literal["cpu", "gpu"]) -> dict[str, Any]:
        """Keyword arguments for vLLM's ``AsyncEngineArgs``."""
        on_cpu = device == "cpu"
        args: dict[str, Any] = {
            "model": model_path,
            "tokenizer": self.tokenizer or model_path,
            "served_model_name": [self.name],
            "dtype": ("float32" if on_cpu else "auto") if self.dtype == "auto" else self.dtype,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "enable_prefix_caching": self.enable_prefix_caching,
            "enforce_eager": on_cpu if self.enforce_eager is None else self.enforce_eager,
            "seed": self.seed,
            "max_logprobs": self.max_logprobs,
            "tensor_parallel_size": self.tensor_parallel_size,
            "disable_log_stats": False,  # our stat logger feeds routing stats and metrics
            "enable_log_requests": self.enable_log_requests,
        }
        if self.enable_lora:
            args["enable_lora"] = True
            lora = {"max_loras": self.max_loras, "max_lora_rank": self.max_lora_rank, "max_cpu_loras": self.max_cpu_loras}
            args.update({k: v for k, v in lora.items() if v is not None})
        if on_cpu:
            args["distributed_executor_backend"] = "uni" if self.tensor_parallel_size == 1 else "mp"
        else:
            args["gpu_memory_utilization"] = self.gpu_memory_utilization
        optional = {
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "block_size": self.block_size,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
            "num_gpu_blocks_override": self.num_kv_blocks,
        }
        args.update({k: v for k, v in optional.items() if v is not None})
        args.update(self.engine_kwargs)
        return args

    def resolved_engine_core_start(self, device: Literal["cpu", "gpu"]) -> Literal["fork", "spawn"]:
        if self.engine_core_start != "auto":
            return self.engine_core_start
        return "fork" if device == "cpu" else "spawn"

    def eager(self, device: Literal["cpu", "gpu"]) -> bool:
        """Whether the engine runs without graph compilation (``enforce_eager`` as passed to vLLM)."""
        return bool(self.engine_args("", device)["enforce_eager"])

    def environment(self, device: Literal["cpu", "gpu"], cpu_bind: str | None) -> dict[str, str]:
        """``VLLM_*`` (and torch) variables to set before the engine starts.

        An eager engine compiles nothing but vLLM's logprobs helper (``batched_count_greater_than``, a
        ``torch.compile(dynamic=True)`` function): its first call took 1.9 s here, on the first request that
        asks for logprobs (or in our warm-up). ``TORCHDYNAMO_DISABLE`` runs it as plain torch, the same result.
        """
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        if self.eager(device) and "compilation_config" not in self.engine_kwargs:
            env["TORCHDYNAMO_DISABLE"] = "1"
        if device == "cpu":
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_space_gib)
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
            if cpu_bind is not None:
                env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind
        return env
