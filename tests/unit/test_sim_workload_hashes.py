"""The simulator's block hashes: whole blocks hashed directly give the hashes of the piece-by-piece chain."""

import random

from llmd_ray.sim import workload
from llmd_ray.sim.workload import SimJob, SimTurn, SynthText, block_hashes, prehash


def reference(text: SynthText, bs: int) -> tuple[int, ...]:
    """The chain block by block, piece by piece (the algorithm before the whole-block shortcut)."""
    out, pieces, fill, prev = [], [], 0, 0
    for uid, n in text:
        off = 0
        while off < n:
            take = min(n - off, bs - fill)
            pieces.append((uid, off, take))
            off += take
            fill += take
            if fill == bs:
                prev = hash((prev, tuple(pieces)))
                out.append(prev)
                pieces, fill = [], 0
    return tuple(out)


def test_block_hashes_equal_the_piece_by_piece_chain():
    rng = random.Random(1)
    for _ in range(3000):
        text = SynthText(tuple((rng.randrange(1, 50), rng.choice([0, 1, 3, 5, 8, 16, 17, 33, 50]))
                               for _ in range(rng.randrange(0, 5))))
        bs = rng.choice([1, 4, 8, 16])
        if rng.random() < 0.5:
            workload._STATE.clear()  # with and without the memoised prefixes
        assert block_hashes(text, bs) == reference(text, bs)


def test_prehash_stores_the_prompts_hashes():
    prompt = SynthText(((7, 40), (9, 21)))
    jobs = [SimJob(0, 0.0, [SimTurn(prompt, None, 5, 0.0), SimTurn(None, SynthText(((3, 4),)), 5, 0.0)])]
    prehash(jobs, 16)
    assert jobs[0].turns[0].prehashed == (16, reference(prompt, 16)) and jobs[0].turns[1].prehashed is None
