"""bench/reliability/node_loss.py's pure parts: the run's summary, and which processes count as alive."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("node_loss", ROOT / "bench" / "reliability" / "node_loss.py")
node_loss = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(node_loss)


def rec(i, end, error=None, gap=0.0, replica="a"):
    return {"i": i, "id": f"cmpl-{i}", "start": 0.0, "first": 1.0, "end": end, "replica": replica, "tokens": 10,
            "error": error, "max_gap_s": gap, "gap_at": None}


def test_summary_counts_completed_broken_and_errors():
    load = node_loss.Load("http://x", 2, 10)
    load.records = [rec(1, 20.0, gap=7.5), rec(2, 21.0, error="boom"), rec(3, None), rec(4, 30.0, gap=0.1)]
    t = node_loss.summarize(load, {"kill": 10.0, "in_flight_on_lost_node": [1, 2]})
    assert t["requests"] == {"sent": 4, "completed": 2, "errors": 1, "unfinished": 1}
    assert t["completed_of_in_flight"] == 1 and t["broken"] == [{"i": 2, "error": "boom"}]
    assert t["in_flight_ids"] == {"1": "cmpl-1"} and t["in_flight_ended_s"] == {"1": 10.0}
    assert t["migration_gaps_s"] == [7.5]
    assert t["error_examples"] == [{"i": 2, "t": 11.0, "error": "boom"}]


def test_migrated_are_the_in_flight_streams_the_ingress_logged(monkeypatch):
    lines = ["request cmpl-1-0: serving replica failed after 12 tokens (ActorDiedError); migrating (1/3)"]
    monkeypatch.setattr(node_loss, "head_log_lines", lambda cluster, needle, pattern: lines)
    t = node_loss.with_ingress_migrations(None, {"in_flight_ids": {"1": "cmpl-1", "5": "cmpl-5"}})
    assert (t["ingress_migrations_logged"], t["migrated"], t["finished_before_engine_gone"]) == (1, 1, ["5"])


def test_a_zombie_is_not_alive():
    assert node_loss.alive(os.getpid())
    child = subprocess.Popen(["true"])
    try:
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            pass  # exits at once; not reaped until wait()
        assert not node_loss.alive(child.pid)
    finally:
        child.wait()
    assert not node_loss.alive(child.pid)
