"""Prompts are built to exact token counts, as the server counts them."""

from pathlib import Path

import numpy as np
import pytest

from llmd_ray.bench.prompts import PromptBuilder, default_tokenizer_path, load_tokenizer
from llmd_ray.bench.testing import cached_test_tokenizer

TINY = default_tokenizer_path("tiny-llama")
KINDS = ["bytelevel", "metaspace"] + (["tiny"] if TINY and (Path(TINY) / "tokenizer.json").exists() else [])


@pytest.fixture(scope="module", params=KINDS)
def builder(request):
    path = TINY if request.param == "tiny" else cached_test_tokenizer(request.param)
    return PromptBuilder(load_tokenizer(path))


@pytest.mark.parametrize("n", [2, 3, 7, 64, 511, 2048])
def test_exact_count(builder, n):
    rng = np.random.default_rng(n)
    for _ in range(3):
        text = builder.text(n, rng)
        assert builder.count(text) == n
        assert len(builder.tok(text)["input_ids"]) == n  # the plain call the server makes


def test_special_overhead_is_counted(builder):
    with_specials = len(builder.tok.encode("some words here"))
    assert builder.special_overhead == with_specials - len(builder.raw_ids("some words here"))
    with pytest.raises(ValueError):
        builder.text(builder.special_overhead, np.random.default_rng(0))


def test_shared_prefix_keeps_prefix_tokens(builder):
    rng = np.random.default_rng(1)
    system = builder.text(300, rng)
    sys_ids = builder.tok.encode(system)
    for _ in range(10):
        full = builder.text(350, rng, prefix=system)
        ids = builder.tok.encode(full)
        assert len(ids) == 350
        assert ids[:300] == sys_ids  # a prefix cache sees the same 300 tokens


def test_no_special_tokens_sampled(builder):
    special = set(builder.tok.all_special_ids)
    assert special.isdisjoint(builder.vocab.tolist())


def test_seeded_and_reproducible(builder):
    a = builder.text(100, np.random.default_rng(7))
    b = builder.text(100, np.random.default_rng(7))
    c = builder.text(100, np.random.default_rng(8))
    assert a == b and a != c


def test_content_and_chat_count(builder):
    content = builder.content(40, np.random.default_rng(3))
    assert len(builder.raw_ids(content)) == 40
    n = builder.chat_count([{"role": "user", "content": content}])
    assert n is not None and n > 40


def test_missing_tokenizer_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--tokenizer"):
        load_tokenizer(str(tmp_path / "nope"))
