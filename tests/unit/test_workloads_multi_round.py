"""Multi-round QA workloads: shared system prompts with Zipf / hot-spot popularity, a mix of prefix lengths,
and the KV working set a config implies."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from llmd_ray.bench.prompts import PromptBuilder, load_tokenizer
from llmd_ray.bench.testing import cached_test_tokenizer
from llmd_ray.workloads.jobs import build_jobs
from llmd_ray.workloads.spec import LengthDist, MultiTurnWorkload, RunSpec
from llmd_ray.workloads.working_set import _Counter, main, working_set

REPO = Path(__file__).resolve().parents[2]
QA = ["multi_round_qa.yaml", "multi_round_qa_hotspot.yaml", "multi_round_qa_prefix_mix.yaml"]


@pytest.fixture(scope="module")
def builder():
    return PromptBuilder(load_tokenizer(cached_test_tokenizer("metaspace")))


def qa(**kw):
    base = dict(num_sessions=12, turns_per_session=3, num_system_prompts=4, system_prompt_len=40,
                question_len=LengthDist(mean=10), output_len=LengthDist(mean=8), think_time_s=1.0)
    return MultiTurnWorkload(**{**base, **kw})


def test_sessions_share_system_prompts(builder):
    jobs = build_jobs(qa(), 12, builder, seed=3)
    assert len({j.session_id for j in jobs}) == 12 and all(j.is_chat for j in jobs)
    by_group: dict[int, set[str]] = {}
    for j in jobs:
        by_group.setdefault(j.group, set()).add(j.system_prompt)
        assert len(builder.raw_ids(j.system_prompt)) == 40
    assert all(len(prompts) == 1 for prompts in by_group.values())  # one text per group...
    assert len({next(iter(p)) for p in by_group.values()}) == len(by_group) > 1  # ...distinct between groups
    assert [t.think_after_s for t in jobs[0].turns][-1] == 0.0


def test_seeded_and_deterministic(builder):
    a, b = (build_jobs(qa(system_prompt_popularity="zipf"), 12, builder, seed=3) for _ in range(2))
    assert [(j.group, j.system_prompt, [t.user_content for t in j.turns]) for j in a] == \
           [(j.group, j.system_prompt, [t.user_content for t in j.turns]) for j in b]
    c = build_jobs(qa(system_prompt_popularity="zipf"), 12, builder, seed=4)
    assert [j.group for j in a] != [j.group for j in c]


@pytest.mark.parametrize("popularity, extra, first_share", [
    ("zipf", {"zipf_exponent": 1.1}, (1 / np.arange(1, 17) ** 1.1 / (1 / np.arange(1, 17) ** 1.1).sum())[0]),
    ("hotspot", {"hotspot_fraction": 0.7}, 0.7),
    ("uniform", {}, 1 / 16),
])
def test_popularity(popularity, extra, first_share):
    w = qa(num_sessions=4000, num_system_prompts=16, system_prompt_popularity=popularity, **extra)
    groups = [j.group for j in build_jobs(w, 4000, _Counter(), seed=1)]
    counts = np.bincount(groups, minlength=16) / 4000
    assert counts[0] == pytest.approx(first_share, abs=0.03)
    if popularity == "zipf":
        assert counts[0] > counts[1] > counts[3] > counts[15]


def test_a_mix_of_prefix_lengths():
    w = qa(num_sessions=200, num_system_prompts=8, system_prompt_len=0, system_prompt_lens=[10, 50, 90])
    jobs = build_jobs(w, 200, _Counter(), seed=2)
    assert {j.system_prompt for j in jobs if j.group == 4} == {50}  # prompt k has lens[k % 3]
    assert {j.system_prompt for j in jobs} == {10, 50, 90}


def test_per_session_system_prompts_unchanged(builder):
    """Without num_system_prompts each session has its own system prompt, as before (same draws)."""
    w = MultiTurnWorkload(num_sessions=3, turns_per_session=2, system_prompt_len=30)
    jobs = build_jobs(w, 3, builder, seed=5)
    assert len({j.system_prompt for j in jobs}) == 3 and all(j.group is None for j in jobs)


@pytest.mark.parametrize("kw", [dict(system_prompt_len=0), dict(num_system_prompts=None, system_prompt_lens=[5])])
def test_invalid(kw):
    with pytest.raises(ValidationError):
        qa(**kw)


def test_working_set_by_hand():
    spec = RunSpec(seed=0, workload=qa(num_sessions=10, num_system_prompts=2, system_prompt_len=256, turns_per_session=2,
                                       question_len=LengthDist(mean=120), output_len=LengthDist(mean=120),
                                       think_time_s=5.0, think_time_distribution="fixed"),
                   load={"rate": 0.5})
    ws = working_set(spec, block_size=128, per_message_tokens=8)
    assert ws.shared_blocks == 2 * ((256 + 8) // 128)  # both prompts are used (10 sessions, uniform)
    # history: 264 system + 2 x (120 + 120 + 16) = 776 tokens -> 6 blocks, 2 of them the system prompt
    assert ws.session_blocks_mean == 4
    assert ws.concurrent_sessions == pytest.approx(0.5 * 5.0)  # rate x think time of the 1st turn (last is 0)
    assert ws.live_blocks == pytest.approx(4 + 2.5 * 4) and ws.total_blocks == 4 + 10 * 4


@pytest.mark.parametrize("name", QA)
def test_the_yaml_workloads_load_and_outgrow_one_replica(name, capsys):
    cfg = yaml.safe_load((REPO / "bench" / "routing" / name).read_text())
    spec = RunSpec.of(cfg)
    assert spec.workload.type == "multi_turn" and spec.workload.num_system_prompts == 16
    ws = working_set(cfg, block_size=128)
    assert 128 < ws.live_blocks <= 256, ws  # larger than one replica's 128 blocks, within 2 replicas'
    assert main([str(REPO / "bench" / "routing" / name), "--blocks-per-replica", "128"]) == 0
    assert "larger than one replica's cache, smaller than the cluster's" in capsys.readouterr().out
