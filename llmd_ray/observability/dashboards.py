"""Grafana dashboard JSON from ``panels.py`` (``dashboards/*.json`` are this module's output, committed).

Conventions from Ray's own dashboards (ray/dashboard/modules/metrics/dashboards/): a hidden
``datasource`` variable every panel and target uses, a ``Cluster`` variable over ``ray_io_cluster``
and a ``SessionName`` one, ``All`` meaning ``.*``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llmd_ray.observability.panels import DASHBOARDS, Panel

DS = {"type": "prometheus", "uid": "${datasource}"}
_SUFFIX = re.compile(r"_(bucket|sum|count)$")
_NAME = re.compile(r"\b(ray_[a-z0-9_]+)\b(?!\s*[=!])")  # a metric, not the ray_io_cluster label
# What the Prometheus test substitutes for the template variables (everything, a 10-minute window).
TEST_VARS = {"$__rate_interval": "10m", "$Cluster": ".*", "$SessionName": ".*", "$model": ".*"}


def _var(name: str, label: str, query: str, description: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS, "definition": query,
            "query": {"query": query, "refId": "Prometheus-Variable-Query"}, "includeAll": True, "multi": True,
            "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "refresh": 2, "sort": 1, "hide": 0, "description": description}


def _templating() -> dict[str, Any]:
    anchor = "ray_vllm_num_requests_running"
    return {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "hide": 2, "current": {"selected": False},
         "description": "The Prometheus that scrapes the Ray cluster."},
        _var("Cluster", "Cluster", f"label_values({anchor}, ray_io_cluster)",
             "The RayService's Ray cluster (ray_io_cluster, set by the PodMonitor's relabeling)."),
        _var("SessionName", "Session", f'label_values({anchor}{{ray_io_cluster=~"$Cluster"}}, SessionName)',
             "The Ray session (a restarted cluster is a new session)."),
        _var("model", "Model", f'label_values({anchor}{{ray_io_cluster=~"$Cluster"}}, model_name)', "Served model."),
    ]}


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid, "type": "timeseries", "title": p.title, "description": p.description, "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit, "custom": {"lineWidth": 1, "fillOpacity": 10}}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"datasource": DS, "expr": e, "legendFormat": lg, "refId": chr(ord("A") + i)}
                    for i, (e, lg) in enumerate(p.targets)],
    }


def build(key: str) -> dict[str, Any]:
    title, panels = DASHBOARDS[key]
    return {
        "uid": f"llmd-ray-{key.replace('_', '-')}", "title": title, "tags": ["llmd-ray", "ray", "vllm"],
        "editable": True, "graphTooltip": 1, "refresh": "30s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-30m", "to": "now"}, "timezone": "", "templating": _templating(),
        "annotations": {"list": []}, "links": [],
        "panels": [_panel(p, i + 1, 12 * (i % 2), 8 * (i // 2)) for i, p in enumerate(panels)],
    }


def render(key: str) -> str:
    return json.dumps(build(key), indent=1) + "\n"


def write(out_dir: str | Path, check: bool = False) -> list[str]:
    """Write ``out_dir/<key>.json``; with ``check`` write nothing and return the files that differ."""
    out, drift = Path(out_dir), []
    for key in DASHBOARDS:
        path, text = out / f"{key}.json", render(key)
        if check:
            if not path.exists() or path.read_text() != text:
                drift.append(str(path))
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return drift


def metrics_in(expr: str) -> set[str]:
    """Catalog names a PromQL expression reads (``_bucket``/``_sum``/``_count`` stripped)."""
    return {_SUFFIX.sub("", n) for n in _NAME.findall(expr)}


def all_queries() -> list[tuple[str, str, str]]:
    """(dashboard key, panel title, expr) of every target."""
    return [(k, p.title, e) for k, (_, ps) in DASHBOARDS.items() for p in ps for e, _ in p.targets]


def panels_showing(metric: str) -> list[str]:
    """``dashboard / panel`` of every panel that reads ``metric``."""
    return [f"{DASHBOARDS[k][0].removeprefix('llmd-ray: ')} / {t}"
            for k, t in dict.fromkeys((k, t) for k, t, e in all_queries() if metric in metrics_in(e))]


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    for k, v in sorted((values or TEST_VARS).items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(k, v)
    return expr
