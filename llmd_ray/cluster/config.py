"""``ClusterConfig``: the one boundary model of the multi-host test cluster (CLI flags, fixtures).

Everything the cluster creates is named ``<prefix>-...`` (network namespaces, veth pairs, the bridge, the run
directory), so ``down`` can find and remove what a crashed run left behind. The cluster's addresses are all in
``subnet``, a private range on a bridge the cluster creates: nothing else is ever addressed.

This module imports neither Ray nor vLLM.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Linux interface names hold 15 characters: "<prefix>-<node>-h" with node "head" leaves 8 for the prefix.
PREFIX_PATTERN = r"^[a-z][a-z0-9]{0,7}$"
MAX_WORKERS = 8


class ClusterConfig(BaseModel):
    """A Ray head and ``workers`` worker nodes, each in its own network and mount namespace."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="llmdr", pattern=PREFIX_PATTERN, description="Name prefix of everything the "
                        "cluster creates (namespaces `<prefix>-head`, `<prefix>-w1`, ..., bridge `<prefix>-br0`).")
    subnet: IPv4Network = Field(default=IPv4Network("10.213.7.0/24"), description="Private IPv4 subnet of the "
                                "bridge: the host side gets its first address, the head the second, workers the next.")
    workers: int = Field(default=2, ge=1, le=MAX_WORKERS, description="Worker nodes besides the head.")
    head_num_cpus: int = Field(default=1, ge=0, description="Ray CPUs the head advertises (the ingress, Serve's "
                               "controller and proxy need none).")
    worker_num_cpus: int = Field(default=1, ge=0, description="Ray CPUs each worker advertises (one engine replica "
                                 "reserves 1).")
    worker_resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources every worker "
                                               "advertises besides its own `node-<name>: 1`.")
    object_store_mb: int = Field(default=256, ge=80, description="Each node's Ray object store (MiB), in its /dev/shm.")
    shm_mb: int = Field(default=1024, ge=64, description="Size of each node's private /dev/shm tmpfs (MiB).")
    gcs_port: int = Field(default=6379, ge=1, le=65535, description="The head's GCS port (on the head's address).")
    dashboard: bool = Field(default=True, description="Run Ray's dashboard on the head (its REST API: `serve deploy`, "
                            "the state API, job submission) on the head's address.")
    dashboard_port: int = Field(default=8265, ge=1, le=65535, description="The dashboard's port on the head.")
    serve_port: int = Field(default=8000, ge=1, le=65535, description="The port a Serve proxy is expected on (the "
                            "cluster does not start Serve; it reports the URL).")
    run_dir: Path | None = Field(default=None, description="Where each node's private /tmp and log live on the host "
                                 "(`<run_dir>/<node>/`); None: /tmp/<prefix>. Removed by `down`.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for every node's Ray processes "
                                "(PYTHONHASHSEED=0, RAY_USAGE_STATS_ENABLED=0 and RAY_AUTH_MODE=disabled unless given here).")
    node_cores: dict[str, list[int]] = Field(default_factory=dict, description="Cores a node's processes may run "
                                             "on (`taskset`), by node name (`head`, `w1`, ...), as a host of its own "
                                             "would have: engines on different nodes then bind different cores. "
                                             "A node not named runs on every core.")
    start_timeout_s: float = Field(default=90.0, gt=0, description="How long `up` waits for every node to join.")

    @model_validator(mode="after")
    def _check(self) -> ClusterConfig:
        net = self.subnet
        if not net.is_private or net.is_loopback or net.is_link_local or net.is_multicast:
            raise ValueError(f"subnet: {net} is not a private range; use e.g. 10.213.7.0/24")
        if net.num_addresses - 2 < self.workers + 2:  # host side, head, workers
            raise ValueError(f"subnet: {net} has too few addresses for the host, the head and {self.workers} workers")
        for key in self.worker_resources:
            if key.startswith("node-"):
                raise ValueError(f"worker_resources.{key}: `node-<name>` resources are the cluster's own")
        names = {"head", *(f"w{i}" for i in range(1, self.workers + 1))}
        for name, cores in self.node_cores.items():
            if name not in names:
                raise ValueError(f"node_cores.{name}: no such node (nodes: {', '.join(sorted(names))})")
            if not cores or any(c < 0 for c in cores):
                raise ValueError(f"node_cores.{name}: give one or more core numbers >= 0, got {cores}")
        if self.dashboard and self.dashboard_port == self.gcs_port:
            raise ValueError("dashboard_port: equals gcs_port")
        return self

    @property
    def resolved_run_dir(self) -> Path:
        return self.run_dir if self.run_dir is not None else Path("/tmp") / self.prefix
