"""Podman for the container tests (tests/integration/test_container.py): run, exec, inspect and remove containers
and networks of one test run, every one labelled so a run killed half-way is cleaned up by the next one.

Runs as root on hosts without systemd or journald too (cgroupfs manager, file events), as this machine is. Debian
12's crun refuses hybrid cgroups (v1 controllers beside a v2 mount), so runc is used where installed; podman's
default rlimits (1048576 open files) exceed what a process without CAP_SYS_RESOURCE may set, so containers get
the test process's own limits."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

LABEL = "llmd-ray-test=container"


def podman_cmd() -> list[str]:
    cmd = ["podman"]
    runtime = os.environ.get("LLMD_RAY_PODMAN_RUNTIME") or ("runc" if shutil.which("runc") else "")
    if runtime:
        cmd += ["--runtime", runtime]
    if not Path("/run/systemd/system").exists():  # no systemd: podman's defaults (systemd cgroups, journald) fail
        cmd += ["--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    return cmd


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run([*podman_cmd(), *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def ulimits() -> list[str]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc_hard == resource.RLIM_INFINITY else min(nproc_hard, 32768)
    nofile = tuple(65536 if n == resource.RLIM_INFINITY else n for n in nofile)
    return ["--ulimit", f"nofile={nofile[0]}:{nofile[1]}", "--ulimit", f"nproc={nproc}:{nproc}"]


def unavailable(image: str) -> str | None:
    """Why the container tests cannot run here, or None.

    They start the image's engines (about 20 minutes on a 2-core machine), beyond `make test`'s 45-minute budget
    together with the rest: they run when asked, LLMD_RAY_CONTAINER_TESTS=1 (`make test-container`, or
    `.ci/run` with LLMD_RAY_CI_IMAGE=1, which builds the image first).
    """
    if os.environ.get("LLMD_RAY_CONTAINER_TESTS") != "1":
        return "the container tests run when asked: LLMD_RAY_CONTAINER_TESTS=1 (make test-container)"
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install -y podman)"
    if os.geteuid() != 0:
        return "the container tests run rootful podman (bridge networks, cpusets): run them as root"
    r = podman("image", "exists", image, check=False)
    if r.returncode != 0:
        return f"the image {image} is not in podman's store: build it with `make image`"
    return None


def clean_leftovers() -> None:
    """Containers and networks a previous, killed run left behind."""
    ids = podman("ps", "-a", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        podman("rm", "-f", "-t", "2", *ids, check=False)
    nets = podman("network", "ls", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    for n in nets:
        podman("network", "rm", "-f", n, check=False)


class Podman:
    """The containers and the network of one test module; :meth:`close` removes them all (call it in a finally)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.network = f"{prefix}-net"
        self.containers: list[str] = []
        podman("network", "create", "--label", LABEL, self.network)

    def run(self, name: str, image: str, *args: str, cpuset: str, command: tuple[str, ...] = (),
            shm: str = "2g") -> str:
        """Start a detached container on the module's network, pinned to `cpuset`; returns its name."""
        full = f"{self.prefix}-{name}"
        self.containers.append(full)
        podman("run", "-d", "--name", full, "--hostname", name, "--label", LABEL, "--network", self.network,
               "--cpuset-cpus", cpuset, "--shm-size", shm, *ulimits(), *args, image, *command)
        return full

    def ip(self, container: str) -> str:
        info = json.loads(podman("inspect", container).stdout)[0]
        nets = info["NetworkSettings"]["Networks"]
        return nets[self.network]["IPAddress"]

    def running(self, container: str) -> bool:
        r = podman("inspect", "--format", "{{.State.Running}}", container, check=False)
        return r.stdout.strip() == "true"

    def exec(self, container: str, *cmd: str, timeout: float = 300) -> str:
        return podman("exec", container, *cmd, timeout=timeout).stdout

    def logs(self, lines: int = 40) -> str:
        out = []
        for c in self.containers:
            r = podman("logs", "--tail", str(lines), c, check=False)
            out.append(f"--- {c} (running: {self.running(c)}) ---\n{r.stdout}{r.stderr}")
        return "\n".join(out)

    def remove(self, container: str) -> None:
        podman("rm", "-f", "-t", "3", container, timeout=180)
        self.containers.remove(container)

    def close(self) -> None:
        if self.containers:
            podman("rm", "-f", "-t", "3", *self.containers, check=False, timeout=180)
        podman("network", "rm", "-f", self.network, check=False)
