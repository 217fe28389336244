"""``python -m llmd_ray.observability {dashboards,podmonitor,readme} [--check]``: (re)generate
``dashboards/*.json``, ``kuberay/monitoring/podmonitor.yaml`` and the README's metrics table; ``--check`` writes
nothing and exits 1 when a file is out of date."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmd_ray.observability")
    ap.add_argument("what", choices=["dashboards", "podmonitor", "readme", "all"])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    from llmd_ray.observability import dashboards, podmonitor, readme

    drift: list[str] = []
    if a.what in ("dashboards", "all"):
        drift += dashboards.write(ROOT / "dashboards", check=a.check)
    for what, path, make in (("podmonitor", ROOT / "kuberay" / "monitoring" / "podmonitor.yaml", lambda _: podmonitor.render()),
                             ("readme", ROOT / "README.md", readme.replace_in)):
        if a.what not in (what, "all"):
            continue
        old = path.read_text() if path.exists() else ""
        new = make(old)
        if new != old:
            drift.append(str(path))
            if not a.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(new)
    if a.check and drift:
        print("out of date: " + ", ".join(drift), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
