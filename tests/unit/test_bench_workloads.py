"""Workloads: lengths, groups, sessions, seeds and salts."""

import numpy as np
import pytest

from llmd_ray.workloads.spec import LengthDist, MultiTurnWorkload, RandomWorkload, SharedPrefixWorkload, default_count
from llmd_ray.bench.prompts import PromptBuilder, load_tokenizer
from llmd_ray.bench.testing import cached_test_tokenizer
from llmd_ray.workloads.jobs import build_jobs, draw_lengths, group_sequence, warmup_jobs


@pytest.fixture(scope="module")
def builder():
    return PromptBuilder(load_tokenizer(cached_test_tokenizer("metaspace")))


def test_length_distributions():
    rng = np.random.default_rng(0)
    assert set(draw_lengths(LengthDist(mean=100), 50, rng)) == {100}
    u = draw_lengths(LengthDist(mean=100, distribution="uniform", range_ratio=0.5), 5000, rng)
    assert u.min() >= 50 and u.max() <= 150 and abs(u.mean() - 100) < 2
    for dist in ("normal", "lognormal"):
        x = draw_lengths(LengthDist(mean=200, distribution=dist, std_ratio=0.3), 20000, rng)
        assert abs(x.mean() - 200) < 4 and abs(x.std() / 200 - 0.3) < 0.03
    c = draw_lengths(LengthDist(mean=10, distribution="normal", std_ratio=2, min=5, max=12), 1000, rng)
    assert c.min() >= 5 and c.max() <= 12


def test_random_jobs_exact_lengths(builder):
    w = RandomWorkload(num_requests=12, input_len=LengthDist(mean=64, distribution="uniform", range_ratio=0.5),
                       output_len=LengthDist(mean=16))
    jobs = build_jobs(w, 12, builder, seed=3)
    for j in jobs:
        (t,) = j.turns
        assert builder.count(t.prompt) == t.expected_input_tokens
        assert 32 <= t.expected_input_tokens <= 96 and t.max_tokens == 16
    assert len({j.turns[0].expected_input_tokens for j in jobs}) > 3


def test_uniform_shared_prefix_sends_each_prompt_once(builder):
    w = SharedPrefixWorkload(num_groups=3, prompts_per_group=4, system_prompt_len=120, question_len=20, output_len=8)
    jobs = build_jobs(w, default_count(w), builder, seed=1)
    assert len(jobs) == 12
    assert sorted((j.group, j.meta["question"]) for j in jobs) == [(g, q) for g in range(3) for q in range(4)]
    assert len({j.turns[0].prompt for j in jobs}) == 12
    for j in jobs:
        ids = builder.tok.encode(j.turns[0].prompt)
        assert len(ids) == 140
    by_group = {}
    for j in jobs:
        by_group.setdefault(j.group, []).append(builder.tok.encode(j.turns[0].prompt)[:120])
    for prefixes in by_group.values():  # same 120 prefix tokens inside a group, different across
        assert all(p == prefixes[0] for p in prefixes)
    assert len({tuple(p[0]) for p in by_group.values()}) == 3


def test_zipf_popularity_is_skewed():
    w = SharedPrefixWorkload(num_groups=8, prompts_per_group=2, group_popularity="zipf", zipf_exponent=1.2)
    seq = group_sequence(w, 4000, np.random.default_rng(0))
    counts = np.bincount([g for g, _ in seq], minlength=8)
    assert counts[0] > counts[1] > counts[3] > counts[7]
    expected = (1 / np.arange(1, 9) ** 1.2) / (1 / np.arange(1, 9) ** 1.2).sum()
    assert np.allclose(counts / 4000, expected, atol=0.03)
    firsts = [q for g, q in seq if g == 0][:4]
    assert firsts == [0, 1, 0, 1]  # a group cycles through its questions


def test_multi_turn_sessions(builder):
    w = MultiTurnWorkload(num_sessions=3, turns_per_session=4, system_prompt_len=30, question_len=LengthDist(mean=20),
                          think_time_s=0.5, think_time_distribution="fixed")
    jobs = build_jobs(w, 3, builder, seed=5)
    assert len({j.session_id for j in jobs}) == 3 and all(j.is_chat for j in jobs)
    for j in jobs:
        assert len(j.turns) == 4 and len(builder.raw_ids(j.system_prompt)) == 30
        assert [t.think_after_s for t in j.turns] == [0.5, 0.5, 0.5, 0.0]
        assert all(len(builder.raw_ids(t.user_content)) == 20 for t in j.turns)


def test_salt_changes_content_not_shape(builder):
    w = RandomWorkload(num_requests=5, input_len=LengthDist(mean=50, distribution="uniform", range_ratio=0.4))
    a, b, a2 = (build_jobs(w, 5, builder, seed=9, salt=s) for s in (0, 1, 0))
    assert [j.turns[0].prompt for j in a] == [j.turns[0].prompt for j in a2]
    assert [j.turns[0].expected_input_tokens for j in a] == [j.turns[0].expected_input_tokens for j in b]
    assert all(x.turns[0].prompt != y.turns[0].prompt for x, y in zip(a, b))


def test_warmup_prompts_differ_from_workload(builder):
    w = RandomWorkload(num_requests=3)
    warm = warmup_jobs(w, 2, builder, seed=0)
    real = {j.turns[0].prompt[:30] for j in build_jobs(w, 3, builder, seed=0)}
    assert len(warm) == 2 and not ({j.turns[0].prompt[:30] for j in warm} & real)


def test_hotspot_popularity_sends_the_stated_share_to_group_zero():
    import numpy as np

    from llmd_ray.workloads.jobs import group_sequence
    from llmd_ray.workloads.spec import SharedPrefixWorkload

    w = SharedPrefixWorkload(num_groups=8, prompts_per_group=4, group_popularity="hotspot", hotspot_fraction=0.7)
    seq = group_sequence(w, 4000, np.random.default_rng(0))
    share = sum(1 for g, _ in seq if g == 0) / len(seq)
    assert 0.67 < share < 0.73
    assert {g for g, _ in seq} == set(range(8))
