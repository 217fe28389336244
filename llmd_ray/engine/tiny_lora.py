"""Build ``tiny-lora-<k>``: small LoRA adapters for ``tiny-llama``, made fully offline.

Each adapter is a PEFT-format directory (``adapter_config.json`` +
``adapter_model.safetensors``) of rank-8 LoRA weights on every layer's
``q_proj`` and ``v_proj``, filled like the base model's weights (a PCG64 bit
stream turned into float32 with integer steps and one IEEE multiply, seeded by
``(seed + k, crc32(tensor name))``), so every run on every machine writes the
same bytes. The weights are scaled (uniform, std ``init_std`` on both A and B,
``lora_alpha / r = 2``) so that an adapter's update is larger than the base
weights it modifies: greedy output with an adapter differs from the base
model's (a test asserts it).

Usage: ``python -m llmd_ray.engine.tiny_lora [--count N] [--force]`` builds
``tiny-lora-0`` .. ``tiny-lora-{N-1}`` next to ``tiny-llama`` (in the parent of
``tiny.default_model_dir()``); ``make model`` does this. A config names an
adapter by its directory, or as ``tiny-lora-<k>`` (built on first use,
:func:`resolve_adapter`).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path

from llmd_ray.engine import tiny

ADAPTER_PREFIX = "tiny-lora-"
DEFAULT_COUNT = 8
BUILD_VERSION = 1
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
_NAME = re.compile(r"^tiny-lora-(\d{1,3})$")


@dataclasses.dataclass(frozen=True, slots=True)
class TinyLoraSpec:
    """One adapter's recipe; every field affects the output bytes."""

    index: int = 0
    rank: int = 8
    alpha: int = 16
    init_std: float = 0.1
    seed: int = 20240701
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


def adapter_dir(index: int, base_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``tiny-lora-<index>`` lives: beside the base model."""
    base = Path(base_dir) if base_dir is not None else tiny.default_model_dir()
    return base.expanduser().absolute().parent / f"{ADAPTER_PREFIX}{index}"


def is_complete(path: str | os.PathLike[str], spec: TinyLoraSpec) -> bool:
    p = Path(path)
    try:
        marker = json.loads((p / tiny.BUILD_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == _marker(spec) and all((p / f).is_file() for f in REQUIRED_FILES)


def _marker(spec: TinyLoraSpec) -> dict:
    marker = {"build_version": BUILD_VERSION, "spec": dataclasses.asdict(spec), "base": tiny._marker(tiny.SPEC)}
    return json.loads(json.dumps(marker))  # as read back from the file (tuples are lists there)


def _shapes(spec: TinyLoraSpec) -> dict[str, tuple[int, int]]:
    """PEFT tensor name -> shape, for every layer and target module."""
    base = tiny.SPEC
    head_dim = base.hidden_size // base.num_attention_heads
    out_dims = {"q_proj": base.num_attention_heads * head_dim, "k_proj": base.num_key_value_heads * head_dim,
                "v_proj": base.num_key_value_heads * head_dim, "o_proj": base.hidden_size}
    shapes: dict[str, tuple[int, int]] = {}
    for layer in range(base.num_hidden_layers):
        for module in spec.target_modules:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            shapes[f"{prefix}.lora_A.weight"] = (spec.rank, base.hidden_size)
            shapes[f"{prefix}.lora_B.weight"] = (out_dims[module], spec.rank)
    return shapes


def adapter_tensors(spec: TinyLoraSpec) -> dict:
    """The adapter's tensors (numpy float32), machine-independent."""
    import numpy as np

    bound = np.float32(spec.init_std * 3 ** 0.5)
    out = {}
    for name, shape in sorted(_shapes(spec).items()):
        n = shape[0] * shape[1]
        bits = np.random.PCG64([spec.seed + spec.index, zlib.crc32(name.encode())]).random_raw(n)
        unit = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1.0)
        out[name] = (unit * bound).reshape(shape)
    return out


def adapter_config(spec: TinyLoraSpec, base_model: str) -> dict:
    return {
        "base_model_name_or_path": base_model, "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": list(spec.target_modules), "fan_in_fan_out": False, "inference_mode": True,
        "modules_to_save": None, "use_rslora": False, "use_dora": False,
    }


def build_tiny_lora(index: int, out_dir: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Build ``tiny-lora-<index>`` into ``out_dir`` (default: beside the base model); kept if complete."""
    from safetensors.numpy import save_file

    spec = TinyLoraSpec(index=index)
    out = Path(out_dir).expanduser().absolute() if out_dir is not None else adapter_dir(index)
    if not force and is_complete(out, spec):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        config = adapter_config(spec, tiny.TINY_MODEL_NAME)
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(adapter_tensors(spec), str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        for path in [*staging.iterdir(), staging]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (staging / tiny.BUILD_MARKER).write_text(json.dumps(_marker(spec), indent=2, sort_keys=True) + "\n")
        if force or not is_complete(out, spec):
            _install(staging, out, spec)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _install(staging: Path, out: Path, spec: TinyLoraSpec) -> None:
    """Rename a finished ``staging`` build to ``out``, replacing what is there (as ``tiny`` does)."""
    tiny.install_build(staging, out, lambda: is_complete(out, spec))


def resolve_adapter(path: str) -> str:
    """A config's adapter path -> an absolute directory; ``tiny-lora-<k>`` is built on first use."""
    m = _NAME.match(path)
    if m:
        target = adapter_dir(int(m.group(1)))
        if not is_complete(target, TinyLoraSpec(index=int(m.group(1)))):
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target.parent / f".{target.name}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                build_tiny_lora(int(m.group(1)), target)
        return str(target)
    p = Path(path).expanduser()
    return str(p.resolve()) if p.is_dir() else path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="adapters tiny-lora-0 .. N-1")
    parser.add_argument("--base", type=Path, help=f"the base model's directory (default: {tiny.default_model_dir()})")
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)
    for k in range(args.count):
        print(f"{ADAPTER_PREFIX}{k} at {build_tiny_lora(k, adapter_dir(k, args.base), force=args.force)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
