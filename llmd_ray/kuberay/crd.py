"""KubeRay CRD ``openAPIV3Schema`` -> JSON Schema, and validation the way the API server does it.

The conversion follows the structural-schema rules of apiextensions.k8s.io/v1:

- **defaults first**: ``default`` values are applied to a copy of the object
  before it is validated (so ``workerGroupSpecs[].minReplicas``/``maxReplicas``,
  both ``required`` and defaulted, pass when omitted), recursing into the values
  that defaults create;
- ``x-kubernetes-int-or-string: true`` (no ``type``) -> integer or string;
- ``nullable: true`` -> null allowed; elsewhere null is an error (the API server
  would drop it silently, which hides mistakes);
- **unknown fields are rejected**: every object schema with ``properties`` and
  no ``additionalProperties`` gets ``additionalProperties: false`` unless it has
  ``x-kubernetes-preserve-unknown-fields`` (the API server prunes them, or
  rejects them under strict field validation). The root ``metadata`` is checked
  against ObjectMeta's fields;
- ``format: int32``/``int64`` ranges are checked; CEL rules
  (``x-kubernetes-validations``) are not evaluated.

The schemas come from the structural schema the package ships
(:mod:`.structural`, KubeRay v1.7.0), or from CRD YAML files (``--crds DIR``,
``$LLMD_RAY_KUBERAY_CRDS``). Errors name the field by its JSON path, e.g.
``spec.rayClusterConfig.workerGroupSpecs[0].rayStartParams.num-gpus: 1 is not of type 'string'``.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from llmd_ray.kuberay.structural import crd_source, load_crds, read_crd_files

_VALUE_KEYS = ("format", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
               "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "minProperties",
               "maxProperties", "multipleOf", "required")
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# ObjectMeta as a client may send it (the CRD itself only says `type: object`).
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": ["string", "null"]},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "managedFields": {"type": "array", "items": {"type": "object"}},
        "selfLink": {"type": "string"},
    },
}


@dataclass(slots=True, frozen=True)
class SchemaError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def format_path(parts: Iterable[str | int]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z0-9_\-]+", p):
            out += f".{p}" if out else p
        else:
            out += f"[{p!r}]"
    return out


def to_json_schema(node: dict[str, Any], *, root: bool = False) -> dict[str, Any]:
    """Convert one openAPIV3Schema node (recursively) to a Draft-4 JSON Schema."""
    out: dict[str, Any] = {k: copy.deepcopy(node[k]) for k in _VALUE_KEYS if k in node}
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    elif "type" in node:
        out["type"] = node["type"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", copy.deepcopy(OBJECT_META))
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    if "additionalProperties" in node:
        ap = node["additionalProperties"]
        out["additionalProperties"] = ap if isinstance(ap, bool) else to_json_schema(ap)
    elif "properties" in out and not preserve:
        out["additionalProperties"] = False
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node and not node.get("x-kubernetes-int-or-string"):
            out[key] = [to_json_schema(s) for s in node[key]]
    if "not" in node:
        out["not"] = to_json_schema(node["not"])
    if root:
        out.setdefault("properties", {})["metadata"] = copy.deepcopy(OBJECT_META)
    return out


def apply_defaults(obj: Any, node: dict[str, Any]) -> Any:
    """Apply the schema's `default`s to `obj` in place (as the API server does before validating)."""
    if obj is None:
        return obj
    if isinstance(obj, dict):
        for key, sub in (node.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        ap = node.get("additionalProperties")
        if isinstance(ap, dict):
            for key, value in obj.items():
                if key not in (node.get("properties") or {}):
                    apply_defaults(value, ap)
    elif isinstance(obj, list) and isinstance(node.get("items"), dict):
        for item in obj:
            apply_defaults(item, node["items"])
    return obj


def _format_checker():
    from jsonschema import FormatChecker

    fc = FormatChecker(formats=())

    @fc.checks("int32")
    def _int32(v: Any) -> bool:
        return not isinstance(v, int) or -(2**31) <= v < 2**31

    @fc.checks("int64")
    def _int64(v: Any) -> bool:
        return not isinstance(v, int) or -(2**63) <= v < 2**63

    return fc


class CRDSchema:
    """The validation schema of one served version of one CRD kind."""

    def __init__(self, group: str, version: str, kind: str, openapi: dict[str, Any]):
        from jsonschema import Draft4Validator

        self.group, self.version, self.kind = group, version, kind
        self.api_version = f"{group}/{version}"
        self.openapi = openapi
        self.json_schema = to_json_schema(openapi, root=True)
        self._validator = Draft4Validator(self.json_schema, format_checker=_format_checker())

    def validate(self, obj: dict[str, Any]) -> list[SchemaError]:
        """Errors of `obj` (a copy is defaulted first), sorted by path."""
        doc = apply_defaults(copy.deepcopy(obj), self.openapi)
        errors: set[SchemaError] = set()
        for e in self._validator.iter_errors(doc):
            errors.update(_explain(e))
        return sorted(errors, key=lambda x: (x.path, x.message))


def _explain(e: Any) -> list[SchemaError]:
    """One jsonschema error -> errors at the offending field's own path."""
    path = list(e.absolute_path)
    if e.validator == "additionalProperties" and e.validator_value is False and isinstance(e.instance, dict):
        known = list((e.schema.get("properties") or {}).keys())
        out = []
        for key in e.instance:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                out.append(SchemaError(format_path([*path, key]), f"unknown field {key!r}{hint}"))
        return out
    if e.validator == "required" and isinstance(e.instance, dict):
        return [SchemaError(format_path([*path, k]), "required field is missing")
                for k in e.validator_value if k not in e.instance]
    if e.validator == "format":
        return [SchemaError(format_path(path), f"{e.instance!r} is out of range for {e.validator_value}")]
    return [SchemaError(format_path(path), e.message)]


class CRDRegistry:
    """Schemas by (apiVersion, kind), from CRD documents."""

    def __init__(self, schemas: Sequence[CRDSchema]):
        self._by_key = {(s.api_version, s.kind): s for s in schemas}

    @classmethod
    def from_crds(cls, crds: Iterable[dict[str, Any]]) -> CRDRegistry:
        schemas = []
        for crd in crds:
            spec = crd["spec"]
            for v in spec["versions"]:
                if v.get("served", True) and "schema" in v:
                    schemas.append(CRDSchema(spec["group"], v["name"], spec["names"]["kind"],
                                             v["schema"]["openAPIV3Schema"]))
        return cls(schemas)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> CRDRegistry:
        return cls.from_crds(read_crd_files(paths))

    @classmethod
    def load(cls, crd_dir: str | Path | None = None) -> CRDRegistry:
        """From `crd_dir`, else ``$LLMD_RAY_KUBERAY_CRDS``, else the shipped schema (cached per source)."""
        source = crd_source(crd_dir)
        return _registry_for(str(source) if source else None)

    def get(self, api_version: str, kind: str) -> CRDSchema | None:
        return self._by_key.get((api_version, kind))

    def kinds(self) -> list[str]:
        return sorted(f"{k}.{v}" for v, k in self._by_key)


@cache
def _registry_for(crd_dir: str | None) -> CRDRegistry:
    return CRDRegistry.from_crds(load_crds(crd_dir))
