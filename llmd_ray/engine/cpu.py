"""Pinning each replica's engine to cores of its own.

vLLM's CPU worker binds its OpenMP threads to ``VLLM_CPU_OMP_THREADS_BIND``.
Left at ``auto``, every engine on a machine binds the same cores: measured
here, two engines both took core 0 and a request took 24 s instead of 0.6 s.
So each Serve replica derives its cores from its rank: replica ``r`` with
``k`` cores per replica gets the ``k`` cores starting at ``(r * k) mod n`` of
the cores this process may use, wrapping round when there are more replicas
than cores (they then share, which is slow but still correct).

Ranks are the app's, not the node's: with replicas on several hosts (or several apps on one), two replicas on
one node can have ranks that fall on the same cores (ranks 0 and 2 of an app on two 2-core hosts). So each
replica also *claims* its cores on its node (:func:`claim_cores`): an exclusive ``flock`` per core on a file in the
node's own /dev/shm, held for the replica's life (the kernel releases it when the process dies). A replica takes
its rank's cores when they are free on its node, else the first free window of cores, else (every core claimed)
its rank's cores, shared.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from llmd_ray.host import shm_dir


def allowed_cpus() -> list[int]:
    """The cores this process may run on (its affinity mask), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def cores_for_rank(rank: int, cores_per_replica: int, cpus: Sequence[int]) -> list[int]:
    """The cores replica ``rank`` is pinned to."""
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    if cores_per_replica < 1:
        raise ValueError(f"cores_per_replica must be >= 1, got {cores_per_replica}")
    if not cpus:
        raise ValueError("no CPUs available")
    n = len(cpus)
    width = min(cores_per_replica, n)
    start = (rank * width) % n
    return [cpus[(start + i) % n] for i in range(width)]


def cpu_bind_value(setting: str, rank: int | None, cores_per_replica: int, cpus: Sequence[int]) -> str:
    """The ``VLLM_CPU_OMP_THREADS_BIND`` value for a replica.

    ``setting`` is EngineConfig.cpu_bind: ``auto`` (derive from ``rank``, or
    leave vLLM's own choice when not in a replica), ``nobind``, or a literal
    vLLM core list that is passed through.
    """
    if setting != "auto":
        return setting
    if rank is None:
        return "auto"
    return ",".join(str(c) for c in cores_for_rank(rank, cores_per_replica, cpus))


def choose_cores(rank: int, cores_per_replica: int, cpus: Sequence[int], taken: Collection[int]) -> list[int]:
    """The rank's cores if none is ``taken``, else the first window of free cores (the windows after the rank's
    first, then every other start), else the rank's cores (shared)."""
    ranked = cores_for_rank(rank, cores_per_replica, cpus)
    n, width = len(cpus), len(ranked)
    start = cpus.index(ranked[0])
    starts = [(start + i * width) % n for i in range(-(-n // width))] + [(start + i) % n for i in range(n)]
    for s in starts:
        window = [cpus[(s + i) % n] for i in range(width)]
        if not any(c in taken for c in window):
            return window
    return ranked


@dataclass(slots=True)
class CoreClaim:
    """Cores claimed on this node: the open, locked files (closing them releases the claim)."""

    cores: list[int]
    fds: list[int] = field(default_factory=list)

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def claim_cores(rank: int, cores_per_replica: int, cpus: Sequence[int], root: str | None = None) -> CoreClaim:
    """Claim cores on this node for replica ``rank`` (see the module docstring); never fails, may share."""
    import fcntl

    root = root or shm_dir("llmd-cpu")
    os.makedirs(root, exist_ok=True)
    taken: set[int] = set()
    while True:
        cores = choose_cores(rank, cores_per_replica, cpus, taken)
        if any(c in taken for c in cores):  # every window has a claimed core: share the rank's, unclaimed
            return CoreClaim(cores)
        fds: list[int] = []
        for c in cores:
            fd = os.open(os.path.join(root, f"core-{c}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by another replica on this node (or raced to it)
                os.close(fd)
                taken.add(c)
                break
            fds.append(fd)
        else:
            return CoreClaim(cores, fds)
        for fd in fds:
            os.close(fd)


def bind_replica(setting: str, rank: int | None, cores_per_replica: int) -> tuple[str, CoreClaim | None]:
    """``VLLM_CPU_OMP_THREADS_BIND`` for an engine, and its claim: cores claimed on this node with ``auto`` in a
    replica (``rank`` set); otherwise :func:`cpu_bind_value`'s, unclaimed."""
    cpus = allowed_cpus()
    if setting != "auto" or rank is None:
        return cpu_bind_value(setting, rank, cores_per_replica, cpus), None
    claim = claim_cores(rank, cores_per_replica, cpus)
    return ",".join(str(c) for c in claim.cores), claim
