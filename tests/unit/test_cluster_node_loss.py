"""Losing and restarting one node of the multi-host test cluster: the pure parts (which signals, what is refused)."""

from __future__ import annotations

import signal

import pytest

from llmd_ray.cluster import Cluster, ClusterConfig, ClusterSetupError
from llmd_ray.cluster import netns


class FakeNamespace:
    """Processes of fake namespaces that die on SIGKILL (and, if ``term_kills``, on SIGTERM)."""

    def __init__(self, pids: dict[str, list[int]], term_kills: bool = False):
        self.pids, self.term_kills, self.sent = pids, term_kills, []

    def netns_pids(self, ns: str) -> list[int]:
        return list(self.pids.get(ns, []))

    def signal(self, pids: list[int], sig: int) -> None:
        self.sent.append((sorted(pids), sig))
        if sig == signal.SIGKILL or self.term_kills:
            for ns in self.pids:
                self.pids[ns] = [p for p in self.pids[ns] if p not in pids]


@pytest.fixture
def fake(monkeypatch):
    f = FakeNamespace({"llmdr-w1": [11, 12, 13], "llmdr-w2": [21]})
    monkeypatch.setattr(netns, "netns_pids", f.netns_pids)
    monkeypatch.setattr(netns, "_signal", f.signal)
    return f


def test_a_lost_node_gets_sigkill_only(fake):
    assert netns.kill_netns_processes(["llmdr-w1"], grace_s=0, term=False) == 3
    assert fake.sent == [([11, 12, 13], signal.SIGKILL)]
    assert fake.pids == {"llmdr-w1": [], "llmdr-w2": [21]}  # the other node untouched


def test_teardown_still_asks_politely_first(fake):
    fake.term_kills = True
    assert netns.kill_netns_processes(["llmdr-w1", "llmdr-w2"], grace_s=1.0) == 4
    assert fake.sent == [([11, 12, 13, 21], signal.SIGTERM)]


def test_kill_node_sigkills_its_namespace_and_forgets_its_pid(fake, monkeypatch):
    from llmd_ray.cluster import cluster as cluster_mod

    monkeypatch.setattr(cluster_mod, "kill_netns_processes", netns.kill_netns_processes)
    c = Cluster(ClusterConfig())
    c._pids = {"head": 1, "w1": 11, "w2": 21}
    assert c.kill_node("w1") == 3
    assert fake.sent == [([11, 12, 13], signal.SIGKILL)] and c._pids == {"head": 1, "w2": 21}


def test_the_head_cannot_be_lost_and_a_live_node_not_restarted(fake, monkeypatch):
    from llmd_ray.cluster import cluster as cluster_mod

    monkeypatch.setattr(cluster_mod, "netns_pids", fake.netns_pids)
    c = Cluster(ClusterConfig())
    with pytest.raises(ValueError, match="head"):
        c.kill_node("head")
    with pytest.raises(ClusterSetupError, match="kill_node"):
        c.restart_node("w1")
    with pytest.raises(KeyError, match="w9"):
        c.kill_node("w9")


def test_cli_kill_and_restart_name_a_node_and_refuse_the_head(tmp_path, capsys):
    import json

    from llmd_ray.cluster.__main__ import _parser, main

    args = _parser().parse_args(["restart", "--prefix", "llmdz", "w2"])
    assert (args.cmd, args.prefix, args.node) == ("restart", "llmdz", "w2")
    (tmp_path / "state.json").write_text(json.dumps({"config": {"prefix": "llmdz"}, "pids": {"head": 1}}))
    assert main(["kill", "--prefix", "llmdz", "--run-dir", str(tmp_path), "head"]) == 2
    assert "only a worker node" in capsys.readouterr().err
