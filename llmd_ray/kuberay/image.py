"""The image a RayService runs: unless the spec or ``--image`` names one, what ``make image`` (CPU) or
``make image-gpu`` (GPU variants) builds, ``llmd-ray:<version>-cpu`` / ``llmd-ray:<version>-cuda``
(see docker/build.sh). Push it to a registry the cluster pulls from, then render with ``--image``."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

IMAGE_NAME = "llmd-ray"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def project_version() -> str:
    """llmd-ray's version: the source tree's pyproject.toml when present, else the installed distribution's."""
    if PYPROJECT.is_file():
        m = re.search(r'^version = "([^"]+)"', PYPROJECT.read_text(), re.MULTILINE)
        if m:
            return m.group(1)
    return metadata.version("llmd-ray")


def default_image(gpu: bool) -> str:
    """The tag `make image-gpu` (gpu) or `make image` builds."""
    return f"{IMAGE_NAME}:{project_version()}-{'cuda' if gpu else 'cpu'}"
