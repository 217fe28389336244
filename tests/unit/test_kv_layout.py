"""KV layouts: whole-block gathers/scatters and conversion between the CPU and split layouts."""

import numpy as np
import pytest

from llmd_ray.kv.layout import KVLayout, convert, gather_blocks, join_kv, scatter_blocks, split_kv

H, BS, D, NB = 2, 8, 4, 6
CPU = KVLayout("cpu", H, BS, D, "float32", "vec")
SPLIT = KVLayout("kv_split", H, BS, D, "float32", "")


def cpu_cache(seed=0):
    return np.random.default_rng(seed).standard_normal(CPU.cache_shape(NB)).astype(np.float32)


def test_infer_layouts_from_cache_shapes():
    assert KVLayout.infer((NB, H, BS, 2 * D), NB, BS, "float32") == KVLayout("cpu", H, BS, D, "float32")
    assert KVLayout.infer((2, NB, BS, H, D), NB, BS, "float32").kind == "kv_split"
    with pytest.raises(ValueError):
        KVLayout.infer((NB, H, BS), NB, BS, "float32")


def test_block_bytes_of_the_tiny_model():
    tiny = KVLayout("cpu", 2, 128, 64, "float32")
    assert tiny.block_nbytes == 2 * 128 * 2 * 64 * 4 == 131072


def test_cpu_layout_puts_k_rows_before_v_rows():
    # vLLM views a (block, head) as [2 * block_size, head_size]: rows [0, bs) are K, [bs, 2bs) are V.
    cache = cpu_cache()
    k, v = split_kv(cache, CPU)
    rows = cache.reshape(NB, H, 2 * BS, D)
    np.testing.assert_array_equal(k, rows[:, :, :BS])
    np.testing.assert_array_equal(v, rows[:, :, BS:])
    np.testing.assert_array_equal(join_kv(k, v, CPU), cache)


def test_gather_then_scatter_moves_whole_blocks():
    src, dst = cpu_cache(1), np.zeros(CPU.cache_shape(NB), np.float32)
    blocks = gather_blocks(src, [4, 1, 3], CPU)
    assert blocks.shape == (3, *CPU.block_shape) and blocks.flags.c_contiguous
    scatter_blocks(dst, [0, 5, 2], blocks, CPU)
    np.testing.assert_array_equal(dst[[0, 5, 2]], src[[4, 1, 3]])
    assert not dst[[1, 3, 4]].any()  # nothing else touched


def test_gather_into_a_preallocated_buffer():
    src = cpu_cache(2)
    out = np.empty((2, *CPU.block_shape), np.float32)
    gather_blocks(src, [5, 0], CPU, out=out)
    np.testing.assert_array_equal(out, src[[5, 0]])


def test_convert_cpu_to_split_and_back_preserves_k_and_v():
    cache = cpu_cache(3)
    blocks = gather_blocks(cache, [0, 2], CPU)
    as_split = convert(blocks, CPU, SPLIT)
    assert as_split.shape == (2, *SPLIT.block_shape)
    k_cpu, v_cpu = split_kv(blocks, CPU)
    k_split, v_split = split_kv(as_split, SPLIT)
    np.testing.assert_array_equal(k_cpu, k_split)
    np.testing.assert_array_equal(v_cpu, v_split)
    np.testing.assert_array_equal(convert(as_split, SPLIT, CPU), blocks)


def test_split_layout_scatter_gather_roundtrip():
    split_cache = np.zeros(SPLIT.cache_shape(NB), np.float32)
    blocks = convert(gather_blocks(cpu_cache(4), [1, 2, 3], CPU), CPU, SPLIT)
    scatter_blocks(split_cache, [3, 4, 5], blocks, SPLIT)
    np.testing.assert_array_equal(gather_blocks(split_cache, [3, 4, 5], SPLIT), blocks)


def test_incompatible_layouts_are_refused():
    packed = KVLayout("cpu", H, BS, D, "float32", "amx")  # K packed by another ISA: not plain rows
    assert not packed.compatible(CPU) and packed.compatible(packed)
    assert not CPU.compatible(KVLayout("cpu", H, BS, D, "bfloat16", "vec"))
    with pytest.raises(ValueError):
        convert(np.zeros((1, *CPU.block_shape), np.float32), packed, SPLIT)
    with pytest.raises(ValueError):
        scatter_blocks(cpu_cache(), [0], np.zeros((2, *CPU.block_shape), np.float32), CPU)


def test_layout_dict_roundtrip():
    assert KVLayout.from_dict(CPU.to_dict()) == CPU
