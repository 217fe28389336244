"""serveConfigV2 from the serve config that ``serve run`` uses (one source of truth).

The serve config YAML is loaded as is; the RayService gets a copy in which:

- the HTTP proxy listens on 0.0.0.0 (KubeRay's serve Service must reach it);
- every application keeps its runtime_env, and its ``env_vars`` carry
  PYTHONHASHSEED (set when missing) because KV-event block hashes must agree
  between engines, routers and the KV index;
- ``args_overrides`` are deep-merged into each application's ``args``, and with
  a model source every ``engine:`` block in the args is pointed at it;
- each variant's deployment gets an ``applications[].deployments[]`` entry whose
  ``ray_actor_options`` request one ``llmd-variant-<name>`` unit, its GPUs and
  CPUs, and whose replica bounds are the variant's (``num_replicas`` when fixed,
  ``autoscaling_config`` otherwise). Serve replaces a deployment's code-level
  ``ray_actor_options`` with the config's, so the entry carries all of them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.spec import ClusterSpec, VariantSpec

SERVE_PORT = 8000
AGGREGATED_BUILDER = "llmd_ray:build_app"


def load_serve_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"serve config {path} does not exist", param="serve_config")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"serve config {path}: invalid YAML: {e}", param="serve_config") from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get("applications"), list) or not cfg["applications"]:
        raise ConfigError(f"serve config {path}: needs a non-empty `applications` list", param="serve_config")
    return cfg


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `override` merged in; mappings merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _point_engines_at(args: Any, model: str, served_name: str) -> int:
    """Set `model` (and `served_model_name`) in every `engine`-named mapping of the args; returns how many."""
    n = 0
    if isinstance(args, dict):
        for key, value in args.items():
            if isinstance(value, dict) and (key == "engine" or key.endswith("_engine")):
                value["model"] = model
                if model != served_name:
                    value["served_model_name"] = served_name
                n += 1
            n += _point_engines_at(value, model, served_name)
    elif isinstance(args, list):
        n += sum(_point_engines_at(v, model, served_name) for v in args)
    return n


def _deployment_entry(app: dict[str, Any], name: str) -> dict[str, Any]:
    deps = app.setdefault("deployments", [])
    for d in deps:
        if d.get("name") == name:
            return d
    deps.append({"name": name})
    return deps[-1]


def wire_variant(app: dict[str, Any], v: VariantSpec) -> dict[str, Any]:
    """Make `v.deployment` request the variant's Ray resource, GPUs, CPUs and replica bounds."""
    entry = _deployment_entry(app, v.deployment)
    opts = dict(entry.get("ray_actor_options") or {})
    opts["num_cpus"] = v.cpus_per_replica
    opts["num_gpus"] = v.gpus_per_replica
    opts["resources"] = {**(opts.get("resources") or {}), v.ray_resource: 1}
    entry["ray_actor_options"] = opts
    if v.min_replicas == v.max_replicas:
        entry.pop("autoscaling_config", None)
        entry["num_replicas"] = v.min_replicas
    else:
        auto = dict(entry.get("autoscaling_config") or {})
        auto.update(min_replicas=v.min_replicas, max_replicas=v.max_replicas)
        if v.min_replicas == 0:
            auto.setdefault("initial_replicas", 1)
        entry["num_replicas"] = "auto"
        entry["autoscaling_config"] = auto
    return entry


def build_serve_config(spec: ClusterSpec, serve_cfg: dict[str, Any]) -> dict[str, Any]:
    """The serveConfigV2 document for `spec`, from the loaded serve config."""
    cfg = copy.deepcopy(serve_cfg)
    http = cfg.get("http_options") or {}
    cfg["http_options"] = {**http, "host": "0.0.0.0", "port": http.get("port", SERVE_PORT)}
    apps = cfg["applications"]
    names = [a.get("name", "default") for a in apps]
    if spec.applications is not None:
        missing = [n for n in spec.applications if n not in names]
        if missing:
            raise ConfigError(f"applications: {missing} not in the serve config (it has {names})", param="applications")
        apps = [a for a in apps if a.get("name", "default") in spec.applications]
        cfg["applications"] = apps
        names = [a.get("name", "default") for a in apps]
    unknown = sorted(set(spec.args_overrides) - set(names))
    if unknown:
        raise ConfigError(f"args_overrides: {unknown} not among the applications {names}", param="args_overrides")
    by_name = dict(zip(names, apps))
    for name, app in by_name.items():
        env = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env.setdefault("PYTHONHASHSEED", spec.python_hash_seed)
        args = deep_merge(app.get("args") or {}, spec.args_overrides.get(name, {}))
        if spec.model is not None and _point_engines_at(args, spec.model.engine_model, spec.model.name) == 0:
            if app.get("import_path") != AGGREGATED_BUILDER:
                raise ConfigError(f"application {name!r}: its args have no `engine` block to point at model "
                                  f"{spec.model.name!r}; add one with args_overrides", param="model")
            args["engine"] = {"model": spec.model.engine_model}
            if spec.model.engine_model != spec.model.name:
                args["engine"]["served_model_name"] = spec.model.name
        app["args"] = args
    for v in spec.variants:
        if v.application not in by_name:
            raise ConfigError(f"variant {v.name!r}: application {v.application!r} is not deployed (have {names})",
                              param="variants.application")
        app = by_name[v.application]
        if app.get("import_path") == AGGREGATED_BUILDER and v.deployment == "LLMServer" and v.gpus_per_replica:
            tp = ((app["args"].get("engine") or {}).get("tensor_parallel_size")) or 1
            if tp != v.gpus_per_replica:
                raise ConfigError(
                    f"variant {v.name!r}: {v.gpus_per_replica} GPUs per replica but engine.tensor_parallel_size is {tp}; "
                    f"set args_overrides.{v.application}.engine.tensor_parallel_size: {v.gpus_per_replica}",
                    param="variants.gpus_per_replica")
        wire_variant(app, v)
    return cfg


def dump_serve_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False, width=100)
