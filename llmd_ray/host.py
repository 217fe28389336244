"""What a replica needs of the host it runs on: free ports and its shared-memory directory (pure, no Ray)."""

from __future__ import annotations

import os
import socket
import tempfile


def free_ports(n: int = 1, host: str = "") -> list[int]:
    """``n`` distinct ports free on ``host`` now (all held until all are chosen, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "") -> int:
    return free_ports(1, host)[0]


def shm_dir(name: str) -> str:
    """``/dev/shm/<name>`` where shared memory is writable, else ``<tmp>/<name>``."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    return os.path.join(base, name)
