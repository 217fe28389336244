"""A multi-host Ray cluster on one machine, for tests (issue 16): a head and worker nodes, each in its own
network namespace (its own address on a bridge the cluster creates) and mount namespace (a private /dev/shm
and /tmp), each advertising a Ray resource naming it (``node-head``, ``node-w1``, ...) so tests can place
deployments. ``python -m llmd_ray.cluster up|status|exec|down``; needs root, ``ip`` and ``unshare``.

Everything it creates is named ``<prefix>-*``; ``down`` removes all of it, also after a crashed run.
"""

from llmd_ray.cluster.cluster import Cluster, ClusterUnavailable
from llmd_ray.cluster.config import ClusterConfig
from llmd_ray.cluster.netns import ClusterSetupError, preflight, teardown
from llmd_ray.cluster.plan import HEAD, Plan, make_plan, node_resource

__all__ = ["Cluster", "ClusterConfig", "ClusterSetupError", "ClusterUnavailable", "HEAD", "Plan", "make_plan",
           "node_resource", "preflight", "teardown"]
