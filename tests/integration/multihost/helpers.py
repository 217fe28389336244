"""Helpers of the multi-host tests: waiting on a condition, and the nodes' Serve logs for failure messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from llmd_ray.cluster import Cluster


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, diagnose: Callable[[], str] | None = None,
             period_s: float = 1.0) -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` (and what ``diagnose`` shows)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (httpx.HTTPError, OSError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(period_s)
    extra = f"\n{diagnose()}" if diagnose else ""
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r}){extra}")


def log_tails(c: Cluster, pattern: str = "serve/*.log", lines: int = 15) -> str:
    """The last lines of every node's logs matching ``pattern`` (under its Ray session's logs/)."""
    out = []
    for node in c.plan.nodes:
        session = c.session_dir(node.name)
        for path in sorted(session.joinpath("logs").glob(pattern)) if session else []:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {node.name}: {path.name}\n" + "\n".join(text))
    return "\n".join(out)
