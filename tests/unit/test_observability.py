"""The metrics catalog against the code that registers the metrics, the dashboards, the README's
table and the PodMonitor (pure: no Ray)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from llmd_ray.observability import dashboards, podmonitor, readme
from llmd_ray.observability.catalog import BY_NAME, CATALOG
from llmd_ray.observability.panels import DASHBOARDS
from llmd_ray.observability.zero import declare

ROOT = Path(__file__).resolve().parents[2]
_REG = re.compile(r'\b(Counter|Gauge|Histogram)\s*[(,]\s*"([a-z0-9_]+)"')


def sources() -> list[str]:
    """Text of the package's modules as committed (HEAD; the working tree without git): what ships."""
    try:
        names = subprocess.run(["git", "ls-files", "llmd_ray/*.py"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
        blobs = subprocess.run(["git", "cat-file", "--batch"], cwd=ROOT, capture_output=True, check=True,
                               input="".join(f"HEAD:{n}\n" for n in names).encode()).stdout
    except (OSError, subprocess.CalledProcessError):
        return [p.read_text() for p in (ROOT / "llmd_ray").rglob("*.py")]
    out, i = [], 0
    while i < len(blobs):
        header_end = blobs.index(b"\n", i)
        header = blobs[i:header_end].split()
        if header[-1] == b"missing":  # added to the index, not committed yet
            i = header_end + 1
            continue
        size = int(header[2])
        out.append(blobs[header_end + 1:header_end + 1 + size].decode(errors="replace"))
        i = header_end + 1 + size + 1
    return out


def registered() -> dict[str, str]:
    """Exported name -> kind of every metric registered in llmd_ray/ (as Ray exports it)."""
    from llmd_ray.serving.metrics import METRICS, ray_name
    from llmd_ray.tiers.metrics import COUNTERS, GAUGES

    found = {}
    for text in sources():
        for kind, name in _REG.findall(text):
            found[name] = kind.lower()
    found |= {ray_name(n): kind for n, (kind, _, _) in METRICS.items()}
    found |= {f"llmd_kv_tier_{k}": "counter" for k in COUNTERS} | {f"llmd_kv_tier_{k}": "gauge" for k in GAUGES}
    return {"ray_" + n + ("_total" if k == "counter" and not n.endswith("_total") else ""): k for n, k in found.items()}


def test_catalog_is_what_the_code_registers():
    code = registered()
    ours = {m.name: m.kind for m in CATALOG if not m.source.startswith("ray.serve")}
    assert {n: k for n, k in code.items()} == ours


def test_every_panel_metric_is_in_the_catalog_and_every_catalog_metric_has_a_panel():
    shown = set().union(*(dashboards.metrics_in(e) for _, _, e in dashboards.all_queries()))
    assert shown - set(BY_NAME) == set()
    assert [m.name for m in CATALOG if not dashboards.panels_showing(m.name)] == []


def test_queries_filter_by_cluster_and_session_and_use_the_datasource():
    for key in DASHBOARDS:
        d = dashboards.build(key)
        names = [v["name"] for v in d["templating"]["list"]]
        assert names[:3] == ["datasource", "Cluster", "SessionName"], names
        assert len({p["id"] for p in d["panels"]}) == len(d["panels"])
        for p in d["panels"]:
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}"
                selectors = re.findall(r"\b(ray_[a-z0-9_]+)\{([^}]*)\}", t["expr"])
                assert selectors and len(selectors) == len(dashboards.metrics_in(t["expr"]) and re.findall(r"\bray_[a-z0-9_]+\b(?!\s*[=!])", t["expr"])), t["expr"]
                for name, sel in selectors:
                    assert 'ray_io_cluster=~"$Cluster"' in sel and 'SessionName=~"$SessionName"' in sel, (p["title"], name)
                    if "model_name" in BY_NAME[re.sub(r"_(bucket|sum|count)$", "", name)].labels:
                        assert 'model_name=~"$model"' in sel, (p["title"], name)


def test_substitution_leaves_no_template_variable():
    for _, _, e in dashboards.all_queries():
        assert "$" not in dashboards.substitute(e), e


def test_committed_dashboards_readme_and_podmonitor_are_current():
    assert dashboards.write(ROOT / "dashboards", check=True) == []
    for f in (ROOT / "dashboards").glob("*.json"):
        assert f.stem in DASHBOARDS and json.loads(f.read_text())["panels"]
    assert readme.table() in (ROOT / "README.md").read_text()
    assert (ROOT / "kuberay" / "monitoring" / "podmonitor.yaml").read_text() == podmonitor.render()


def test_readme_table_has_a_row_with_a_panel_per_metric():
    rows = {r.split("|")[1].strip().strip("`"): r for r in readme.table().splitlines() if r.startswith("| `")}
    assert set(rows) == set(BY_NAME)
    assert all(r.rstrip("| ").split("|")[-1].strip() for r in rows.values())


def test_podmonitor_selects_the_rendered_pods_metrics_port():
    pm = yaml.safe_load((ROOT / "kuberay" / "monitoring" / "podmonitor.yaml").read_text())
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["kind"] == "PodMonitor"
    spec = pm["spec"]
    (ep,) = spec["podMetricsEndpoints"]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics"
    assert {r["targetLabel"] for r in ep["relabelings"]} >= {"ray_io_cluster"}
    want = spec["selector"]["matchLabels"]
    manifests = sorted((ROOT / "kuberay").glob("*.yaml"))
    checked = 0
    for path in manifests:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "RayService":
                continue
            cluster = doc["spec"]["rayClusterConfig"]
            for group in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]:
                labels = group["template"]["metadata"]["labels"]
                assert want.items() <= labels.items(), (path.name, labels)
                ports = {p["name"]: p["containerPort"] for c in group["template"]["spec"]["containers"] for p in c.get("ports", [])}
                assert str(ports["metrics"]) == group["rayStartParams"]["metrics-export-port"], path.name
                checked += 1
    assert checked >= 4


class _FakeCounter:
    def __init__(self, fail: bool = False):
        self.recorded, self.fail = [], fail

    def _record(self, value, tags=None):
        if self.fail:
            raise RuntimeError("no")
        self.recorded.append((value, tags))


def test_declare_exports_zero_per_tag_set_and_never_raises():
    c = _FakeCounter()
    declare(c, [{"reason": "a"}, {"reason": "b"}])
    assert c.recorded == [(0, {"reason": "a"}), (0, {"reason": "b"})]
    declare(_FakeCounter(fail=True), [{"reason": "a"}])


class _FakeGauge:
    def __init__(self):
        self.sets = []

    def set(self, value, tags=None):
        self.sets.append((value, tags))


def test_keeper_re_sets_the_last_value_of_each_series():
    from llmd_ray.observability.keep import GaugeKeeper

    k, g = GaugeKeeper(period_s=3600), _FakeGauge()
    k.set(g, 1.0, {"index": "a"})
    k.set(g, 2.0, {"index": "a"})
    k.set(g, 5.0)
    g.sets.clear()
    k.refresh()
    assert sorted(g.sets, key=str) == sorted([(2.0, {"index": "a"}), (5.0, None)], key=str)
