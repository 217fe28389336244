"""Build ``tiny-llama``: a small, random-weight Llama model made fully offline.

llmd-ray's tests, demos and CPU benchmarks need a real Hugging Face model that
vLLM can load, but no model hub is reachable where they run. This module builds
one from nothing:

* a byte-level BPE tokenizer (Llama-3 pre-tokenizer regex, Llama-3 special
  tokens and chat template), trained with the ``tokenizers`` library on text
  shipped in ``llmd_ray/engine/data/`` plus sentences generated from a shipped
  word list with a seeded ``random.Random``;
* a ``LlamaForCausalLM`` (see :class:`TinyLlamaSpec`) whose float32 weights are
  filled from a PCG64 bit stream using integer arithmetic only, so the bytes do
  not depend on the machine, the BLAS library or torch's sampling kernels.

Every run on every machine gives the same ``tokenizer.json`` and
``model.safetensors`` bytes. A 2,000-token prefill takes about half a second on
one CPU core, so prefill cost, prefix caching and P/D disaggregation show up on
CPU-only hosts. The output is meaningless text that rarely hits an end-of-turn
token, so generations usually run to ``max_tokens``.

A second model, ``tiny-llama-b`` (``SPEC_B``: another seed, hidden 256, 2 layers,
vocab 3072, so its weights and token ids differ), serves multi-model apps.

Usage: ``python -m llmd_ray.engine.tiny [--name tiny-llama-b] --out DIR [--force]``.
Serving configs name them ``model: tiny-llama`` (or ``tiny-llama-b``);
``llmd_ray.engine.models.resolve_model`` builds them on first use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
import zlib
from pathlib import Path

TINY_MODEL_NAME = "tiny-llama"
MODEL_DIR_ENV = "LLMD_RAY_MODEL_DIR"
BUILD_VERSION = 1  # bump when the build recipe changes; older builds are then rebuilt
BUILD_MARKER = ".llmd_ray_build.json"  # written last; its presence means "complete"
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors",
                  "tokenizer.json", "tokenizer_config.json")
DATA_DIR = Path(__file__).with_name("data")

BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
START_HEADER, END_HEADER, PAD = "<|start_header_id|>", "<|end_header_id|>", "<|finetune_right_pad_id|>"
SPECIAL_TOKENS = (BOS, EOS, START_HEADER, END_HEADER, EOT, PAD)

SPLIT_PATTERN = (  # Llama-3's pre-tokenizer regex
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama-3-style chat template (string content, no tools).
CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + (message['content'] or '') | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


@dataclasses.dataclass(frozen=True, slots=True)
class TinyLlamaSpec:
    """Architecture and recipe of the tiny model; every field affects the output bytes."""

    vocab_size: int = 4096  # tokenizer length == vocab_size exactly
    hidden_size: int = 384
    intermediate_size: int = 1024
    num_hidden_layers: int = 3
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    max_position_embeddings: int = 8192
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    init_std: float = 0.02
    seed: int = 20240601
    generated_sentences: int = 6000


SPEC = TinyLlamaSpec()
SPEC_B = TinyLlamaSpec(vocab_size=3072, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, seed=20240602)
TINY_MODELS = {TINY_MODEL_NAME: SPEC, "tiny-llama-b": SPEC_B}  # name -> spec: models resolve_model builds


def default_model_dir(name: str = TINY_MODEL_NAME) -> Path:
    """``$LLMD_RAY_MODEL_DIR`` (tiny-llama's directory; other tiny models are its siblings) if set, else
    ``~/.cache/llmd_ray/models/<name>``."""
    env = os.environ.get(MODEL_DIR_ENV)
    base = Path(env).expanduser() if env else Path.home() / ".cache/llmd_ray/models" / TINY_MODEL_NAME
    return base if name == TINY_MODEL_NAME else base.with_name(name)


def is_complete(model_dir: str | os.PathLike[str], spec: TinyLlamaSpec = SPEC) -> bool:
    """True if ``model_dir`` holds a finished build of this recipe and spec."""
    path = Path(model_dir)
    try:
        marker = json.loads((path / BUILD_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == _marker(spec) and all((path / name).is_file() for name in REQUIRED_FILES)


def build_tiny_model(out_dir: str | os.PathLike[str], *, force: bool = False, spec: TinyLlamaSpec = SPEC) -> Path:
    """Build the tiny model into ``out_dir`` (kept if complete, unless ``force``).

    Files go to a temporary sibling directory that is renamed into place, so
    ``out_dir`` is never half written. A non-empty directory that is not a
    tiny-llama build is only replaced with ``force``. Returns the absolute path.
    """
    out = Path(out_dir).expanduser().absolute()
    if not force and is_complete(out, spec):
        return out
    if not force and out.exists() and any(out.iterdir()) and not (out / BUILD_MARKER).exists():
        raise FileExistsError(f"{out} exists and is not a {TINY_MODEL_NAME} build; use force")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        _write_model(staging, spec)
        if force or not is_complete(out, spec):  # another process may have finished meanwhile
            _install(staging, out, spec)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _marker(spec: TinyLlamaSpec) -> dict:
    return {"build_version": BUILD_VERSION, "spec": dataclasses.asdict(spec)}


def _install(staging: Path, out: Path, spec: TinyLlamaSpec = SPEC) -> None:
    """Rename a finished ``staging`` build to ``out``, replacing what is there."""
    install_build(staging, out, lambda: is_complete(out, spec))


def install_build(staging: Path, out: Path, complete) -> None:
    """Rename a finished ``staging`` build to ``out``, replacing what is there; ``complete()`` tells whether a
    concurrent builder's ``out`` that won the rename is finished (then that is fine). Shared by tiny_lora."""
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        if out.exists():
            os.rename(out, trash / "old")
        try:
            os.rename(staging, out)
        except OSError:
            if not complete():  # a concurrent builder that finished first is fine
                raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _load_word_lists() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in (DATA_DIR / "tiny_words.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif line and not line.startswith("#") and current is not None:
            current.extend(line.split())
    return sections


# Sentence shapes for the generated half of the corpus (prose, dialogue, JSON).
_TEMPLATES = (
    "The {adjective} {noun} {verb_past} {preposition} the {noun2}.",
    "{name} {verb_past} the {adjective} {noun} in {place} {adverb}.",
    "Why did {name} {verb} the {noun} {preposition} the {adjective} {noun2}?",
    "In {year}, {name} and {name2} {verb_past} {number} {unit} of {noun}.",
    '"I will {verb} the {noun} {adverb}," said {name}. "It is {adjective}."',
    "Note from {name}: {verb} {number} {unit} ({adjective}, {place}).",
    '{{"user": "{name}", "city": "{place}", "item": "{noun}", "count": {number}, "ok": true}}',
    "We {adverb} {verb} the {adjective} {noun} when the {noun2} is {adjective2}.",
)


def _generated_text(seed: int, count: int) -> str:
    """Seeded pseudo-English; ``random.Random`` streams are stable across Pythons."""
    words = _load_word_lists()
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        fields = {key: rng.choice(values) for key, values in words.items()}
        fields.update(noun2=rng.choice(words["noun"]), adjective2=rng.choice(words["adjective"]),
                      name2=rng.choice(words["name"]), number=rng.randrange(1, 5000),
                      year=rng.randrange(1850, 2030))
        sentences.append(rng.choice(_TEMPLATES).format(**fields))
    return "\n\n".join(" ".join(sentences[i:i + 6]) for i in range(0, len(sentences), 6)) + "\n"


def _train_tokenizer(spec: TinyLlamaSpec):
    """Byte-level BPE with Llama-3 specials; its length is exactly ``spec.vocab_size``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(SPECIAL_TOKENS), min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = (DATA_DIR / "tiny_corpus.txt").read_text(encoding="utf-8")
    tokenizer.train_from_iterator([corpus, _generated_text(spec.seed, spec.generated_sentences)], trainer)
    # Specials follow the learned tokens, as in Llama 3; reserved ones fill any gap.
    fillers = [f"<|reserved_special_token_{i}|>"
               for i in range(spec.vocab_size - len(SPECIAL_TOKENS) - tokenizer.get_vocab_size())]
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS) + fillers)
    tokenizer.post_processor = processors.TemplateProcessing(  # prepend BOS, as Llama 3 does
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS}:1 $B:1",
        special_tokens=[(BOS, tokenizer.token_to_id(BOS))])
    assert tokenizer.get_vocab_size() == spec.vocab_size
    return tokenizer


def _fill_weights(model, spec: TinyLlamaSpec) -> None:
    """Overwrite every tensor with machine-independent values.

    Norm weights are 1; the rest is uniform with std ``init_std`` from a PCG64
    stream seeded by (seed, crc32(name)), made float32 by exact integer steps
    and one IEEE multiply, so no libm or vectorised sampler is involved.
    """
    import numpy as np
    import torch

    bound = np.float32(spec.init_std * 3 ** 0.5)
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if name.endswith("norm.weight"):
                tensor.fill_(1.0)
                continue
            bits = np.random.PCG64([spec.seed, zlib.crc32(name.encode())]).random_raw(tensor.numel())
            unit = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1.0)
            tensor.copy_(torch.from_numpy(unit * bound).reshape(tensor.shape))


def _write_model(out: Path, spec: TinyLlamaSpec) -> None:
    """Write config, weights, tokenizer and the completion marker into ``out``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = _train_tokenizer(spec)
    ids = {token: raw.token_to_id(token) for token in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=BOS, eos_token=EOT, pad_token=PAD,
        model_max_length=spec.max_position_embeddings, chat_template=CHAT_TEMPLATE)
    tokenizer.save_pretrained(out, save_jinja_files=False)  # template into tokenizer_config
    # transformers 5 records its own class name ("TokenizersBackend"); keep 4.x able to load it.
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")

    config = LlamaConfig(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads, num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.hidden_size // spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings, rope_theta=spec.rope_theta,
        rms_norm_eps=spec.rms_norm_eps, initializer_range=spec.init_std, tie_word_embeddings=False,
        bos_token_id=ids[BOS], eos_token_id=[ids[EOT], ids[EOS]], pad_token_id=ids[PAD],
        torch_dtype="float32")
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    _fill_weights(model, spec)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=[ids[EOT], ids[EOS]], pad_token_id=ids[PAD])
    model.save_pretrained(out)  # safetensors is the default (and only) format
    for path in [*out.iterdir(), out]:  # mkdtemp and some writers use owner-only modes
        path.chmod(0o755 if path.is_dir() else 0o644)
    (out / BUILD_MARKER).write_text(json.dumps(_marker(spec), indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=TINY_MODEL_NAME, choices=sorted(TINY_MODELS), help="which tiny model")
    parser.add_argument("--out", type=Path, help="output directory (default: ~/.cache/llmd_ray/models/<name>)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in CLI output
    out, started, spec = args.out or default_model_dir(args.name), time.perf_counter(), TINY_MODELS[args.name]
    action = "kept existing" if is_complete(out, spec) and not args.force else "built"
    path = build_tiny_model(out, force=args.force, spec=spec)
    print(f"{action} {args.name} at {path} ({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
