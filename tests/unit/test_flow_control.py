"""Flow control: queue order, tenant fairness, saturation detection, admission, shedding, deadlines."""

import asyncio
import subprocess
import sys

import pytest

from llmd_ray.errors import RequestShedError, ServiceOverloadedError
from llmd_ray.serving.flow_control import FlowControlConfig, FlowController, ReplicaLoad, StatsPoller, pool_saturated
from llmd_ray.serving.flow_control_queue import FairQueue, Waiter
from llmd_ray.topology.qos import QoSClass

CLASSES = {
    "interactive": QoSClass(priority=2, max_queue_wait_s=0.3),
    "standard": QoSClass(priority=1, max_queue_wait_s=0.3),
    "batch": QoSClass(priority=0, sheddable=True, max_queue_wait_s=0.3),
}


def _w(seq, qos="standard", tenant="t", deadline=None, priority=None):
    prio = CLASSES[qos].priority if priority is None else priority
    return Waiter(seq, qos, prio, tenant, 0.0, float(seq) if deadline is None else deadline, CLASSES[qos].sheddable)


def _order(waiters):
    q = FairQueue()
    for w in waiters:
        q.push(w)
    out = []
    while q:
        out.append(q.pop().seq)
    return out


ORDER = [
    ("fifo within a tenant", [_w(1), _w(2), _w(3)], [1, 2, 3]),
    ("priority first", [_w(1, "batch"), _w(2, "standard"), _w(3, "interactive")], [3, 2, 1]),
    ("then earliest deadline", [_w(1, deadline=9), _w(2, deadline=3), _w(3, deadline=5)], [2, 3, 1]),
    ("tenants alternate", [_w(1, tenant="a"), _w(2, tenant="a"), _w(3, tenant="a"), _w(4, tenant="b"), _w(5, tenant="b")],
     [1, 4, 2, 5, 3]),
    ("priority beats fairness", [_w(1, "batch", "a"), _w(2, "interactive", "b"), _w(3, "interactive", "b")], [2, 3, 1]),
]


@pytest.mark.parametrize("name,waiters,expected", ORDER, ids=[o[0] for o in ORDER])
def test_queue_order(name, waiters, expected):
    assert _order(waiters) == expected


def test_a_heavy_tenant_cannot_starve_a_light_one():
    q = FairQueue()
    for i in range(100):
        q.push(_w(i, tenant="heavy"))
    served = [q.pop().tenant for _ in range(10)]
    q.push(_w(1000, tenant="light"))  # arrives late, behind 90 queued requests of the heavy tenant
    served += [q.pop().tenant for _ in range(2)]
    assert "light" in served[10:]


def test_remove_and_drain():
    q = FairQueue()
    ws = [_w(1, "batch"), _w(2, "standard"), _w(3, "batch"), _w(4, "interactive")]
    for w in ws:
        q.push(w)
    assert q.remove(ws[1]) and not q.remove(ws[1])
    assert [w.seq for w in q.drain(lambda w: w.sheddable)] == [1, 3]
    assert q.depth_by_class() == {"interactive": 1} and len(q) == 1
    assert q.pop().seq == 4 and not q
    with pytest.raises(IndexError):
        q.pop()


CFG = FlowControlConfig(enabled=True, queue_depth_threshold=4, kv_cache_threshold=0.8, stats_max_age_s=1.0)
SATURATION = [
    ("no stats: fail open", [], False),
    ("one replica with headroom", [("a", 10, 0.9), ("b", 0, 0.1)], False),
    ("all queues deep", [("a", 4, 0.1), ("b", 9, 0.1)], True),
    ("all KV full", [("a", 0, 0.8), ("b", 0, 0.95)], True),
    ("mixed, none with headroom", [("a", 5, 0.1), ("b", 0, 0.85)], True),
    ("the free replica's stats are stale", [("a", 5, 0.1), ("b", 0, 0.1, 5.0)], True),
    ("all stale", [("a", 5, 0.9, 5.0)], False),
]


@pytest.mark.parametrize("name,loads,expected", SATURATION, ids=[s[0] for s in SATURATION])
def test_pool_saturated(name, loads, expected):
    now = 100.0
    rs = [ReplicaLoad(r[0], r[1], r[2], now - (r[3] if len(r) > 3 else 0.0)) for r in loads]
    assert pool_saturated(rs, CFG, now) is expected


def _saturated(fc, on=True):
    fc.update_loads([ReplicaLoad("a", 100 if on else 0, 0.0, fc.clock())])


async def test_admits_up_to_max_inflight_then_queues_by_priority():
    fc = FlowController(CFG.model_copy(update={"max_inflight": 1}), CLASSES)
    first = await fc.acquire("standard")
    order = []

    async def go(qos, name):
        p = await fc.acquire(qos)
        order.append(name)
        await asyncio.sleep(0.01)
        p.release()

    tasks = [asyncio.create_task(go("batch", "b1")), asyncio.create_task(go("standard", "s1"))]
    await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(go("interactive", "i1")))
    await asyncio.sleep(0.01)
    assert fc.status()["queued"] == {"batch": 1, "standard": 1, "interactive": 1} and fc.inflight == 1
    first.release()
    await asyncio.gather(*tasks)
    assert order == ["i1", "s1", "b1"] and fc.inflight == 0


async def test_sheddable_gets_429_with_retry_after_when_saturated():
    fc = FlowController(CFG, CLASSES)
    _saturated(fc)
    with pytest.raises(RequestShedError) as info:
        await fc.acquire("batch")
    assert info.value.status_code == 429 and info.value.headers()["Retry-After"] == "2"


async def test_non_sheddable_waits_then_503():
    fc = FlowController(CFG, CLASSES)
    _saturated(fc)
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(ServiceOverloadedError) as info:
        await fc.acquire("standard")
    waited = asyncio.get_running_loop().time() - t0
    assert info.value.status_code == 503 and "max queue wait" in info.value.message and waited >= 0.29
    assert len(fc.queue) == 0 and fc.inflight == 0


async def test_non_sheddable_is_admitted_when_saturation_clears():
    fc = FlowController(CFG, CLASSES)
    _saturated(fc)
    task = asyncio.create_task(fc.acquire("standard"))
    await asyncio.sleep(0.05)
    assert not task.done()
    _saturated(fc, on=False)
    permit = await task
    assert fc.inflight == 1
    permit.release()
    permit.release()  # idempotent
    assert fc.inflight == 0


async def test_queued_sheddable_is_shed_when_saturation_starts():
    fc = FlowController(CFG.model_copy(update={"max_inflight": 1}), CLASSES)
    held = await fc.acquire("standard")
    batch = asyncio.create_task(fc.acquire("batch"))
    std = asyncio.create_task(fc.acquire("standard"))
    await asyncio.sleep(0.01)
    _saturated(fc)
    with pytest.raises(RequestShedError):
        await batch
    assert not std.done()
    _saturated(fc, on=False)
    held.release()
    (await std).release()
    assert fc.inflight == 0


async def test_queue_full_refuses():
    fc = FlowController(CFG.model_copy(update={"max_inflight": 1, "max_queued": 1}), CLASSES)
    held = await fc.acquire("standard")
    waiting = asyncio.create_task(fc.acquire("standard"))
    await asyncio.sleep(0.01)
    with pytest.raises(ServiceOverloadedError) as info:
        await fc.acquire("standard")
    assert info.value.code == "queue_full"
    held.release()
    (await waiting).release()


async def test_cancelled_waiter_leaves_the_queue_and_leaks_no_slot():
    fc = FlowController(CFG.model_copy(update={"max_inflight": 1}), CLASSES)
    held = await fc.acquire("standard")
    task = asyncio.create_task(fc.acquire("standard"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(fc.queue) == 0
    held.release()
    assert fc.inflight == 0


async def test_dropped_permit_is_released():
    fc = FlowController(CFG.model_copy(update={"max_inflight": 1}), CLASSES)
    await fc.acquire("standard")  # the permit is dropped at once
    assert fc.inflight == 0


async def test_disabled_passes_everything_through():
    fc = FlowController(FlowControlConfig(enabled=False, max_inflight=1), CLASSES)
    _saturated(fc)
    permits = [await fc.acquire("batch") for _ in range(3)]
    assert fc.inflight == 3
    for p in permits:
        p.release()


async def test_stats_poller_feeds_the_controller_and_survives_failures():
    fc = FlowController(CFG, CLASSES)
    replies = iter([{"rank": 0, "num_waiting": 9, "kv_cache_usage": 0.1}, RuntimeError("replica died"),
                    {"rank": 1, "num_waiting": 7, "kv_cache_usage": 0.2}, None] * 3)

    async def fetch():
        r = next(replies)
        if isinstance(r, Exception):
            raise r
        return r

    poller = StatsPoller(fetch, fc)
    await poller.poll_once()
    assert fc.saturated and set(poller.loads) == {"0", "1"} and poller.failures == 2


def test_pure_modules_import_no_ray():
    code = ("import sys; import llmd_ray.serving.flow_control, llmd_ray.topology.qos, llmd_ray.serving.auth; "
            "assert 'ray' not in sys.modules and 'vllm' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_stale_stats_bound_admission_to_what_the_engines_batch():
    """No fresh stats: saturation is unknown, so at most blind_per_replica x replicas are in flight."""
    now = [100.0]
    fc = FlowController(CFG.model_copy(update={"max_inflight": 50, "blind_per_replica": 2}), CLASSES, clock=lambda: now[0])
    fc.update_loads([ReplicaLoad("a", 0, 0.0, 100.0), ReplicaLoad("b", 0, 0.0, 100.0)])
    assert not fc.blind and fc.limit == 50
    now[0] += CFG.stats_max_age_s + 1  # both replicas' stats are now stale
    fc.update_loads([ReplicaLoad("a", 0, 0.0, 100.0), ReplicaLoad("b", 0, 0.0, 100.0)])
    assert fc.blind and fc.limit == 4 and not fc.saturated
    permits = [await fc.acquire("standard") for _ in range(4)]
    waiting = asyncio.create_task(fc.acquire("interactive"))
    await asyncio.sleep(0.01)
    assert fc.inflight == 4 and not waiting.done() and fc.status()["queued"]["interactive"] == 1
    fc.update_loads([ReplicaLoad("a", 0, 0.0, now[0])])  # fresh again: the full limit returns
    permits.append(await asyncio.wait_for(waiting, 1))
    assert not fc.blind and fc.inflight == 5
    for p in permits:
        p.release()
