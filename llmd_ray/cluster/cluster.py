"""``Cluster``: bring the plan up (network, then the head, then the workers), run commands on nodes, tear down.

The nodes' ``ray start --block`` processes run in sessions of their own, so they outlive the process that
started them (``python -m llmd_ray.cluster up`` returns); ``down`` finds them again by network namespace.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmd_ray.cluster.config import ClusterConfig
from llmd_ray.cluster.netns import (ClusterSetupError, Removed, kill_netns_processes, netns_pids, owned_links,
                                    owned_netns, preflight, run, subnet_conflict, teardown)
from llmd_ray.cluster.plan import (NodePlan, Plan, bridge_commands, make_plan, node_argv, node_network_commands,
                                   nsenter_argv)

STATE_FILE = "state.json"


class ClusterUnavailable(RuntimeError):
    """This host cannot run the cluster (the reason says why); tests skip on it."""


def default_ray_bin() -> str:
    """The ``ray`` CLI next to this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).with_name("ray")
    return str(here) if here.exists() else "ray"


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str, check: Callable[[], None] | None = None,
               period_s: float = 0.25) -> Any:
    """Poll ``cond`` until truthy (returned); ``check`` may raise early (a node died); TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(period_s)


def tcp_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class Cluster:
    """The multi-host test cluster on this machine (see ``llmd_ray.cluster.plan`` for the layout)."""

    def __init__(self, config: ClusterConfig | dict | None = None, ray_bin: str | None = None):
        self.config = ClusterConfig.model_validate(config or {})
        self.plan: Plan = make_plan(self.config)
        self.ray_bin = ray_bin or default_ray_bin()
        self._procs: dict[str, subprocess.Popen] = {}
        self._pids: dict[str, int] = {}
        self._cleanup_installed = False

    # -- life cycle ---------------------------------------------------------------------------------------

    def up(self) -> Cluster:
        """Create the network and start every node; on any failure everything made so far is removed."""
        plan = self.plan
        reason = preflight(plan.prefix)
        if reason:
            raise ClusterUnavailable(reason)
        left = owned_netns(plan.prefix) + owned_links(plan.prefix)
        if left:
            raise ClusterSetupError(f"leftovers of an earlier run: {left}; remove them with "
                                    f"`python -m llmd_ray.cluster down --prefix {plan.prefix}`")
        conflict = subnet_conflict(self.config.subnet, plan.bridge)
        if conflict:
            raise ClusterSetupError(f"subnet {self.config.subnet} overlaps a host route: {conflict}")
        try:
            self._network_up()
            self._start(plan.head)
            wait_until(lambda: tcp_open(str(plan.head.ip), plan.gcs_port), self.config.start_timeout_s,
                       f"the head's GCS on {plan.gcs_address}", self._check_alive)
            for node in plan.workers:
                self._start(node)
            wait_until(lambda: len(self.alive_nodes()) == len(plan.nodes), self.config.start_timeout_s,
                       f"{len(plan.nodes)} nodes to join", self._check_alive, period_s=0.5)
            if plan.dashboard_url:
                wait_until(lambda: tcp_open(str(plan.head.ip), plan.dashboard_port), self.config.start_timeout_s,
                           f"the dashboard on {plan.dashboard_url}", self._check_alive)
            self._write_state()
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):  # the logs go with the run dir: keep their tails
                e.add_note("\n".join(f"--- {n.name}: {n.log_path}\n{self.log_tail(n.name, 15)}" for n in plan.nodes))
            self.down()
            raise
        return self

    def down(self, grace_s: float = 3.0) -> Removed:
        """Stop every node's processes, remove the namespaces, links and run dir (idempotent)."""
        removed = teardown(self.plan.prefix, self.plan.run_dir, grace_s)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        self._pids.clear()
        return removed

    def install_cleanup(self) -> None:
        """Tear down at interpreter exit and on SIGTERM/SIGHUP too (a killed test run leaves nothing behind)."""
        if self._cleanup_installed:
            return
        self._cleanup_installed = True
        atexit.register(self.down)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)

            def handler(signum, frame, previous=previous):
                self.down()
                if callable(previous):
                    previous(signum, frame)
                else:
                    raise SystemExit(128 + signum)

            signal.signal(sig, handler)

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # -- nodes --------------------------------------------------------------------------------------------

    def _network_up(self) -> None:
        for argv in bridge_commands(self.plan):
            run(argv)
        for node in self.plan.nodes:
            tmp = Path(node.tmp_dir)
            tmp.mkdir(parents=True, exist_ok=True)
            tmp.chmod(0o1777)
            for argv in node_network_commands(self.plan, node):
                run(argv)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
        env.update(self.plan.env)
        return env

    def _start(self, node: NodePlan) -> None:
        log = open(node.log_path, "ab")
        try:
            proc = subprocess.Popen(node_argv(self.plan, node, self.ray_bin), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)
        finally:
            log.close()
        self._procs[node.name] = proc
        self._pids[node.name] = proc.pid

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ClusterSetupError(f"node {name} exited ({proc.returncode}):\n{self.log_tail(name)}")

    def log_tail(self, node: str, lines: int = 40) -> str:
        """The last lines of the node's ``ray start`` output."""
        try:
            text = Path(self.plan.node(node).log_path).read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def session_dir(self, node: str) -> Path | None:
        """The node's newest Ray session directory, as seen from the host (None before Ray made one)."""
        sessions = sorted(Path(self.plan.node(node).ray_dir).glob("session_2*"))
        return sessions[-1] if sessions else None

    def alive_nodes(self) -> dict[str, str]:
        """Node IP -> Ray node id of every alive node, asked of the head's GCS over the bridge."""
        from ray._raylet import GcsClient
        from ray.core.generated import gcs_pb2

        try:
            infos = GcsClient(address=self.plan.gcs_address).get_all_node_info(timeout=5)
        except Exception:  # GCS not answering yet
            return {}
        return {i.node_manager_address: i.node_id.hex() for i in infos.values()
                if i.state == gcs_pb2.GcsNodeInfo.GcsNodeState.ALIVE}

    def node_ids(self) -> dict[str, str]:
        """Node name -> Ray node id."""
        by_ip = self.alive_nodes()
        return {n.name: by_ip[str(n.ip)] for n in self.plan.nodes if str(n.ip) in by_ip}

    def kill_node(self, node: str) -> int:
        """Lose worker ``node`` as a crashed host is lost: SIGKILL every process in its namespace at once (its
        raylet, workers and their engine processes); returns how many. Its namespace, address and run dir stay
        for ``restart_node``; the GCS finds the node dead by its health checks."""
        plan_node = self.plan.node(node)
        if plan_node.is_head:
            raise ValueError("kill_node: the head holds the GCS; only a worker node can be lost and restarted")
        killed = kill_netns_processes([plan_node.netns], grace_s=0, term=False)
        proc = self._procs.pop(node, None)
        if proc is not None:
            proc.wait(timeout=10)
        self._pids.pop(node, None)
        return killed

    def restart_node(self, node: str, timeout_s: float | None = None) -> str:
        """Start a killed worker again in its namespace, once the GCS has marked the old node dead (a new Ray
        node on the same address); returns its new Ray node id."""
        plan_node, ip = self.plan.node(node), str(self.plan.node(node).ip)
        if netns_pids(plan_node.netns):
            raise ClusterSetupError(f"restart_node: {node} still has processes; kill_node({node!r}) first")
        timeout_s = timeout_s or self.config.start_timeout_s
        wait_until(lambda: ip not in self.alive_nodes(), timeout_s, f"the GCS to mark {node} dead", period_s=0.5)
        self._start(plan_node)
        new_id = wait_until(lambda: self.alive_nodes().get(ip), timeout_s, f"{node} to rejoin", self._check_alive,
                            period_s=0.5)
        self._write_state()
        return new_id

    def node_pid(self, node: str) -> int:
        if node not in self._pids:
            self._read_state()
        if node not in self._pids:
            raise KeyError(f"node {node!r} is not running (no pid in {self._state_path()})")
        return self._pids[node]

    def command(self, node: str, argv: list[str], cwd: str | None = None) -> list[str]:
        """``argv`` wrapped to run on ``node`` (its network and mount namespaces), in ``cwd`` (default: ours)."""
        return nsenter_argv(self.node_pid(node), argv, cwd or os.getcwd())

    def exec(self, node: str, argv: list[str], timeout: float | None = None, cwd: str | None = None,
             **kw: Any) -> subprocess.CompletedProcess:
        """Run ``argv`` on ``node`` (e.g. a Ray driver: ``ray.init(address=<gcs_address>)`` finds the node's raylet).
        ``cwd`` must exist on the node: the host's directories do, except /tmp and /dev/shm (the node's own)."""
        kw.setdefault("env", self._env())
        return subprocess.run(self.command(node, argv, cwd), timeout=timeout, **kw)

    # -- state (for the CLI: `up` in one process, `exec` / `down` in another) ---------------------------------

    def _state_path(self) -> Path:
        return Path(self.plan.run_dir) / STATE_FILE

    def _write_state(self) -> None:
        state = {"config": self.config.model_dump(mode="json"), "pids": self._pids}
        self._state_path().write_text(json.dumps(state, indent=2))

    def _read_state(self) -> None:
        try:
            state = json.loads(self._state_path().read_text())
        except (OSError, ValueError):
            return
        self._pids.update({k: int(v) for k, v in state.get("pids", {}).items()})

    @classmethod
    def attach(cls, prefix: str = "llmdr", run_dir: str | None = None) -> Cluster:
        """The cluster an earlier ``up`` started (its config from the state file)."""
        base = Path(run_dir) if run_dir else Path("/tmp") / prefix
        try:
            state = json.loads((base / STATE_FILE).read_text())
        except (OSError, ValueError) as e:
            raise ClusterSetupError(f"no cluster state in {base} ({e}); is the cluster up?") from None
        cluster = cls(state["config"])
        cluster._pids = {k: int(v) for k, v in state.get("pids", {}).items()}
        return cluster

    def describe(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "gcs_address": plan.gcs_address, "dashboard_url": plan.dashboard_url, "serve_url": plan.serve_url,
            "host_ip": str(plan.host_ip), "bridge": plan.bridge,
            "nodes": [{"name": n.name, "netns": n.netns, "ip": str(n.ip), "resources": n.resources,
                       "num_cpus": n.num_cpus, "log": n.log_path, "pid": self._pids.get(n.name)} for n in plan.nodes],
        }
