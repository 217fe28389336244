"""The multi-host test cluster's pure parts: config validation, the address plan and the exact commands."""

from __future__ import annotations

import json
import os
import shlex
from ipaddress import IPv4Address, IPv4Network

import pytest
from pydantic import ValidationError

from llmd_ray.cluster.__main__ import _config, _parser
from llmd_ray.cluster.config import ClusterConfig
from llmd_ray.cluster.plan import (bridge_commands, make_plan, node_argv, node_network_commands, node_resource,
                                   nsenter_argv, owned, ray_start_argv)


def test_address_plan_host_head_then_workers():
    plan = make_plan(ClusterConfig(subnet="10.213.9.0/24", workers=3))
    assert plan.host_ip == IPv4Address("10.213.9.1")
    assert [(n.name, str(n.ip)) for n in plan.nodes] == [
        ("head", "10.213.9.2"), ("w1", "10.213.9.3"), ("w2", "10.213.9.4"), ("w3", "10.213.9.5")]
    assert plan.gcs_address == "10.213.9.2:6379"
    assert plan.dashboard_url == "http://10.213.9.2:8265"
    assert plan.serve_url == "http://10.213.9.2:8000"
    assert plan.node("w2").netns == "llmdr-w2" and plan.head.is_head and not plan.node("w1").is_head
    with pytest.raises(KeyError, match="w9"):
        plan.node("w9")


def test_names_share_the_prefix_and_fit_linux_interface_names():
    plan = make_plan(ClusterConfig(prefix="abcdefgh", workers=8))
    names = [plan.bridge] + [n for node in plan.nodes for n in (node.veth_host, node.veth_node)]
    assert all(len(n) <= 15 for n in names), names
    assert all(owned(n, "abcdefgh") for n in names + [node.netns for node in plan.nodes])
    assert not owned("abcdefghx-w1", "abcdefgh") and not owned("eth0", "abcdefgh")


def test_each_node_advertises_a_resource_naming_it():
    plan = make_plan(ClusterConfig(worker_resources={"engine-slot": 1}))
    assert plan.head.resources == {"node-head": 1.0}
    assert plan.node("w1").resources == {"node-w1": 1.0, "engine-slot": 1.0}
    assert node_resource("w2") == "node-w2"


@pytest.mark.parametrize("bad, field", [
    ({"subnet": "8.8.8.0/24"}, "subnet"),            # public: never addressed
    ({"subnet": "127.0.0.0/24"}, "subnet"),
    ({"subnet": "10.213.7.0/30", "workers": 2}, "subnet"),  # too few addresses
    ({"prefix": "Bad-Prefix"}, "prefix"),
    ({"prefix": "toolongprefix"}, "prefix"),
    ({"workers": 0}, "workers"),
    ({"worker_resources": {"node-w1": 1}}, "worker_resources"),
    ({"dashboard_port": 6379}, "dashboard_port"),
    ({"surprise": 1}, "surprise"),
])
def test_config_rejects(bad, field):
    with pytest.raises(ValidationError, match=field):
        ClusterConfig.model_validate(bad)


def test_network_commands_no_default_route_and_addresses_from_the_plan():
    plan = make_plan(ClusterConfig())
    assert bridge_commands(plan)[1] == ["ip", "addr", "add", "10.213.7.1/24", "dev", "llmdr-br0"]
    cmds = node_network_commands(plan, plan.node("w1"))
    assert cmds[0] == ["ip", "netns", "add", "llmdr-w1"]
    assert ["ip", "-n", "llmdr-w1", "addr", "add", "10.213.7.3/24", "dev", "eth0"] in cmds
    assert ["ip", "-n", "llmdr-w1", "link", "set", "lo", "up"] in cmds
    assert ["ip", "link", "set", "llmdr-w1-h", "master", "llmdr-br0"] in cmds
    assert not any("route" in c for c in cmds)


def test_ray_start_head_and_worker():
    plan = make_plan(ClusterConfig(head_num_cpus=0, worker_num_cpus=2, object_store_mb=100))
    head = ray_start_argv(plan, plan.head, "/v/bin/ray")
    assert head[:3] == ["/v/bin/ray", "start", "--block"]
    assert _opt(head, "--node-ip-address") == "10.213.7.2" and _opt(head, "--port") == "6379"
    assert _opt(head, "--dashboard-host") == "10.213.7.2" and _opt(head, "--num-cpus") == "0"
    assert "--head" in head and "--address" not in head
    w2 = ray_start_argv(plan, plan.node("w2"), "ray")
    assert _opt(w2, "--address") == "10.213.7.2:6379" and _opt(w2, "--node-ip-address") == "10.213.7.4"
    assert json.loads(_opt(w2, "--resources")) == {"node-w2": 1.0}
    assert _opt(w2, "--num-cpus") == "2" and _opt(w2, "--object-store-memory") == str(100 * 2**20)
    assert "--head" not in w2
    quiet = make_plan(ClusterConfig(dashboard=False))
    assert _opt(ray_start_argv(quiet, quiet.head, "ray"), "--include-dashboard") == "false"
    assert quiet.dashboard_url is None


def test_node_runs_in_its_netns_with_private_shm_and_tmp():
    plan = make_plan(ClusterConfig(run_dir="/var/tmp/x y", shm_mb=512))
    argv = node_argv(plan, plan.node("w1"), "ray")
    assert argv[:8] == ["ip", "netns", "exec", "llmdr-w1", "unshare", "--mount", "--propagation", "private"]
    steps = [s.strip() for s in argv[-1].split(";")]
    assert steps[0] == "set -e"
    assert steps[1] == "mount -t tmpfs -o size=512m,mode=1777 llmdr-shm /dev/shm"
    assert shlex.split(steps[2]) == ["mount", "--bind", "/var/tmp/x y/w1/tmp", "/tmp"]
    assert shlex.split(steps[-1])[:4] == ["exec", "ray", "start", "--block"]  # the node process is ray start
    assert plan.node("w1").log_path == "/var/tmp/x y/w1/ray.log"


def test_default_run_dir_follows_the_prefix_and_nsenter():
    assert make_plan(ClusterConfig(prefix="ab")).run_dir == "/tmp/ab"
    assert nsenter_argv(42, ["ray", "status"], "/work") == [
        "nsenter", "--target=42", "--net", "--mount", "--wd=/work", "--", "ray", "status"]


def test_cli_flags_override_the_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("workers: 3\nsubnet: 10.213.8.0/24\n")
    cfg = _config(_parser().parse_args(["up", "--config", str(f), "--workers", "2", "--no-dashboard"]))
    assert cfg.workers == 2 and cfg.subnet == IPv4Network("10.213.8.0/24") and not cfg.dashboard


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_preflight_names_what_is_missing(monkeypatch):
    from llmd_ray.cluster import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert "needs root" in netns.preflight("llmdr")
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool in ("ip", "nsenter") else f"/bin/{tool}")
    assert netns.preflight("llmdr") == "missing ip, nsenter (Debian: apt-get install -y iproute2 util-linux mount)"


def test_subnet_conflict_ignores_our_bridge_and_the_default_route(monkeypatch):
    from llmd_ray.cluster import netns

    routes = ("default via 192.0.2.1 dev eth0\n10.213.7.0/24 dev llmdr-br0 proto kernel scope link src 10.213.7.1\n"
              "10.0.0.0/8 dev tun0 scope link\n")
    monkeypatch.setattr(netns, "run", lambda argv, check=True: type("P", (), {"stdout": routes})())
    assert netns.subnet_conflict(IPv4Network("10.213.7.0/24"), "llmdr-br0") == "10.0.0.0/8 dev tun0 scope link"
    assert netns.subnet_conflict(IPv4Network("192.168.5.0/24"), "llmdr-br0") is None


def test_paths_under_tmp_through_symlinks_are_kept(tmp_path):
    import tempfile

    from llmd_ray.cluster.plan import host_paths_under_tmp

    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        link = os.path.join(d, "checkout")
        os.symlink("/usr", link)  # /tmp/.../checkout -> /usr: the path the node uses is under /tmp
        assert host_paths_under_tmp([link + "/bin"]) == [link + "/bin"]
    into = tmp_path / "venv"
    into.symlink_to("/tmp/llmdr-elsewhere/venv")  # a link anywhere into /tmp: its target must be kept
    assert "/tmp/llmdr-elsewhere/venv" in host_paths_under_tmp([str(into)])


def test_node_cores_pin_a_node_with_taskset_and_leave_the_others_on_every_core():
    import pytest
    from pydantic import ValidationError

    from llmd_ray.cluster.plan import node_script

    plan = make_plan(ClusterConfig(node_cores={"w1": [0], "w2": [1, 2]}))
    by = {n.name: n for n in plan.nodes}
    assert (by["head"].cores, by["w1"].cores, by["w2"].cores) == ((), (0,), (1, 2))
    assert node_script(plan, by["w2"], "/r/ray").split("; ")[-1].startswith("exec taskset -c 1,2 /r/ray start")
    assert node_script(plan, by["head"], "/r/ray").split("; ")[-1].startswith("exec /r/ray start")
    for bad, field in (({"w3": [0]}, "node_cores.w3"), ({"w1": []}, "node_cores.w1"), ({"w1": [-1]}, "node_cores.w1")):
        with pytest.raises(ValidationError, match=field):
            ClusterConfig(node_cores=bad)


def test_cli_node_cores_flag():
    import pytest

    from llmd_ray.cluster.__main__ import _config, _parser

    cfg = _config(_parser().parse_args(["up", "--node-cores", "w1=0", "--node-cores", "w2=1,2"]))
    assert cfg.node_cores == {"w1": [0], "w2": [1, 2]}
    with pytest.raises(SystemExit, match="w1=x"):
        _config(_parser().parse_args(["up", "--node-cores", "w1=x"]))
