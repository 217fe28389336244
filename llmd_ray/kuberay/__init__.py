"""KubeRay: RayService manifests for llmd-ray, validated against the real CRDs,
applied and watched with the official `kubernetes` client.

- :mod:`.spec`: ``ClusterSpec`` (serve config, args overrides, model, image, head) from YAML;
- :mod:`.serve_config`: serveConfigV2 from the serve config ``serve run`` uses;
- :mod:`.groups`: one worker group per variant of the app's ``args.variants``
  (``llmd_ray.topology.Variant``, the one model of a variant);
- :mod:`.render`: the RayService;
- :mod:`.crd` / :mod:`.validate` / :mod:`.wiring`: CRD -> JSON Schema validation, serveConfigV2 checks;
- :mod:`.structural`: the KubeRay CRDs' structural schema, shipped as package data
  (``schemas/kuberay-crds.json``), so validation needs no CRD files;
- :mod:`.client` / :mod:`.status`: server-side apply, status, wait, delete;
- :mod:`.upgrade_strategy` / :mod:`.upgrade` / :mod:`.upgrade_follow` / :mod:`.rollout`: ``spec.upgradeStrategy``,
  and ``upgrade``: the JSON Patch to a new version, then the rollout followed to the new cluster;
- :mod:`.apiserver`: a local etcd + kube-apiserver for tests;
- ``python -m llmd_ray.kuberay {render,validate,apply,upgrade,status,wait,delete,schema}``.

Importing this package loads neither Ray nor the `kubernetes` client.
"""

from llmd_ray.kuberay.crd import CRDRegistry, SchemaError
from llmd_ray.kuberay.groups import WorkerGroup, worker_groups
from llmd_ray.kuberay.render import render_rayservice, render_spec_file
from llmd_ray.kuberay.serve_config import build_serve_config, load_serve_config
from llmd_ray.kuberay.spec import ClusterSpec, ModelSource, load_spec
from llmd_ray.kuberay.status import ServiceStatus, parse_status
from llmd_ray.kuberay.validate import KNOWN_BUILDERS, Problem, validate_document

__all__ = [
    "ClusterSpec", "ModelSource", "load_spec", "WorkerGroup", "worker_groups",
    "load_serve_config", "build_serve_config", "render_rayservice", "render_spec_file",
    "CRDRegistry", "SchemaError", "Problem", "validate_document", "KNOWN_BUILDERS",
    "ServiceStatus", "parse_status",
]
