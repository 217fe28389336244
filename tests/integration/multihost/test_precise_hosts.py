"""The precise prefix index across hosts, and a worker node lost under load (issue 16 items 2 and 5).

One app for the module (``bench/reliability/node_loss.py``'s ``serve_config``: the router config of
serve_configs/precise_routing.yaml, one engine replica on each worker, the ingress and the KVIndex on the head):

- The engines on w1 and w2 publish their KV events on their nodes' addresses and the KVIndex on the head follows
  both; the router's predicted cached tokens equal vLLM's ``cached_tokens`` for every request, whichever node
  served it (the sequence runs as a Ray driver on the head: ``precise_probe.py``).
- Under streaming load, every process of worker w1 is SIGKILLed at once: its in-flight streams finish on w2's
  engine (migrated, no error), no vLLM process of w1 outlives it, the KVIndex drops the lost replica's blocks,
  the app serves on w2 meanwhile, and once w1 is back Serve's replacement replica runs there and serves. The run
  is ``node_loss.run`` (the benchmark's timeline); w1 is restarted even when the test fails.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.integration.multihost.helpers import call_deployments, deploy, log_tails, replicas, wait_for

pytestmark = [pytest.mark.own_cluster, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("node_loss", ROOT / "bench" / "reliability" / "node_loss.py")
node_loss = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(node_loss)
APP, DEPLOYMENT = node_loss.APP, node_loss.DEPLOYMENT


@pytest.fixture(scope="module")
def app(cluster):
    took = deploy(cluster, node_loss.serve_config(cluster.plan), [APP], timeout_s=900)
    print(f"\nprecise app ready in {took:.1f}s")
    return cluster.plan.serve_url


def test_engines_on_both_workers_index_and_ingress_on_the_head(cluster, app):
    placed = sorted((r["deployment"], r["node"]) for r in replicas(cluster).values() if r["app"] == APP)
    assert placed == [("KVIndex", "head"), (DEPLOYMENT, "w1"), (DEPLOYMENT, "w2"), ("OpenAIIngress", "head")]


def test_index_on_the_head_predicts_vllm_cached_tokens_of_engines_on_both_workers(cluster, app):
    probe = Path(__file__).with_name("precise_probe.py")
    out = cluster.exec("head", [sys.executable, str(probe), cluster.plan.gcs_address, app, APP],
                       capture_output=True, text=True, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, f"probe failed ({out.returncode}): {out.stderr[-3000:]}"
    rows = json.loads(lines[-1][len("RESULT "):])
    where = {rid: r["node"] for rid, r in replicas(cluster).items()}
    print("\n".join(f"{where.get(r['replica'])}: predicted {r['predicted']} observed {r['observed']}" for r in rows))
    assert [r["observed"] for r in rows] == [r["predicted"] for r in rows], rows
    assert sum(1 for r in rows if r["predicted"]) >= 8, rows  # real hits, also the repeats of the cold prompts
    hits_on = {where.get(r["replica"]) for r in rows if r["predicted"]}
    assert hits_on == {"w1", "w2"}, f"hits predicted only on {hits_on}: {rows}"
    assert sum(r["followed"] for r in rows) >= len(rows) - 1, rows
    [stats] = call_deployments(cluster, [(APP, "KVIndex", "stats", [])])
    assert sorted(where.get(r) for r in stats["following"]) == ["w1", "w2"], stats


def test_worker_lost_under_load_streams_migrate_index_drops_it_app_recovers(cluster, app):
    victim = "w1"
    try:
        t = asyncio.run(node_loss.run(cluster, victim=victim, concurrency=4, max_tokens=300, timeout_s=300))
    finally:  # the package's other modules need every node: restart it whatever happened
        if str(cluster.plan.node(victim).ip) not in cluster.alive_nodes():
            cluster.restart_node(victim)
    node_loss.with_ingress_migrations(cluster, t)
    print("\nnode-loss timeline: " + json.dumps(t, indent=1))
    assert "failed" not in t and "restart_failed" not in t, (t, log_tails(cluster))
    assert t["engine_pids_before"], "no vLLM process found on the lost node"
    assert t["processes_left_on_node"] == 0 and t["engine_pids_alive_after"] == [], t
    assert t["in_flight_on_lost_node"], "no stream was in flight on the lost node"
    # Every stream in flight on the lost node completed: moved by the ingress (its log names each), or finished
    # there within the ~1 s the kill takes; at least one was moved.
    assert t["broken"] == [] and t["completed_of_in_flight"] == len(t["in_flight_on_lost_node"]), t
    assert t["migrated"] >= 1 and t["migrated"] + len(t["finished_before_engine_gone"]) == len(t["in_flight_ids"]), t
    assert all(t["in_flight_ended_s"][i] < t["killed_in_s"] + 1.0 for i in t["finished_before_engine_gone"]), t
    assert t["requests"]["errors"] == 0, t["error_examples"]
    assert t["served_after_kill"] < t["restart_begin"]  # served on the remaining node while the other was gone
    assert t["index_dropped"] < t["restart_begin"]
    assert t["first_served_by_new"] >= t["replica_back"] - 1.0
    # The app is back to its size: both engines running, one on each worker, and the index follows both.
    reps = node_loss.engine_replicas(cluster)
    assert sorted((r["node"], r["state"]) for r in reps.values()) == [("w1", "RUNNING"), ("w2", "RUNNING")], reps
    wait_for(lambda: len(call_deployments(cluster, [(APP, "KVIndex", "stats", [])])[0]["following"]) == 2, 60,
             "the KVIndex to follow both engines again")
