"""The KubeRay CRDs' structural schemas, derived once and shipped as package data.

``python -m llmd_ray.kuberay schema --crds DIR --kuberay-version vX.Y.Z`` reads
CRD YAML files and writes ``schemas/kuberay-crds.json``. The file keeps what the
API server uses to install, default, validate, prune and merge objects -- every
``openAPIV3Schema`` keyword except the documentation ones (``description``,
``title``, ``example``, ``externalDocs``) -- and, per CRD, its name, group,
names, scope and versions (served, storage, deprecation, subresources). It drops
the printer columns and annotations. So a CRD rebuilt from it
(:func:`shipped_crds`) is the source CRD minus documentation and printer columns:
it validates here, and installs into an API server, the same way.

The schemas repeat themselves (the RayService embeds the RayCluster spec, head
and worker groups have the same pod template, v1alpha1 shares most of v1), so each subtree that occurs
more than once is stored once under ``definitions`` and referenced as
``{"$ref": name}``; CRDs never contain ``$ref`` themselves. JSON with sorted
keys, one definition per line, so a regenerated file diffs line by line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SHIPPED = Path(__file__).resolve().parent / "schemas" / "kuberay-crds.json"
FORMAT = 1
DOC_KEYS = frozenset({"description", "title", "example", "externalDocs"})
VERSION_KEYS = ("name", "served", "storage", "deprecated", "deprecationWarning", "subresources")
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")  # name -> schema
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("items", "additionalProperties", "additionalItems", "not")  # schema, list of schemas or bool
_MIN_SHARED = 200  # characters of JSON a subtree needs before it is worth a definition
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are ~1 MB each


def _canon(node: Any) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def map_children(node: dict[str, Any], fn: Callable[[dict[str, Any], str], Any]) -> dict[str, Any]:
    """A copy of one schema node with `fn(child, label)` applied to each child *schema*
    (never to data such as ``default`` or ``enum`` values)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS or key == "dependencies":
            out[key] = {n: fn(s, n) if isinstance(s, dict) else s for n, s in value.items()}
        elif key in _SCHEMA_LISTS:
            out[key] = [fn(s, key) for s in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = fn(value, key)
        elif key in _SCHEMA_ONE and isinstance(value, list):
            out[key] = [fn(s, key) for s in value]
        else:
            out[key] = value
    return out


def strip_docs(node: dict[str, Any]) -> dict[str, Any]:
    """The structural part of an ``openAPIV3Schema`` node: everything but documentation."""
    if "$ref" in node:
        raise ValueError("a CRD schema may not contain $ref")
    out = map_children(node, lambda child, _label: strip_docs(child))
    return {k: v for k, v in out.items() if k not in DOC_KEYS}


def _child_hint(hint: str, label: str) -> str:
    if label in _SCHEMA_ONE or label in _SCHEMA_LISTS:
        return hint + ("[]" if label == "items" else f".{label}")
    return label


def _pack(roots: list[tuple[dict[str, Any], str]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Replace subtrees that occur more than once by ``{"$ref": name}``; returns (roots, definitions)."""
    counts: Counter[str] = Counter()

    def count(node: dict[str, Any], _label: str = "") -> dict[str, Any]:
        counts[_canon(node)] += 1
        map_children(node, count)
        return node

    for root, _ in roots:
        count(root)
    named: dict[str, tuple[str, dict[str, Any]]] = {}  # canonical text -> (name, packed body)

    def emit(node: dict[str, Any], hint: str) -> dict[str, Any]:
        text = _canon(node)
        if counts[text] < 2 or len(text) < _MIN_SHARED:
            return map_children(node, lambda c, label: emit(c, _child_hint(hint, label)))
        if text not in named:  # named after where it first occurs, e.g. "template-ca304af6"
            body = map_children(node, lambda c, label: emit(c, _child_hint(hint, label)))
            named[text] = (f"{hint}-{hashlib.sha256(text.encode()).hexdigest()[:8]}", body)
        return {"$ref": named[text][0]}

    packed = [emit(root, hint) for root, hint in roots]
    defs = dict(named.values())
    if len(defs) != len(named):
        raise ValueError("two shared subtrees got the same definition name")
    # A subtree counted twice only because its parent repeats is stored once: inline it.
    uses: Counter[str] = Counter()

    def count_refs(node: dict[str, Any], _label: str = "") -> dict[str, Any]:
        if set(node) == {"$ref"}:
            uses[node["$ref"]] += 1
        else:
            map_children(node, count_refs)
        return node

    for node in [*packed, *defs.values()]:
        count_refs(node)

    def inline(node: dict[str, Any], _label: str = "") -> dict[str, Any]:
        if set(node) == {"$ref"} and uses[node["$ref"]] < 2:
            return inline(defs[node["$ref"]])
        return node if set(node) == {"$ref"} else map_children(node, inline)

    kept = {name: inline(body) for name, body in defs.items() if uses[name] >= 2}
    return [inline(p) for p in packed], kept


def expand(node: dict[str, Any], defs: dict[str, Any], memo: dict[str, Any] | None = None) -> dict[str, Any]:
    """Undo the packing: each ``{"$ref": name}`` becomes its definition (one shared object per name)."""
    memo = {} if memo is None else memo
    if set(node) == {"$ref"}:
        name = node["$ref"]
        if name not in memo:
            memo[name] = expand(defs[name], defs, memo)
        return memo[name]
    return map_children(node, lambda child, _label: expand(child, defs, memo))


def read_crd_files(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The CustomResourceDefinition documents of YAML files (other documents are skipped)."""
    return [d for p in paths for d in yaml.load_all(Path(p).read_text(), Loader=_LOADER)
            if d and d.get("kind") == "CustomResourceDefinition"]


def derive(crd_files: list[Path], kuberay_version: str) -> dict[str, Any]:
    """The shipped file's content, from CRD YAML files of one KubeRay release."""
    crds, roots = [], []
    for crd in sorted(read_crd_files(crd_files), key=lambda c: c["metadata"]["name"]):
        spec = crd["spec"]
        versions = []
        for v in spec["versions"]:
            entry = {k: v[k] for k in VERSION_KEYS if k in v}
            if "schema" in v:
                roots.append((strip_docs(v["schema"]["openAPIV3Schema"]), f"{spec['names']['kind']}.{v['name']}"))
                entry["schema"] = len(roots) - 1  # replaced below
            versions.append(entry)
        crds.append({"name": crd["metadata"]["name"], "group": spec["group"], "names": spec["names"],
                     "scope": spec["scope"], "versions": versions})
    packed, defs = _pack(roots)
    for crd in crds:
        for v in crd["versions"]:
            if "schema" in v:
                v["schema"] = packed[v["schema"]]
    return {"format": FORMAT, "kuberay_version": kuberay_version,
            "generated_by": "python -m llmd_ray.kuberay schema", "crds": crds, "definitions": defs,
            "sources": {p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(crd_files)}}


def dumps(data: dict[str, Any]) -> str:
    """Compact JSON, sorted keys, one definition and one CRD per line."""
    def block(items: list[str], open_: str, close: str) -> str:
        return open_ + "\n" + ",\n".join(items) + "\n" + close

    parts = []
    for key in sorted(data):
        value = data[key]
        if key == "definitions":
            text = block([f"{_canon(n)}:{_canon(value[n])}" for n in sorted(value)], "{", "}")
        elif key == "crds":
            text = block([_canon(c) for c in value], "[", "]")
        else:
            text = _canon(value)
        parts.append(f"{_canon(key)}:{text}")
    return block(parts, "{", "}") + "\n"


@cache
def _load_text(path: str) -> str:
    return Path(path).read_text()


def load(path: str | Path | None = None) -> dict[str, Any]:
    """The shipped file (or another written by :func:`dumps`), parsed afresh."""
    data = json.loads(_load_text(str(path or SHIPPED)))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path or SHIPPED}: format {data.get('format')!r}, expected {FORMAT}")
    return data


def shipped_crds(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Installable CustomResourceDefinitions rebuilt from the shipped file (new objects on each call)."""
    data = load(path)
    defs, memo = data["definitions"], {}
    out = []
    for c in data["crds"]:
        versions = [{**{k: v for k, v in ver.items() if k != "schema"},
                     **({"schema": {"openAPIV3Schema": expand(ver["schema"], defs, memo)}} if "schema" in ver else {})}
                    for ver in c["versions"]]
        out.append({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": c["name"]},
                    "spec": {"group": c["group"], "names": c["names"], "scope": c["scope"], "versions": versions}})
    return out


def kuberay_version(path: str | Path | None = None) -> str:
    return load(path)["kuberay_version"]


def crd_source(crd_dir: str | Path | None = None) -> Path | None:
    """Where CRDs come from: `crd_dir`, else ``$LLMD_RAY_KUBERAY_CRDS``, else None (the shipped file)."""
    chosen = crd_dir or os.environ.get("LLMD_RAY_KUBERAY_CRDS")
    return Path(chosen).resolve() if chosen else None


def load_crds(crd_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """CRD documents from a directory of YAML files (see :func:`crd_source`), else the shipped ones."""
    source = crd_source(crd_dir)
    if source is None:
        return shipped_crds()
    files = sorted(source.glob("*.yaml"))
    if not files:
        from llmd_ray.errors import ConfigError

        raise ConfigError(f"no CRD files in {source} (pass --crds DIR, set LLMD_RAY_KUBERAY_CRDS, "
                          "or set neither to use the shipped schema)", param="crds")
    return read_crd_files(files)
