"""The cluster's plan: names, addresses and the exact commands, derived from a ``ClusterConfig`` (pure).

Layout (prefix ``llmdr``, subnet ``10.213.7.0/24``, two workers)::

    host (root namespace) ── llmdr-br0 10.213.7.1/24
        ├─ llmdr-head-h ══ eth0 10.213.7.2  netns llmdr-head   ray start --head    {node-head: 1}
        ├─ llmdr-w1-h   ══ eth0 10.213.7.3  netns llmdr-w1     ray start --address {node-w1: 1}
        └─ llmdr-w2-h   ══ eth0 10.213.7.4  netns llmdr-w2     ray start --address {node-w2: 1}

No namespace gets a default route: a node reaches its own loopback and the bridge's subnet, nothing else.
Each node runs in a mount namespace of its own with a fresh tmpfs on /dev/shm (Ray's object store lives there)
and ``<run_dir>/<node>/tmp`` bound on /tmp (Ray's session directory, sockets and logs: private to the node,
readable from the host for debugging).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from llmd_ray.cluster.config import ClusterConfig

HEAD = "head"
NODE_RESOURCE_PREFIX = "node-"
# Always in the nodes' environment: the routers' block hashes need one hash seed; no usage reports; and one
# auth mode on every node: with ~/.ray/auth_token present, Ray 2.60's `ray start --head` turns token auth on
# while `ray start --address` leaves it off, and the workers then fail to join (InvalidAuthToken). The cluster
# is reachable only on its own bridge, so auth is off.
BASE_ENV = {"PYTHONHASHSEED": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def node_resource(node: str) -> str:
    """The custom Ray resource naming a node (1 unit on that node only): place a replica with it."""
    return f"{NODE_RESOURCE_PREFIX}{node}"


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str  # "head", "w1", ...
    netns: str
    ip: IPv4Address
    veth_host: str  # the pair's end on the bridge, in the root namespace
    veth_node: str  # the pair's end moved into the node's namespace (renamed eth0 there)
    num_cpus: int
    resources: dict[str, float]
    dir: str  # <run_dir>/<name>: holds tmp/ (the node's /tmp) and ray.log (its `ray start` output)
    cores: tuple[int, ...] = ()  # the cores its processes may run on; empty: all

    @property
    def is_head(self) -> bool:
        return self.name == HEAD

    @property
    def tmp_dir(self) -> str:
        return f"{self.dir}/tmp"

    @property
    def log_path(self) -> str:
        return f"{self.dir}/ray.log"

    @property
    def ray_dir(self) -> str:
        """Ray's temp dir of this node (its sessions), as seen from the host. Its ``session_latest`` link points
        into the node's /tmp (an absolute path), so from the host it names the host's own: list ``session_2*``."""
        return f"{self.tmp_dir}/ray"


@dataclass(frozen=True, slots=True)
class Plan:
    prefix: str
    bridge: str
    host_ip: IPv4Address
    prefixlen: int
    nodes: tuple[NodePlan, ...]
    run_dir: str
    gcs_port: int
    dashboard: bool
    dashboard_port: int
    serve_port: int
    object_store_bytes: int
    shm_mb: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> NodePlan:
        return self.nodes[0]

    @property
    def workers(self) -> tuple[NodePlan, ...]:
        return self.nodes[1:]

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    @property
    def gcs_address(self) -> str:
        return f"{self.head.ip}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str | None:
        return f"http://{self.head.ip}:{self.dashboard_port}" if self.dashboard else None

    @property
    def serve_url(self) -> str:
        return f"http://{self.head.ip}:{self.serve_port}"


def make_plan(cfg: ClusterConfig) -> Plan:
    hosts = cfg.subnet.hosts()
    host_ip = next(hosts)
    run_dir = str(cfg.resolved_run_dir)
    names = [HEAD] + [f"w{i}" for i in range(1, cfg.workers + 1)]
    nodes = []
    for name in names:
        head = name == HEAD
        resources = {node_resource(name): 1.0, **({} if head else dict(cfg.worker_resources))}
        nodes.append(NodePlan(
            name=name, netns=f"{cfg.prefix}-{name}", ip=next(hosts), veth_host=f"{cfg.prefix}-{name}-h",
            veth_node=f"{cfg.prefix}-{name}-n", num_cpus=cfg.head_num_cpus if head else cfg.worker_num_cpus,
            resources=resources, dir=f"{run_dir}/{name}", cores=tuple(cfg.node_cores.get(name, ()))))
    return Plan(prefix=cfg.prefix, bridge=f"{cfg.prefix}-br0", host_ip=host_ip, prefixlen=cfg.subnet.prefixlen,
                nodes=tuple(nodes), run_dir=run_dir, gcs_port=cfg.gcs_port, dashboard=cfg.dashboard,
                dashboard_port=cfg.dashboard_port, serve_port=cfg.serve_port,
                object_store_bytes=cfg.object_store_mb * 2**20, shm_mb=cfg.shm_mb, env={**BASE_ENV, **cfg.env})


def bridge_commands(plan: Plan) -> list[list[str]]:
    """Create the bridge and give the host its address on it."""
    return [
        ["ip", "link", "add", plan.bridge, "type", "bridge"],
        ["ip", "addr", "add", f"{plan.host_ip}/{plan.prefixlen}", "dev", plan.bridge],
        ["ip", "link", "set", plan.bridge, "up"],
    ]


def node_network_commands(plan: Plan, node: NodePlan) -> list[list[str]]:
    """The node's namespace, its veth pair (one end on the bridge), loopback and address; no default route."""
    ns = node.netns
    return [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", node.veth_host, "type", "veth", "peer", "name", node.veth_node],
        ["ip", "link", "set", node.veth_host, "master", plan.bridge],
        ["ip", "link", "set", node.veth_host, "up"],
        ["ip", "link", "set", node.veth_node, "netns", ns],
        ["ip", "-n", ns, "link", "set", node.veth_node, "name", "eth0"],
        ["ip", "-n", ns, "addr", "add", f"{node.ip}/{plan.prefixlen}", "dev", "eth0"],
        ["ip", "-n", ns, "link", "set", "eth0", "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
    ]


def ray_start_argv(plan: Plan, node: NodePlan, ray_bin: str) -> list[str]:
    """``ray start --block`` for the node (run inside its namespaces)."""
    argv = [ray_bin, "start", "--block", "--disable-usage-stats", "--node-ip-address", str(node.ip),
            "--num-cpus", str(node.num_cpus), "--resources", json.dumps(node.resources, sort_keys=True),
            "--object-store-memory", str(plan.object_store_bytes)]
    if node.is_head:
        argv += ["--head", "--port", str(plan.gcs_port)]
        if plan.dashboard:
            argv += ["--include-dashboard", "true", "--dashboard-host", str(node.ip),
                     "--dashboard-port", str(plan.dashboard_port)]
        else:
            argv += ["--include-dashboard", "false"]
    else:
        argv += ["--address", plan.gcs_address]
    return argv


def host_paths_under_tmp(paths: Sequence[str]) -> list[str]:
    """Of ``paths`` (the venv, the checkout), those inside the host's /tmp, which a node's private /tmp would
    hide: a clone or venv under /tmp must stay reachable on the node."""
    # as given and resolved: a path through a symlink under /tmp, or a symlink elsewhere into /tmp, counts too
    inside = sorted({q for p in paths for q in (os.path.abspath(p), os.path.realpath(p)) if q.startswith("/tmp/")})
    return [p for p in inside if not any(p.startswith(q + "/") for q in inside)]  # outermost only


def node_script(plan: Plan, node: NodePlan, ray_bin: str, keep: Sequence[str] = ()) -> str:
    """What runs in the node's fresh mount namespace: a private /dev/shm and /tmp, then ``ray start``.

    ``keep``: host paths under /tmp (``host_paths_under_tmp``) bound back into the node's /tmp, through the
    host's /tmp bound on /mnt first (the namespace is private: neither mount is seen outside it)."""
    steps = ["set -e", f"mount -t tmpfs -o size={plan.shm_mb}m,mode=1777 {plan.prefix}-shm /dev/shm"]
    if keep:
        steps.append("mount --bind /tmp /mnt")
    steps.append(f"mount --bind {shlex.quote(node.tmp_dir)} /tmp")
    for p in keep:
        rel = shlex.quote("/mnt/" + p[len("/tmp/"):])
        steps += [f"mkdir -p {shlex.quote(p)}", f"mount --bind {rel} {shlex.quote(p)}"]
    pin = ["taskset", "-c", ",".join(map(str, node.cores))] if node.cores else []
    return "; ".join([*steps, "cd /", "exec " + shlex.join(pin + ray_start_argv(plan, node, ray_bin))])


def node_argv(plan: Plan, node: NodePlan, ray_bin: str) -> list[str]:
    """The node's process: its network namespace, a new private mount namespace, then ``node_script``.

    ``ip netns exec`` and ``unshare`` exec their command, so this process *is* the node's ``ray start``.
    """
    keep = host_paths_under_tmp([sys.prefix, os.path.dirname(os.path.dirname(ray_bin)), os.getcwd(),
                                 str(Path(__file__).resolve().parents[2])])
    return ["ip", "netns", "exec", node.netns, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", node_script(plan, node, ray_bin, keep)]


def nsenter_argv(node_pid: int, argv: list[str], cwd: str = "/") -> list[str]:
    """Run ``argv`` on a node: in the network and mount namespaces of its process ``node_pid``, in ``cwd``
    (entering a mount namespace moves the caller to its root)."""
    return ["nsenter", f"--target={node_pid}", "--net", "--mount", f"--wd={cwd}", "--", *argv]


def owned(name: str, prefix: str) -> bool:
    """Whether a namespace or link name is one this cluster (of ``prefix``) creates."""
    return name.startswith(f"{prefix}-")
