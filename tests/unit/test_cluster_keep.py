"""A checkout or venv under /tmp stays reachable on a test node whose /tmp is private."""

from llmd_ray.cluster.config import ClusterConfig
from llmd_ray.cluster.plan import host_paths_under_tmp, make_plan, node_script


def test_only_the_outermost_paths_under_tmp_are_kept():
    assert host_paths_under_tmp(["/tmp/ci/p/.venv", "/tmp/ci/p", "/work/main", "/tmp/other"]) == ["/tmp/ci/p", "/tmp/other"]
    assert host_paths_under_tmp(["/work/main", "/usr"]) == []


def test_node_script_binds_kept_paths_back_after_the_private_tmp():
    plan = make_plan(ClusterConfig())
    node = plan.head
    plain = node_script(plan, node, "/work/main/.venv/bin/ray")
    assert "/mnt" not in plain
    script = node_script(plan, node, "/tmp/ci/p/.venv/bin/ray", ["/tmp/ci/p"])
    steps = script.split("; ")
    private = steps.index(f"mount --bind {node.tmp_dir} /tmp")
    assert steps.index("mount --bind /tmp /mnt") < private  # the host's /tmp stays reachable first
    assert steps[private + 1:private + 3] == ["mkdir -p /tmp/ci/p", "mount --bind /mnt/ci/p /tmp/ci/p"]
    assert steps[-1].startswith("exec /tmp/ci/p/.venv/bin/ray start")
