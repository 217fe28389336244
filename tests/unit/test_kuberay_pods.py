"""What each pod needs of its host on KubeRay (hosts.py): the renderer writes it into every group and the
validator fails, naming the JSON path, on a manifest that lacks it."""

from __future__ import annotations

import copy

import pytest
import yaml

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.crd import CRDRegistry
from llmd_ray.kuberay.hosts import MIN_TERMINATION_GRACE_S, quantity_bytes
from llmd_ray.kuberay.pod_checks import check_pods
from llmd_ray.kuberay.prestop import wait_drained
from llmd_ray.kuberay.render import render_rayservice
from llmd_ray.kuberay.validate import validate_document

from tests.unit.kuberay_fixtures import PD_APP, REPO, spec

HEAD = "spec.rayClusterConfig.headGroupSpec"
W0 = "spec.rayClusterConfig.workerGroupSpecs[0]"
C0 = f"{W0}.template.spec.containers[0]"
HC = f"{HEAD}.template.spec.containers[0]"
MANIFESTS = sorted(p for p in (REPO / "kuberay").glob("*.yaml"))
TIERS = {"memory_bytes": 2 << 30, "shared": True, "shared_bytes": 1 << 30}


def pd_manifest() -> dict:
    return yaml.safe_load((REPO / "kuberay" / "pd.yaml").read_text())


def serve_cfg(doc: dict) -> dict:
    return yaml.safe_load(doc["spec"]["serveConfigV2"])


def _pod(doc, group="w0"):
    rc = doc["spec"]["rayClusterConfig"]
    return (rc["headGroupSpec"] if group == "head" else rc["workerGroupSpecs"][0])["template"]["spec"]


def _set(path_fn):
    def mutate(doc):
        path_fn(doc)
        return doc
    return mutate


def _del_mount(group):
    def f(doc):
        c = _pod(doc, group)["containers"][0]
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/dev/shm"]
    return f


def _env(doc, group, value=None):
    c = _pod(doc, group)["containers"][0]
    if value is None:
        c["env"] = [e for e in c["env"] if e["name"] != "PYTHONHASHSEED"]
    else:
        next(e for e in c["env"] if e["name"] == "PYTHONHASHSEED")["value"] = value


def _with_tiers(doc, tiers):
    cfg = serve_cfg(doc)
    cfg["applications"][0]["args"]["kv_tiers"] = tiers
    cfg["applications"][0]["args"]["variants"][0]["role"] = "aggregated"  # the tiers run on aggregated replicas
    doc["spec"]["serveConfigV2"] = yaml.safe_dump(cfg)


# (id, mutation, expected JSON path, a word of the message)
CASES = [
    ("no shm mount on a worker", _del_mount("w0"), f"{C0}.volumeMounts", "/dev/shm"),
    ("no shm mount on the head", _del_mount("head"), f"{HC}.volumeMounts", "/dev/shm"),
    ("shm not in memory", lambda d: _pod(d)["volumes"][-1]["emptyDir"].pop("medium"),
     f"{W0}.template.spec.volumes[1].emptyDir.medium", "Memory"),
    ("shm without a size", lambda d: _pod(d)["volumes"][-1]["emptyDir"].pop("sizeLimit"),
     f"{W0}.template.spec.volumes[1].emptyDir.sizeLimit", "missing"),
    ("shm mount names no volume", lambda d: _pod(d).__setitem__("volumes", _pod(d)["volumes"][:1]),
     f"{W0}.template.spec.volumes", "dshm"),
    ("no object store size", lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"].pop("object-store-memory"),
     f"{W0}.rayStartParams.object-store-memory", "/tmp"),
    ("object store larger than shm", lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
     .__setitem__("object-store-memory", str(5 << 30)), f"{HEAD}.template.spec.volumes[1].emptyDir.sizeLimit", "cannot hold"),
    ("engine pod shm leaves no headroom", lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"]
     .__setitem__("object-store-memory", str(8 << 30)), f"{W0}.template.spec.volumes[1].emptyDir.sizeLimit", "engine replicas"),
    ("tier pools do not fit the shm", lambda d: _with_tiers(d, {"memory_bytes": 4 << 30}),
     f"{W0}.template.spec.volumes[1].emptyDir.sizeLimit", "engine replicas"),
    ("shared tier larger than an object store", lambda d: _with_tiers(d, {"memory_bytes": 1 << 20, "shared": True,
                                                                          "shared_bytes": 3 << 30}),
     f"{HEAD}.rayStartParams.object-store-memory", "SharedKVStore"),
    ("shm takes all the memory", lambda d: _pod(d)["containers"][0]["resources"]["limits"].__setitem__("memory", "8Gi"),
     f"{W0}.template.spec.volumes[1].emptyDir.sizeLimit", "memory limit"),
    ("no hash seed on a worker", lambda d: _env(d, "w0"), f"{C0}.env", "PYTHONHASHSEED"),
    ("another hash seed on the head", lambda d: _env(d, "head", "7"), f"{HC}.env[0].value", "differs"),
    ("no serve port", lambda d: _pod(d)["containers"][0].__setitem__("ports", [{"name": "metrics", "containerPort": 8080}]),
     f"{C0}.ports", "8000"),
    ("metrics port not declared", lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"]
     .__setitem__("metrics-export-port", "9090"), f"{C0}.ports", "9090"),
    ("no grace period", lambda d: _pod(d).pop("terminationGracePeriodSeconds"),
     f"{W0}.template.spec.terminationGracePeriodSeconds", "default 30"),
    ("short grace period on the head", lambda d: _pod(d, "head").__setitem__("terminationGracePeriodSeconds", 10),
     f"{HEAD}.template.spec.terminationGracePeriodSeconds", f"at least {MIN_TERMINATION_GRACE_S}"),
    ("no preStop drain", lambda d: _pod(d)["containers"][0].pop("lifecycle"), f"{C0}.lifecycle.preStop", "drain"),
]


@pytest.mark.parametrize("mutate, path, word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_manifest_lacking_a_pod_need_fails_at_its_path(mutate, path, word):
    doc = pd_manifest()
    mutate(doc)
    problems = check_pods(doc["spec"], serve_cfg(doc))
    assert [p for p, _ in problems] == [path], problems
    assert word in problems[0][1]
    # and the validator reports it as an error, with that path
    errors = [str(p) for p in validate_document(doc, CRDRegistry.load(), serve_schema=False) if p.severity == "error"]
    assert any(e.startswith(f"{path}: ") and word in e for e in errors), errors


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_the_checked_in_manifests_meet_every_pod_need(manifest):
    doc = yaml.safe_load(manifest.read_text())
    assert check_pods(doc["spec"], serve_cfg(doc)) == []


def test_every_group_gets_shm_object_store_seed_ports_and_grace():
    doc = render_rayservice(spec(termination_grace_s=90), copy.deepcopy(PD_APP), "pd.yaml")
    rc = doc["spec"]["rayClusterConfig"]
    for group in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        (c,) = pod["containers"]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]
        assert shm["medium"] == "Memory" and {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        assert int(group["rayStartParams"]["object-store-memory"]) < quantity_bytes(shm["sizeLimit"])
        assert {"name": "PYTHONHASHSEED", "value": "0"} in c["env"]
        assert {p["containerPort"] for p in c["ports"]} >= {8000, 8080}
        assert pod["terminationGracePeriodSeconds"] == 90
    assert "lifecycle" not in rc["headGroupSpec"]["template"]["spec"]["containers"][0]  # the head cannot be drained
    for group in rc["workerGroupSpecs"]:
        cmd = group["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert cmd == ["python", "-m", "llmd_ray.kuberay.prestop", "--deadline-s", "80"]


@pytest.mark.parametrize("over, cfg_tiers, message", [
    ({"workers": {"shm_size": "4Gi", "object_store_memory": "4Gi"}}, None, "cannot hold"),
    ({"head": {"shm_size": "1Gi", "object_store_memory": "2Gi"}}, None, "cannot hold"),
    ({"head": {"resources": {"cpu": "4", "memory": "4Gi"}, "shm_size": "4Gi"}}, None, "all of the pod's"),
    ({}, {"memory_bytes": 4 << 30}, "cannot hold"),  # 4 replicas per pod x 4 GiB pools
    ({}, {**TIERS, "shared_bytes": 3 << 30}, "SharedKVStore"),  # the head's 2 GiB object store
])
def test_the_renderer_refuses_pods_whose_shm_cannot_hold_their_needs(over, cfg_tiers, message):
    cfg = copy.deepcopy(PD_APP)
    if cfg_tiers is not None:
        cfg["applications"][0]["args"]["kv_tiers"] = cfg_tiers
        for v in cfg["applications"][0]["args"]["variants"]:
            v["role"] = "aggregated"
    with pytest.raises(ConfigError, match=message):
        render_rayservice(spec(**over), cfg, "pd.yaml")


def test_the_grace_period_is_at_least_the_drain_minimum():
    with pytest.raises(ValueError, match="termination_grace_s"):
        spec(termination_grace_s=MIN_TERMINATION_GRACE_S - 1)


@pytest.mark.parametrize("value, expected", [
    ("8Gi", 8 << 30), ("512Mi", 512 << 20), ("1G", 10**9), ("100", 100), (4096, 4096), ("1.5Gi", 3 << 29),
    ("eight", None), ("8 Gi", None), (True, None),
])
def test_memory_quantities_in_bytes(value, expected):
    assert quantity_bytes(value) == expected


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


@pytest.mark.parametrize("counts, deadline, min_wait, drained, waited", [
    ([0], 100, 0, True, 0),            # nothing on the node
    ([0] * 20, 100, 30, True, 30),     # empty at once, but the proxy gets its minimum
    ([3, 2, 1, 0, 0], 100, 0, True, 6),  # replicas move off, polled every 2 s
    ([3] * 100, 10, 0, False, 10),     # never empties: returns at the deadline
    ([None] * 100, 10, 0, False, 10),  # the state API cannot be reached: waits to the deadline
])
def test_prestop_waits_until_serve_has_left_the_node_or_the_deadline(counts, deadline, min_wait, drained, waited):
    clock, it = Clock(), iter(counts)
    assert wait_drained(lambda: next(it), deadline, min_wait, clock=clock, sleep=clock.sleep, poll_s=2) is drained
    assert clock.t == waited


def test_a_placed_shared_store_only_needs_room_where_it_can_land():
    doc = pd_manifest()
    _with_tiers(doc, {"memory_bytes": 1 << 20, "shared": True, "shared_bytes": 3 << 30,
                      "shared_store_resources": {"llmd-variant-decode": 0.01}})
    assert check_pods(doc["spec"], serve_cfg(doc)) == []  # decode's 4 GiB store holds it; the head is not a host
    _with_tiers(doc, {"memory_bytes": 1 << 20, "shared": True, "shared_bytes": 5 << 30,
                      "shared_store_resources": {"llmd-variant-decode": 0.01}})
    assert [p for p, _ in check_pods(doc["spec"], serve_cfg(doc))] == [
        "spec.rayClusterConfig.workerGroupSpecs[1].rayStartParams.object-store-memory"]
