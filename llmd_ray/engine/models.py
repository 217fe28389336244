"""Model names in serving configs -> what vLLM loads.

``resolve_model("tiny-llama")`` (or ``"tiny-llama-b"``) builds the offline test model (``llmd_ray.engine.tiny``)
at its default directory on first use and returns that path; a local directory
becomes absolute; anything else (a hub id) is passed through unchanged.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from llmd_ray.engine import tiny


def resolve_model(name: str) -> str:
    """Map a model name from a serving config to what vLLM should load.

    A tiny model (``"tiny-llama"``, ``"tiny-llama-b"``) is built at ``tiny.default_model_dir(name)`` if needed (under an
    ``fcntl`` lock, so concurrent replicas build it once) and its path returned;
    an existing local directory becomes absolute; anything else (a hub id) is
    returned unchanged.
    """
    spec = tiny.TINY_MODELS.get(name)
    if spec is not None:
        target = tiny.default_model_dir(name).absolute()
        if not tiny.is_complete(target, spec):
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target.parent / f".{target.name}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                tiny.build_tiny_model(target, spec=spec)  # a no-op if another process built it meanwhile
        return str(target)
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name
