"""A multi-host Ray cluster on this machine (``llmd_ray.cluster``): a head and two workers, each in its own network
namespace on a bridge of the cluster's own, with a private /dev/shm and /tmp. Package-scoped: every module of
``tests/integration/multihost/`` deploys its own app onto the one cluster (a REST deploy replaces the previous
module's apps), and it is torn down once the package's tests are done (the tests are ``own_cluster``, so they run
before the shared single-node cluster starts). Skips, saying why, where the host cannot make namespaces (not root, no ``ip``/``unshare``).

Tests talk to the cluster the way a remote client would: HTTP from the host's namespace to the head's address
(Serve's proxy, and the dashboard's REST API for ``serve deploy`` and the state API).
"""

from __future__ import annotations

import time

import pytest

from llmd_ray.cluster import Cluster, ClusterConfig, ClusterUnavailable, preflight, teardown

# `worker: 1` on each worker: a deployment of engines that may run on any worker but not on the head asks for it.
CONFIG = ClusterConfig(prefix="llmdr", subnet="10.213.7.0/24", workers=2, head_num_cpus=1, worker_num_cpus=1,
                       worker_resources={"worker": 1})


@pytest.fixture(scope="package")
def cluster():
    reason = preflight(CONFIG.prefix)
    if reason:
        pytest.skip(f"multi-host cluster unavailable: {reason}")
    print("\n" + teardown(CONFIG.prefix, str(CONFIG.resolved_run_dir)).summary() + " (leftovers)")
    c = Cluster(CONFIG)
    c.install_cleanup()  # atexit + SIGTERM/SIGHUP: a killed run leaves no namespaces behind
    t0 = time.perf_counter()
    try:
        c.up()
    except ClusterUnavailable as e:
        pytest.skip(f"multi-host cluster unavailable: {e}")
    print(f"cluster up in {time.perf_counter() - t0:.1f}s: {c.node_ids()}")
    try:
        yield c
    finally:
        print(c.down().summary())
