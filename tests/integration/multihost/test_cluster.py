"""The multi-host test cluster itself (issue 16 item 1), through its script: `up` returns with the nodes running;
each node has its own address, no route off the bridge, a private /dev/shm and /tmp, and a resource naming it
that places work there; a Ray driver runs on a node with `exec`; `down` removes everything, also what a run that
never called it left behind, and is idempotent. No model, no engines."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmd_ray.cluster import Cluster, ClusterConfig, ClusterSetupError, preflight
from llmd_ray.cluster.netns import owned_links, owned_netns

pytestmark = [pytest.mark.own_cluster, pytest.mark.timeout(300)]

# A prefix and subnet of its own: never collides with the app tests' cluster (llmdr, 10.213.7.0/24).
PREFIX, SUBNET = "llmdrc", "10.213.6.0/24"
CLI = [sys.executable, "-m", "llmd_ray.cluster"]

DRIVER = """
import json, ray
ray.init(address="{gcs}", log_to_driver=False)

@ray.remote(num_cpus=0)
def where():
    import os
    return {{"ip": ray.util.get_node_ip_address(), "shm": sorted(os.listdir("/dev/shm"))}}

placed = {{n: ray.get(where.options(resources={{"node-" + n: 0.1}}).remote()) for n in ("head", "w1", "w2")}}
print(json.dumps({{"driver_node": ray.get_runtime_context().get_node_id(), "placed": placed}}))
"""


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=240)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def leftovers_removed():
    reason = preflight(PREFIX)
    if reason:
        pytest.skip(f"multi-host cluster unavailable: {reason}")
    cli("down", "--prefix", PREFIX)
    yield
    cli("down", "--prefix", PREFIX)


def test_up_exec_and_down_leave_nothing_behind(leftovers_removed):
    t0 = time.perf_counter()
    desc = json.loads(cli("up", "--prefix", PREFIX, "--subnet", SUBNET, "--workers", "2", "--no-dashboard").stdout)
    print(f"\nup (script) in {time.perf_counter() - t0:.1f}s")
    ips = {n["name"]: n["ip"] for n in desc["nodes"]}
    assert ips == {"head": "10.213.6.2", "w1": "10.213.6.3", "w2": "10.213.6.4"}
    assert desc["gcs_address"] == "10.213.6.2:6379"
    cluster = Cluster.attach(PREFIX)  # what the script started (its pids from the state file)
    assert set(cluster.node_ids()) == {"head", "w1", "w2"}  # asked of the head's GCS over the bridge

    def on(node: str, script: str) -> str:
        out = cluster.exec(node, ["sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    # Own address, no route off the bridge.
    assert "10.213.6.3/24" in on("w1", "ip -o -4 addr show dev eth0")
    assert "default" not in on("w1", "ip route")
    # Private /dev/shm (a tmpfs of its own) and /tmp (the node's directory on the host), per node.
    on("w1", "echo w1 > /dev/shm/llmdr-probe && echo w1 > /tmp/llmdr-probe")
    assert on("w2", "ls /dev/shm; ls /tmp").count("llmdr-probe") == 0
    assert not Path("/dev/shm/llmdr-probe").exists() and not Path("/tmp/llmdr-probe").exists()
    assert Path(cluster.plan.node("w1").tmp_dir, "llmdr-probe").read_text() == "w1\n"
    assert on("w1", "df --output=fstype /dev/shm | tail -1").strip() == "tmpfs"
    assert (cluster.session_dir("w1") / "logs" / "raylet.out").exists()  # the node's Ray logs, read from the host
    # A Ray driver on the head; each node's resource places a task on that node, which sees its own /dev/shm.
    out = cluster.exec("head", [sys.executable, "-c", DRIVER.format(gcs=desc["gcs_address"])],
                       capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["driver_node"] == cluster.node_ids()["head"]
    assert {n: p["ip"] for n, p in result["placed"].items()} == ips
    assert "llmdr-probe" in result["placed"]["w1"]["shm"] and "llmdr-probe" not in result["placed"]["w2"]["shm"]

    # The script has exited, so its nodes are what a crashed run leaves: `up` refuses, `down` removes them all.
    with pytest.raises(ClusterSetupError, match="leftovers"):
        Cluster(ClusterConfig(prefix=PREFIX, subnet=SUBNET)).up()
    t0 = time.perf_counter()
    summary = cli("down", "--prefix", PREFIX).stdout
    print(f"down (script) in {time.perf_counter() - t0:.1f}s: {summary.strip()}")
    assert "removed namespaces" in summary
    assert owned_netns(PREFIX) == [] and owned_links(PREFIX) == []
    assert not Path(f"/tmp/{PREFIX}").exists()
    assert cli("down", "--prefix", PREFIX).stdout.strip() == "nothing to remove"  # idempotent


def test_a_failing_body_still_tears_down(leftovers_removed):
    with pytest.raises(RuntimeError, match="test body failed"):
        with Cluster(ClusterConfig(prefix=PREFIX, subnet=SUBNET, workers=1, dashboard=False)) as c:
            assert set(c.node_ids()) == {"head", "w1"}
            raise RuntimeError("test body failed")
    assert owned_netns(PREFIX) == [] and owned_links(PREFIX) == []
    assert not Path(f"/tmp/{PREFIX}").exists()


KILLED = f"""
import time
from llmd_ray.cluster import Cluster, ClusterConfig
c = Cluster(ClusterConfig(prefix="{PREFIX}", subnet="{SUBNET}", workers=1, dashboard=False))
c.install_cleanup()
c.up()
print("up", flush=True)
time.sleep(600)
"""


def test_a_terminated_test_process_tears_down(leftovers_removed):
    """SIGTERM (a CI timeout, a cancelled job) to the process that made the cluster: its handler removes it."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        assert len(owned_netns(PREFIX)) == 2
        proc.terminate()
        assert proc.wait(timeout=60) == 128 + 15
    finally:
        proc.kill()
    assert owned_netns(PREFIX) == [] and owned_links(PREFIX) == []
    assert not Path(f"/tmp/{PREFIX}").exists()
