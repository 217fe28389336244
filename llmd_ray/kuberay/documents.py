"""Reading manifest files: RayService documents, or ClusterSpecs rendered into them (for ``validate``, ``apply``
and ``upgrade --manifest``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmd_ray.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_documents(path: str) -> list[tuple[str, Any]]:
    """(label, document) pairs from a manifest file; a ClusterSpec document is rendered first."""
    from llmd_ray.kuberay.render import render_rayservice
    from llmd_ray.kuberay.serve_config import load_serve_config
    from llmd_ray.kuberay.spec import parse_spec

    p = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from e
    out = []
    for i, d in enumerate(docs):
        if isinstance(d, dict) and "apiVersion" not in d and "serve_config" in d:
            spec, serve_path = parse_spec(d, base_dir=p.parent, source=path)
            try:
                shown = str(serve_path.relative_to(REPO_ROOT))
            except ValueError:
                shown = str(serve_path)
            d = render_rayservice(spec, load_serve_config(serve_path), shown)
        name = (d.get("metadata") or {}).get("name", "?") if isinstance(d, dict) else "?"
        kind = d.get("kind", "?") if isinstance(d, dict) else "?"
        out.append((f"{path}" + (f"[{i}]" if len(docs) > 1 else "") + f" {kind}/{name}", d))
    return out
