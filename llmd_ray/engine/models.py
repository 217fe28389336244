"""Model names in serving configs -> what vLLM loads.

``resolve_model("tiny-llama")`` builds the offline test model (``llmd_ray.engine.tiny``)
at its default directory on first use and returns that path; a local directory
becomes absolute; anything else (a hub id) is passed through unchanged.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from llmd_ray.engine import tiny


def resolve_model(name: str) -> str:
    """Map a model name from a serving config to what vLLM should load.

    ``"tiny-llama"`` is built at ``tiny.default_model_dir()`` if needed (under an
    ``fcntl`` lock, so concurrent replicas build it once) and its path returned;
    an existing local directory becomes absolute; anything else (a hub id) is
    returned unchanged.
    """
    if name == tiny.TINY_MODEL_NAME:
        target = tiny.default_model_dir().absolute()
        if not tiny.is_complete(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target.parent / f".{target.name}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                tiny.build_tiny_model(target)  # a no-op if another process built it meanwhile
        return str(target)
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name
