"""A real Prometheus (Debian's ``prometheus`` binary) scraping a Ray cluster's metrics, for tests.

Targets come from Ray's service-discovery file when the cluster wrote one (its dashboard does:
``<session dir>/prom_metrics_service_discovery.json``), else from the same content built from
``ray.nodes()`` (each node's ``MetricsExportPort``), in a file_sd file Prometheus watches."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from llmd_ray.host import free_port


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or next((p for p in ("/usr/bin/prometheus",) if os.path.exists(p)), None)


def ray_targets() -> list[dict]:
    """Ray's own service-discovery content, or the same built from the live nodes."""
    import ray

    session = ray._private.worker._global_node.get_session_dir_path()
    sd = Path(session) / "prom_metrics_service_discovery.json"
    if sd.exists():
        return json.loads(sd.read_text())
    addrs = [f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}" for n in ray.nodes() if n["Alive"]]
    return [{"labels": {"job": "ray"}, "targets": addrs}]


class Prometheus:
    def __init__(self, workdir: Path, targets: list[dict], scrape_s: float = 1.0):
        self.dir, self.port = workdir, free_port("127.0.0.1")
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        sd = workdir / "ray_sd.json"
        sd.write_text(json.dumps(targets))
        (workdir / "prometheus.yml").write_text(
            f"global: {{scrape_interval: {int(scrape_s * 1000)}ms, evaluation_interval: {int(scrape_s * 1000)}ms}}\n"
            "scrape_configs:\n- job_name: ray\n  file_sd_configs:\n"
            f"  - files: ['{sd}']\n    refresh_interval: 5s\n")
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.wait(lambda: self._ready(), 60, "Prometheus ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(self.dir / 'prometheus.log').read_text()[-2000:]}")
        try:
            return httpx.get(self.url + "/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @staticmethod
    def wait(cond, timeout_s: float, what: str, poll_s: float = 0.5):
        """Poll ``cond`` until truthy; returns its value or raises TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout_s
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout_s} s")
            time.sleep(poll_s)

    def api(self, path: str, **params) -> dict:
        r = httpx.get(self.url + "/api/v1/" + path, params=params, timeout=30)
        body = r.json()
        if body.get("status") != "success":
            raise ValueError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def has_value(self, expr: str) -> bool:
        """The query answers at least one finite value."""
        return any(math.isfinite(float(s["value"][1])) for s in self.query(expr))

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def label_names(self, series: str) -> set[str]:
        return {k for s in self.api("series", **{"match[]": series}) for k in s}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
