"""Pinning each replica's engine to cores of its own.

vLLM's CPU worker binds its OpenMP threads to ``VLLM_CPU_OMP_THREADS_BIND``.
Left at ``auto``, every engine on a machine binds the same cores: measured
here, two engines both took core 0 and a request took 24 s instead of 0.6 s.
So each Serve replica derives its cores from its rank: replica ``r`` with
``k`` cores per replica gets the ``k`` cores starting at ``(r * k) mod n`` of
the cores this process may use, wrapping round when there are more replicas
than cores (they then share, which is slow but still correct).
"""

from __future__ import annotations

import os
from collections.abc import Sequence


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
