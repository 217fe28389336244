"""serveConfigV2 from the serve config that ``serve run`` uses (one source of truth).

The serve config YAML is loaded as is; the RayService gets a copy in which:

- the HTTP proxy listens on 0.0.0.0 (KubeRay's serve Service must reach it);
- every application keeps its runtime_env, and its ``env_vars`` carry
  PYTHONHASHSEED (set when missing) because KV-event block hashes must agree
  between engines, routers and the KV index;
- ``args_overrides`` are merged into each application's ``args`` (``merge_args``),
  and with a model source the app's ``engine`` block is pointed at it;
- each variant in ``args.variants`` gets the Ray resource ``llmd-variant-<name>: 1``
  in its ``resources``, so ``build_app`` puts its replicas on its worker group.

Nothing else: the deployments' options (CPUs, GPUs, bounds) are what ``build_app``
derives from the variants, and the worker groups are derived from the same
variants (``groups.py``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from llmd_ray.errors import ConfigError
from llmd_ray.kuberay.groups import APP_BUILDER, parse_variants, resource_name
from llmd_ray.kuberay.spec import RESOURCE_PREFIX, ClusterSpec
from llmd_ray.topology.variant import deployment_name

SERVE_PORT = 8000
PATCH = "$patch"
REMOVED_BUILDERS = ("llmd_ray:build_pd_app", "llmd_ray.serving.pd_app:build_pd_app")
PD_MOVED = ("build_pd_app is gone: use import_path llmd_ray:build_app with `variants` with roles, e.g. "
            "[{name: prefill, role: prefill}, {name: decode, role: decode}], and the transport and decider under `pd:`")
NO_VARIANTS = ("its args declare no `variants`, and each RayService worker group is derived from a variant: declare "
               "them in the serve config's args or in the spec's args_overrides.{app}.variants (with num_replicas: null), "
               "e.g. [{{name: h100, accelerator: H100, replica_num_gpus: 1, min_replicas: 1, max_replicas: 8}}]")
# Serve replaces a deployment's code-level options with these; for a variant they belong on the variant.
VARIANT_OWNED = {"ray_actor_options": "replica_num_cpus / replica_num_gpus / resources",
                 "num_replicas": "num_replicas or min/max_replicas", "autoscaling_config": "min/max_replicas and serve_autoscaling",
                 "max_ongoing_requests": "max_ongoing_requests"}


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


def merge_args(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `override` merged in: mappings merge key by key, `null` removes a key (JSON
    merge patch, RFC 7386), `variants` merge by name (a new name is appended, ``{name: x, $patch: delete}``
    removes one), other lists and values are replaced."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = merge_args(out[k] if isinstance(out.get(k), dict) else {}, v)
        elif k == "variants" and isinstance(v, list):
            out[k] = _merge_variants(out.get(k) if isinstance(out.get(k), list) else [], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _merge_variants(base: list[Any], override: list[Any]) -> list[Any]:
    out = copy.deepcopy(base)
    index = {v.get("name"): i for i, v in enumerate(out) if isinstance(v, dict)}
    drop = set()
    for item in override:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"args_overrides: each entry of `variants` needs a `name` to merge by, got {item!r}",
                              param="args_overrides")
        patch = item.get(PATCH)
        body = {k: v for k, v in item.items() if k != PATCH}
        if patch not in (None, "delete"):
            raise ConfigError(f"args_overrides: variant {item['name']!r}: {PATCH}: {patch!r}; only `delete`",
                              param="args_overrides")
        if item["name"] in index:
            if patch == "delete":
                drop.add(index[item["name"]])
            else:
                out[index[item["name"]]] = merge_args(out[index[item["name"]]], body)
        elif patch == "delete":
            raise ConfigError(f"args_overrides: variant {item['name']!r} to delete is not in the serve config",
                              param="args_overrides")
        else:
            index[item["name"]] = len(out)
            out.append(merge_args({}, body))
    return [v for i, v in enumerate(out) if i not in drop]


def _point_engine_at(args: dict[str, Any], model: str, served_name: str) -> None:
    """Point the app's `engine` at the model (variants' engine overrides never name the model)."""
    engine = args.setdefault("engine", {})
    engine["model"] = model
    if model != served_name:
        engine["served_model_name"] = served_name
    else:
        engine.pop("served_model_name", None)


def _check_deployment_entries(name: str, app: dict[str, Any], variant_names: set[str]) -> None:
    """A `deployments` entry may tune a variant's deployment, not replace what build_app derives from the variant."""
    deployments = {deployment_name(v) for v in variant_names}
    for entry in app.get("deployments") or []:
        dep = entry.get("name", "") if isinstance(entry, dict) else ""
        if dep == "LLMServer":
            raise ConfigError(f"application {name!r}: deployments entry 'LLMServer': with variants there is no "
                              f"LLMServer deployment, only {sorted(deployments)}", param="deployments")
        owned = sorted(set(entry) & set(VARIANT_OWNED)) if dep in deployments else []
        if owned:
            raise ConfigError(f"application {name!r}: deployments entry {dep!r} sets {owned[0]}, which replaces what "
                              f"build_app derives from the variant; set {VARIANT_OWNED[owned[0]]} on the variant instead",
                              param="deployments")


def _wire_variants(name: str, args: dict[str, Any]) -> set[str]:
    """Add each variant's ``llmd-variant-<name>: 1`` to its `resources`; returns the variant names."""
    variants = parse_variants(name, args)  # valid, before anything is written
    if "num_replicas" in args:
        raise ConfigError(f"application {name!r}: num_replicas is set next to variants; each variant has its own "
                          f"replicas (remove it with args_overrides.{name}.num_replicas: null)", param="args_overrides")
    for v, raw in zip(variants, args["variants"]):
        own = resource_name(v.name)
        other = sorted(k for k in v.resources if k.startswith(RESOURCE_PREFIX) and k != own)
        if other:
            raise ConfigError(f"application {name!r}: variant {v.name!r} requests {other[0]}, another variant's "
                              "worker-group resource", param="variants.resources")
        raw["resources"] = {**(raw.get("resources") or {}), own: 1}
    return {v.name for v in variants}


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
    for name, app in zip(names, apps):
        if app.get("import_path") in REMOVED_BUILDERS:
            raise ConfigError(f"application {name!r}: {PD_MOVED}", param="import_path")
        env = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env.setdefault("PYTHONHASHSEED", spec.python_hash_seed)
        args = merge_args(app.get("args") or {}, spec.args_overrides.get(name, {}))
        app["args"] = args
        if app.get("import_path") != APP_BUILDER:
            if spec.model is not None and not isinstance(args.get("engine"), dict):
                raise ConfigError(f"application {name!r}: its args have no `engine` block to point at model "
                                  f"{spec.model.name!r}; add one with args_overrides", param="model")
            if spec.model is not None:
                _point_engine_at(args, spec.model.engine_model, spec.model.name)
            continue
        if not args.get("variants"):
            raise ConfigError(f"application {name!r}: {NO_VARIANTS.format(app=name)}", param="args_overrides")
        if spec.model is not None:
            _point_engine_at(args, spec.model.engine_model, spec.model.name)
        _check_deployment_entries(name, app, _wire_variants(name, args))
    return cfg


def dump_serve_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False, width=100)
