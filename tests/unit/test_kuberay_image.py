"""The image a RayService runs: by default what `make image` / `make image-gpu` build, `--image` overrides it, and no
placeholder registry is left anywhere."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess

import pytest
import yaml

from llmd_ray.kuberay.cli import render_text
from llmd_ray.kuberay.image import default_image, project_version
from llmd_ray.kuberay.render import render_rayservice, render_spec_file

from tests.unit.kuberay_fixtures import PD_APP, REPO, spec

VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
CPU_APP = {"applications": [{"name": "default", "route_prefix": "/", "import_path": "llmd_ray:build_app",
                             "args": {"engine": {"model": "tiny-llama"}, "variants": [{"name": "cpu", "num_replicas": 2}]}}]}


def images(doc: dict) -> set[str]:
    rc = doc["spec"]["rayClusterConfig"]
    pods = [rc["headGroupSpec"]] + rc["workerGroupSpecs"]
    return {c["image"] for p in pods for c in p["template"]["spec"]["containers"]}


def test_default_images_are_the_tags_make_builds():
    assert project_version() == VERSION
    assert default_image(gpu=False) == f"llmd-ray:{VERSION}-cpu"
    assert default_image(gpu=True) == f"llmd-ray:{VERSION}-cuda"
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-s", "-n", "image", "image-gpu"], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [f"docker/build.sh cpu {default_image(False)}",
                                          f"docker/build.sh gpu {default_image(True)}"], out.stdout


def test_a_spec_without_image_runs_the_cuda_image_with_gpus_and_the_cpu_image_without():
    assert images(render_rayservice(spec(image=None), copy.deepcopy(PD_APP), "pd.yaml")) == {default_image(True)}
    assert images(render_rayservice(spec(image=None, model=None), copy.deepcopy(CPU_APP), "cpu.yaml")) == {
        default_image(False)}
    assert images(render_rayservice(spec(image="reg.internal/x:1"), copy.deepcopy(PD_APP), "pd.yaml")) == {
        "reg.internal/x:1"}


def test_image_flag_overrides_the_spec(tmp_path):
    (tmp_path / "app.yaml").write_text(yaml.safe_dump(PD_APP))
    s = tmp_path / "s.yaml"
    s.write_text(yaml.safe_dump({"name": "x", "image": "from-spec:1", "serve_config": "app.yaml"}))
    assert images(render_spec_file(s)) == {"from-spec:1"}
    assert images(render_spec_file(s, image="from-flag:2")) == {"from-flag:2"}
    assert "image: from-flag:2" in render_text(s, image="from-flag:2")


def test_checked_in_manifests_name_the_image_make_image_gpu_builds():
    manifests = sorted((REPO / "kuberay").glob("*.yaml"))
    assert manifests
    for m in manifests:
        assert images(yaml.safe_load(m.read_text())) == {default_image(gpu=True)}, m.name


def test_no_placeholder_registry_remains():
    placeholder = "registry." + "example.com"
    roots = [REPO / "kuberay", REPO / "docs", REPO / "llmd_ray", REPO / "tests", REPO / "docker", REPO / "serve_configs"]
    files = [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file() and p.suffix in
             {".py", ".md", ".yaml", ".yml", ".sh", ".txt", ""} and "__pycache__" not in p.parts]
    files += [REPO / "README.md", REPO / "Makefile"]
    hits = [str(p.relative_to(REPO)) for p in files if placeholder in p.read_text(errors="ignore")]
    assert not hits, hits
