"""Block planning: which blocks a prefill exports and a decode imports."""

import subprocess
import sys

import pytest

from llmd_ray.kv.plan import BlockRange, block_slots, plan_export, plan_import, transferable_blocks

BS = 128


@pytest.mark.parametrize(
    "tokens, blocks",
    [(0, 0), (1, 0), (127, 0), (128, 0), (129, 1), (255, 1), (256, 1), (257, 2), (2000, 15), (4096, 31)],
)
def test_transferable_blocks_never_include_the_last_tokens_block(tokens, blocks):
    assert transferable_blocks(tokens, BS) == blocks


def test_export_skips_what_decode_caches():
    assert plan_export(2000, BS) == BlockRange(0, 15)
    assert plan_export(2000, BS, decode_cached_blocks=12) == BlockRange(12, 3)
    assert plan_export(2000, BS, decode_cached_blocks=40) == BlockRange(15, 0)  # all cached: nothing moves
    assert plan_export(100, BS) == BlockRange(0, 0)
    with pytest.raises(ValueError):
        plan_export(100, BS, decode_cached_blocks=-1)


def test_import_loads_only_missing_blocks():
    handoff = BlockRange(0, 15)
    p = plan_import(2000, BS, 0, handoff)
    assert (p.outcome, p.blocks, p.offset, p.num_tokens(BS)) == ("load", BlockRange(0, 15), 0, 1920)
    p = plan_import(2000, BS, 5 * BS, handoff)  # decode already holds 5 blocks
    assert (p.outcome, p.blocks, p.offset) == ("load", BlockRange(5, 10), 5)


def test_import_from_a_partial_handoff():
    handoff = BlockRange(12, 3)  # the prefill skipped 12 blocks it was told decode caches
    p = plan_import(2000, BS, 12 * BS, handoff)
    assert (p.outcome, p.blocks, p.offset) == ("load", BlockRange(12, 3), 0)
    p = plan_import(2000, BS, 13 * BS, handoff)
    assert (p.outcome, p.blocks, p.offset) == ("load", BlockRange(13, 2), 1)
    # The local cache lost blocks since the estimate: the gap cannot be filled from this handoff.
    assert plan_import(2000, BS, 4 * BS, handoff).outcome == "gap"
    assert plan_import(2000, BS, 15 * BS, handoff).outcome == "covered"
    assert plan_import(2000, BS, 0, BlockRange(0, 0)).outcome == "empty"


def test_import_never_covers_the_last_token_block():
    # A handoff claiming more blocks than the prompt allows is clipped.
    p = plan_import(256, BS, 0, BlockRange(0, 2))
    assert p.blocks == BlockRange(0, 1)


def test_block_slots_maps_prompt_blocks_to_physical_ids():
    assert block_slots([7, 3, 9, 4], BlockRange(1, 2)) == [3, 9]
    with pytest.raises(ValueError):
        block_slots([7, 3], BlockRange(1, 2))


def test_block_range_validates():
    with pytest.raises(ValueError):
        BlockRange(-1, 2)
    assert BlockRange(3, 2).end == 5 and len(BlockRange(3, 2)) == 2


def test_pure_modules_import_no_torch_vllm_or_ray():
    code = (
        "import sys, llmd_ray.kv.plan, llmd_ray.kv.layout, llmd_ray.pd.handoff, llmd_ray.pd.shm, "
        "llmd_ray.pd.decider, llmd_ray.pd.config; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'vllm', 'torch')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
