"""Routing decisions shared between routers (issue 16): batching, the shared log, merging, endpoint removal,
and one router's sync step against an in-process log (pure: no Ray)."""

from __future__ import annotations

import pytest

from llmd_ray.routing.index import ApproximatePrefixIndex
from llmd_ray.routing.shared_decisions import DecisionLog, DecisionOutbox, PeerSync, compact, merge
from llmd_ray.serving.router_args import RouterArgs


def h(*names):
    return [f"b{n}".encode() for n in names]


def test_outbox_drains_in_batches_oldest_first_and_folds_repeats():
    box = DecisionOutbox(max_pending=100)
    box.add("e1", h(1, 2))
    box.add("e2", h(3))
    box.add("e1", h(1, 2))  # the same prefix to the same endpoint again: one decision, at the later place
    box.add("e1", [])  # a request shorter than a block: nothing to share
    assert len(box) == 3
    assert box.drain(2) == [("e1", h(1, 2)), ("e2", h(3))]
    assert box.drain() == [("e1", h(1, 2))]
    assert box.drain() == []
    assert compact([("e1", h(1, 2)), ("e2", h(3)), ("e1", h(1, 2))]) == [("e2", h(3)), ("e1", h(1, 2))]
    assert compact([("e1", h(1, 2)), ("e1", h(1, 2, 3))]) == [("e1", h(1, 2)), ("e1", h(1, 2, 3))]


def test_outbox_is_bounded_and_counts_what_it_dropped():
    box = DecisionOutbox(max_pending=3)
    for i in range(5):
        box.add("e", h(i))
    assert box.dropped == 2 and box.drain() == [("e", h(2)), ("e", h(3)), ("e", h(4))]
    with pytest.raises(ValueError):
        DecisionOutbox(max_pending=0)


def test_log_returns_the_other_routers_decisions_since_the_last_sync():
    log = DecisionLog()
    first = log.exchange("A", [("e1", h(1, 2))], None, 0)
    assert first["ops"] == []  # A sees nothing of its own
    b = log.exchange("B", [("e2", h(9))], None, 0)
    assert b["ops"] == [("e1", h(1, 2))] and b["seq"] == 1
    a = log.exchange("A", [], first["epoch"], first["seq"])
    assert a["ops"] == [("e2", h(9))]
    assert log.exchange("A", [], a["epoch"], a["seq"])["ops"] == []  # nothing new
    assert log.stats()["origins"]["A"]["since"] == a["seq"]


def test_a_router_new_to_the_log_or_its_epoch_gets_the_newest_kept_decisions():
    log = DecisionLog(max_entries=3)
    log.publish("A", [("e1", h(i)) for i in range(5)])
    assert [d[1] for d in log.changes("B", None, 0)["ops"]] == [h(2), h(3), h(4)]  # the log keeps 3
    r = log.changes("B", "another-epoch", 4, limit=2)  # a restarted log: ``since`` means nothing
    assert [d[1] for d in r["ops"]] == [h(3), h(4)] and r["skipped"] == 1


def test_a_gone_endpoint_is_purged_from_the_log():
    log = DecisionLog()
    log.publish("A", [("e1", h(1)), ("e2", h(2)), ("e1", h(3))])
    log.exchange("B", [], None, 0, gone=["e1"])
    assert log.changes("C", None, 0)["ops"] == [("e2", h(2))] and log.stats()["purged"] == 2


def test_merge_records_as_own_decisions_for_live_endpoints_only():
    index = ApproximatePrefixIndex(default_capacity=4)
    counts = merge(index, [("e1", h(1, 2, 3)), ("gone", h(1, 2))], live={"e1", "e2"})
    assert (counts.merged, counts.unknown_endpoint) == (1, 1)
    assert index.match(h(1, 2, 3, 4)) == {"e1": 3}
    assert "gone" not in index.endpoints()
    merge(index, [("e1", h(7, 8))], live={"e1"})  # the same LRU and capacity as own decisions
    assert index.num_blocks("e1") == 4 and index.match(h(1, 2, 3)) == {"e1": 2}  # the tail went first


def test_a_removed_endpoint_is_not_brought_back_by_a_late_merge():
    index = ApproximatePrefixIndex()
    index.record("e1", h(1, 2))
    index.remove_endpoint("e1")
    merge(index, [("e1", h(1, 2))], live={"e2"})  # another router's decision, for e1, arrives after removal
    assert index.match(h(1, 2)) == {} and index.endpoints() == []


def _router(log: DecisionLog, live: set[str], calls: list | None = None) -> tuple[PeerSync, ApproximatePrefixIndex]:
    index = ApproximatePrefixIndex()

    def on_loop(fn):
        if calls is not None:
            calls.append(fn)
        return fn()

    return PeerSync(DecisionOutbox(), log.exchange, on_loop, lambda ops: merge(index, ops, live), chunk=2), index


def test_prefix_routed_by_router_a_matches_on_router_b_after_one_sync_each():
    log, live = DecisionLog(), {"e1", "e2"}
    a, index_a = _router(log, live)
    calls: list = []
    b, index_b = _router(log, live, calls)
    index_a.record("e2", h(1, 2, 3))  # router A routed the prefix to e2 ...
    a.outbox.add("e2", h(1, 2, 3))
    for i in range(4):
        a.outbox.add("e1", h(10 + i))
    assert a.step().published == 5
    assert index_b.match(h(1, 2, 3)) == {}
    r = b.step()  # ... and B merges it, in chunks of 2 on its loop
    assert (r.merged, r.unknown_endpoint) == (5, 0) and len(calls) == 3
    assert index_b.match(h(1, 2, 3)) == {"e2": 3}
    assert b.step().merged == 0  # nothing new: B is caught up
    b.endpoint_gone("e2")
    b.step()
    assert log.changes("C", None, 0)["ops"] == [("e1", h(10 + i)) for i in range(4)]


def test_a_failed_exchange_keeps_gone_endpoints_for_the_next():
    log = DecisionLog()
    sync, _ = _router(log, {"e1"})
    sync.exchange = lambda *a: (_ for _ in ()).throw(TimeoutError())
    sync.endpoint_gone("e9")
    with pytest.raises(TimeoutError):
        sync.step()
    sync.exchange = log.exchange
    log.publish("A", [("e9", h(1))])
    sync.step()
    assert log.stats()["entries"] == 0


@pytest.mark.parametrize(("args", "ingress", "expected"), [
    ({}, 1, False), ({}, 2, True), ({"share_decisions": False}, 4, False), ({"share_decisions": True}, 1, True),
    ({"policy": "pow2"}, 4, False),
])
def test_sharing_is_on_by_default_with_more_than_one_ingress_replica(args, ingress, expected):
    assert RouterArgs(**args).shares_decisions(ingress) is expected


@pytest.mark.parametrize(("args", "shared"), [
    ({"ingress_replicas": 2}, True), ({}, False), ({"ingress_replicas": 2, "router": {"share_decisions": False}}, False),
    ({"router": {"share_decisions": True}}, True),
])
def test_build_app_binds_routing_state_and_tells_the_routers(args, shared):
    from llmd_ray.serving.app import build_app

    ingress = build_app(args)._bound_deployment
    llm = ingress.init_args[0]._bound_deployment
    kwargs = llm._deployment_config.request_router_config.request_router_kwargs
    assert ("routing_state" in ingress.init_kwargs) is shared
    assert kwargs["shared_state"] == ("RoutingState" if shared else None)
