"""Variants of the aggregated app: the per-request choice, the args' validation, and the dispatch
stream (re-sent while a variant has no running replica), with fake handles (no Ray)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pydantic import ValidationError

from llmd_ray.engine.config import EngineConfig
from llmd_ray.errors import EngineDeadError
from llmd_ray.serving import retry
from llmd_ray.serving.dispatch import VariantDispatcher, VariantStream
from llmd_ray.serving.retry import RetryingStream
from llmd_ray.serving.variants import VariantLoad, choose_variant, stranded
from llmd_ray.topology import Variant, deployment_name, pd_groups, resolve_engines

VARIANTS_YAML = Path(__file__).resolve().parents[2] / "serve_configs" / "variants.yaml"


def loads(*spec):
    return [VariantLoad(f"v{i}", running, out) for i, (running, out) in enumerate(spec)]


@pytest.mark.parametrize("spec, want", [
    ([(1, 0), (1, 0)], 0),  # tie: the first (cheapest) variant
    ([(1, 1), (1, 0)], 1),  # fewer outstanding
    ([(2, 2), (1, 1)], 0),  # per running replica: 3/2 < 2/1
    ([(1, 3), (4, 9)], 1),  # 10/4 < 4/1
    ([(1, 1), (2, 3)], 0),  # 2/1 < 4/2 would tie at 2: the first
    ([(0, 0), (1, 5)], 1),  # no running replica: skipped, however idle
    ([(1, 5), (0, 0)], 0),
    ([(0, 0), (0, 0)], 0),  # none running: the first holds it until a replica is up
    ([(None, 0), (None, 1)], 0),  # counts not known yet: unknown counts as one replica
    ([(None, 2), (None, 0)], 1),
    ([(None, 0), (1, 0)], 1),  # a known running variant beats an unknown one
    ([(0, 0), (None, 4), (0, 0)], 1),
    ([(1, 0)], 0),
])
def test_choose_variant(spec, want):
    assert choose_variant(loads(*spec)) == want


def test_choose_variant_needs_a_variant():
    with pytest.raises(ValueError):
        choose_variant([])


@pytest.mark.parametrize("spec, index, want", [
    ([(0, 1), (1, 0)], 0, True),  # its variant went to zero, another runs: move it
    ([(0, 1), (0, 0)], 0, False),  # nowhere better to go
    ([(0, 1), (None, 0)], 0, False),  # the other's count is unknown
    ([(1, 1), (1, 0)], 0, False),
    ([(None, 1), (1, 0)], 0, False),
])
def test_stranded(spec, index, want):
    assert stranded(loads(*spec), index) is want


BASE = EngineConfig(model="tiny-llama", max_model_len=4096)


@pytest.mark.parametrize("variants, field", [
    ([{"name": "a"}, {"name": "a"}], "duplicate names"),
    ([{"name": "A"}], "name"),  # lower-case DNS-like names only
    ([{"name": "a_b"}], "name"),
    ([{"name": "a", "engine": {"max_num_seqs": 0}}], "variants.0.engine.max_num_seqs"),
    ([{"name": "a"}, {"name": "b", "engine": {"no_such_field": 1}}], "variants.1.engine.no_such_field"),
    ([{"name": "a", "engine": {"max_model_len": 2048}}], "engine.max_model_len"),  # shared by the ingress
    ([{"name": "a", "engine": {"model": "other"}}], "engine.model"),
    ([{"name": "a", "min_replicas": 2, "max_replicas": 1}], "min_replicas"),
    ([{"name": "a", "min_replicas": 0, "max_replicas": 2, "initial_replicas": 3}], "initial_replicas"),
    ([{"name": "a", "max_replicas": 0}], "max_replicas"),
    ([{"name": "a", "num_replicas": 2, "max_replicas": 2}], "num_replicas"),
    ([{"name": "a", "num_replicas": 0}], "num_replicas"),  # zero needs bounds with min 0
    ([{"name": "a", "replica_num_cpus": -1}], "replica_num_cpus"),
    ([{"name": "a", "accelerators": "L4"}], "accelerators"),  # extra fields are rejected
    ([{"name": "a", "autoscaling": {"min_replicas": 1}}], "autoscaling: no longer a variant field: write min_replicas"),
    ([{"name": "a", "deployment": "X"}], "deployment: no longer a variant field"),
    ([{"name": "a", "role": "decode"}], "decode variant 'a' has no prefill variant"),
    ([{"name": "p", "role": "prefill"}, {"name": "d", "role": "decode", "pd_group": "g"}], "prefill variant 'p' has no decode"),
    ([{"name": "p", "role": "prefill"}, {"name": "q", "role": "prefill"}, {"name": "d", "role": "decode"}],
     "one per group"),
])
def test_bad_variants_name_the_field(variants, field):
    with pytest.raises((ValidationError, ValueError), match=field):
        vs = [Variant.model_validate(v) for v in variants]
        pd_groups(vs)
        resolve_engines(BASE, vs)


def test_variant_engines_merge_over_the_app_engine():
    a, b = (Variant.model_validate(v) for v in (
        {"name": "cpu-a", "engine": {"max_num_seqs": 16, "cpu_bind": "0"}, "min_replicas": 1},
        {"name": "cpu-b", "engine": {"cpu_bind": "1"}, "min_replicas": 0, "max_replicas": 3}))
    ea, eb = resolve_engines(BASE, [a, b])
    assert (ea.cpu_bind, ea.max_num_seqs, eb.cpu_bind, eb.max_num_seqs) == ("0", 16, "1", BASE.max_num_seqs)
    assert ea.max_model_len == eb.max_model_len == 4096
    assert deployment_name("cpu-b") == "LLMServer-cpu-b" == b.deployment_name
    assert (a.min_replicas, a.max_replicas, a.autoscaled) == (1, 1, True)
    assert b.serve_autoscaling_config() == {"min_replicas": 0, "max_replicas": 3, "upscale_delay_s": 0.0,
                                            "downscale_delay_s": 0.0, "metrics_interval_s": 2.0}
    fixed = Variant(name="f", num_replicas=2)
    assert (fixed.min_replicas, fixed.max_replicas, fixed.autoscaled) == (2, 2, False)
    assert Variant.model_validate(fixed.model_dump()) == fixed  # what travels to the policy reads back


def test_p_d_groups_pair_prefill_and_decode():
    vs = [Variant(name="p", role="prefill"), Variant(name="d1", role="decode"), Variant(name="d2", role="decode"),
          Variant(name="agg")]
    (g,) = pd_groups(vs).values()
    assert (g.prefill, g.decode) == ("p", ["d1", "d2"])


def test_variants_yaml_declares_each_variant_once_and_the_policy_only_knobs():
    """The variants live in the app's args alone; the policy's kwargs carry knobs (the policy reads the
    topology from the app: tests/component/test_autoscaling_policy.py)."""
    from llmd_ray.autoscaling.config import AutoscalerConfig

    (app,) = yaml.safe_load(VARIANTS_YAML.read_text())["applications"]
    args = [Variant.model_validate(v) for v in app["args"]["variants"]]
    engines = resolve_engines(EngineConfig.model_validate(app["args"]["engine"]), args)
    assert [e.cpu_bind for e in engines] == ["0", "1"]  # one core each
    assert engines[0].max_num_seqs != engines[1].max_num_seqs
    policy = app["autoscaling_policy"]
    assert policy["policy_function"] == "llmd_ray.autoscaling.policy:VariantAutoscalingPolicy"
    assert not {"variants", "classes", "qos"} & set(policy["policy_kwargs"])
    cfg = AutoscalerConfig.model_validate({**policy["policy_kwargs"], "variants": args, "qos": app["args"]["qos"]})
    for v in cfg.variants:
        assert (Path(__file__).resolve().parents[2] / "llmd_ray/autoscaling/profiles" / f"{v.profile}.json").exists()
    assert min(v.min_replicas for v in args) == 0  # one variant can scale to zero
    assert cfg.classes[-1].ttft_ms == 1000 * app["args"]["qos"]["classes"]["interactive"]["ttft_objective_s"]


# ------------------------------------------------------------- dispatch stream


def chunk(text: str, finished: bool = False):
    return SimpleNamespace(text=text, finished=finished)


class FakeGen:
    """A handle call's stream: scripted chunks/exceptions; ``None`` blocks (no replica to run it)."""

    def __init__(self, items):
        self.items = list(items)
        self.cancelled = False

    async def __anext__(self):
        if not self.items:
            raise StopAsyncIteration
        item = self.items.pop(0)
        if item is None:
            await asyncio.Event().wait()  # until cancelled
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self):
        self.cancelled = True


class FakeHandle:
    def __init__(self, *scripts):
        self.scripts = list(scripts)
        self.calls: list[FakeGen] = []
        self.generate = SimpleNamespace(remote=self._remote)

    def options(self, **_):
        return self

    def _remote(self, request):
        gen = FakeGen(self.scripts.pop(0) if self.scripts else [chunk("x", True)])
        self.calls.append(gen)
        return gen


REQ = SimpleNamespace(request_id="r1")


def dispatcher(running, **handles):
    d = VariantDispatcher(handles, fetch=None, poll_s=0.02)
    d.running = list(running)
    return d


async def test_requests_spread_and_outstanding_counts_follow_streams():
    a, b = FakeHandle([chunk("a"), chunk("a", True)]), FakeHandle([chunk("b"), chunk("b", True)])
    d = dispatcher([1, 1], a=a, b=b)
    s1, s2 = d.stream(REQ), d.stream(REQ)
    assert (s1.variant, s2.variant, d.outstanding) == ("a", "b", [1, 1])
    assert (await s1.__anext__()).text == "a" and d.outstanding == [1, 1]
    assert (await s1.__anext__()).finished and d.outstanding == [0, 1]  # released on the final chunk
    s2.cancel()
    assert b.calls[0].cancelled and d.outstanding == [0, 0]
    s2.cancel()  # idempotent
    assert d.outstanding == [0, 0] and d.sent == [1, 1]


async def test_a_request_waiting_on_a_variant_scaled_to_zero_moves_to_a_running_one():
    a, b = FakeHandle([None]), FakeHandle([chunk("b", True)])
    d = dispatcher([1, 1], a=a, b=b)
    s = d.stream(REQ)
    assert s.variant == "a"
    task = asyncio.ensure_future(s.__anext__())
    await asyncio.sleep(0.1)
    assert not task.done()  # still waiting on a: its count says it runs
    d.running = [0, 1]  # the poll sees a at zero
    got = await asyncio.wait_for(task, 2)
    assert got.text == "b" and s.variant == "b" and s.redispatches == 1 and d.redispatched == 1
    assert a.calls[0].cancelled and d.outstanding == [0, 0]


async def test_no_move_when_no_other_variant_runs():
    a, b = FakeHandle([None, chunk("a", True)]), FakeHandle()
    d = dispatcher([0, 0], a=a, b=b)
    task = asyncio.ensure_future(d.stream(REQ).__anext__())
    await asyncio.sleep(0.1)
    assert not task.done() and len(a.calls) == 1 and not b.calls  # waits for a cold start
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert d.outstanding == [0, 0]


async def test_replica_death_before_the_first_chunk_is_retried_on_a_fresh_pick(monkeypatch):
    monkeypatch.setattr(retry, "RETRY_BACKOFF_S", (0.0,))
    a = FakeHandle([EngineDeadError("engine died")])
    b = FakeHandle([chunk("b", True)])
    d = dispatcher([1, 1], a=a, b=b)
    s = d.stream(REQ)
    d.running = [0, 1]  # a's replica is gone
    got = await s.__anext__()
    assert got.text == "b" and s.retries == 1 and d.outstanding == [0, 0] and d.sent == [1, 1]


async def test_errors_after_the_first_chunk_reach_the_caller_and_release():
    a = FakeHandle([chunk("a"), EngineDeadError("died mid-stream")])
    d = dispatcher([1, 1], a=a, b=FakeHandle())
    s = d.stream(REQ)
    await s.__anext__()
    with pytest.raises(EngineDeadError):
        await s.__anext__()
    assert d.outstanding == [0, 0]


async def test_one_variant_is_the_plain_retrying_stream():
    d = VariantDispatcher({"default": FakeHandle([chunk("x", True)])})
    s = d.stream(REQ)
    assert isinstance(s, RetryingStream) and not isinstance(s, VariantStream)
    assert (await s.__anext__()).finished


async def test_poll_updates_running_counts_and_survives_failures():
    counts = iter([{"a": 0, "b": 2}, RuntimeError("controller busy"), {"a": 1}])

    def fetch():
        c = next(counts)
        if isinstance(c, Exception):
            raise c
        return c

    d = VariantDispatcher({"a": FakeHandle(), "b": FakeHandle()}, fetch=fetch, poll_s=0.01)
    await d.poll_once()
    assert d.running == [0, 2] and d.pick() == 1
    with pytest.raises(RuntimeError):
        await d.poll_once()
    await d.poll_once()
    assert d.running == [1, 2]
    assert d.status()["b"] == {"accelerator": None, "running": 2, "outstanding": 0, "sent": 0}


# ------------------------------------------------------------- readiness (/health)


class StatsHandle(FakeHandle):
    """``stats`` answers once ``up`` is set; until then the call waits, as a handle does for a replica."""

    def __init__(self):
        super().__init__()
        self.up = asyncio.Event()
        self.stats = SimpleNamespace(remote=self._stats)

    async def _stats(self):
        await self.up.wait()
        return {"num_waiting": 0}


async def test_ready_only_once_an_engine_replica_answers_stats():
    h = StatsHandle()
    d = dispatcher([0], only=h)
    assert await d.ready(timeout_s=0.05) is False  # no replica yet: /health answers 503
    h.up.set()
    assert await d.ready(timeout_s=0.05) is True
    h.up.clear()
    assert await d.ready(timeout_s=0.05) is True  # remembered for a second: probes stay cheap
