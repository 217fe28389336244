"""Shared inputs of the KubeRay render tests: a cluster-ready P/D serve config and a ClusterSpec maker."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmd_ray.kuberay.spec import ClusterSpec

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "serve_configs" / "default.yaml").read_text())
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

# A P/D app whose variants are already cluster-ready (GPUs, bounds, pods), written here so the test does
# not depend on which serve configs exist.
PD_APP = {
    "proxy_location": "EveryNode",
    "http_options": {"host": "127.0.0.1", "port": 8000},
    "applications": [{
        "name": "default", "route_prefix": "/", "import_path": "llmd_ray:build_app",
        "args": {
            "engine": {"model": "tiny-llama"},
            "variants": [
                {"name": "h100-prefill", "role": "prefill", "accelerator": "H100", "accelerators_per_replica": 2,
                 "engine": {"tensor_parallel_size": 2}, "replica_num_gpus": 2, "replica_num_cpus": 1.5,
                 "min_replicas": 1, "max_replicas": 9,
                 "pod": {"resources": {"cpu": "16", "memory": "128Gi"}, "node_selector": {"gpu": "h100"},
                         "tolerations": [GPU_TAINT], "replicas_per_pod": 4}},
                {"name": "l4-decode", "role": "decode", "accelerator": "L4", "replica_num_gpus": 1, "num_replicas": 2,
                 "pod": {"node_selector": {"gpu": "l4"}}},
            ],
        },
        "deployments": [{"name": "LLMServer-l4-decode", "health_check_period_s": 5}],
    }],
}


def spec(**over) -> ClusterSpec:
    base = {"name": "llama", "namespace": "llm", "image": "img:1", "serve_config": "unused.yaml",
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "pvc": {"claim_name": "weights", "path": "llama"}}}
    base.update(over)
    return ClusterSpec.model_validate(base)
