"""Which variant serves each request: the ingress spreads requests over the aggregated and decode variants
(``llmd_ray.topology.Variant``) with :func:`choose_variant`. Pure: imports neither Ray nor vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class VariantLoad:
    """What the ingress knows of a variant when it picks one."""

    name: str
    running: int | None  # running replicas; None: not known yet
    outstanding: int  # this ingress's requests sent to the variant and not finished


def choose_variant(loads: Sequence[VariantLoad]) -> int:
    """Index of the variant for the next request.

    The variant whose running replicas would each carry the fewest of this
    ingress's outstanding requests with this one added (``(outstanding + 1) /
    running``); variants with no running replica are skipped. Ties go to the
    earlier variant (list variants cheapest first). While no count is known
    yet, an unknown count is taken as one replica. When no variant has a
    running replica, the first one gets it: its handle holds the request
    until a replica is up (and Serve starts one for a deployment at zero).
    """
    if not loads:
        raise ValueError("no variants")
    known = [i for i, v in enumerate(loads) if v.running]
    pool = known or [i for i, v in enumerate(loads) if v.running is None]
    if not pool:
        return 0
    return min(pool, key=lambda i: ((loads[i].outstanding + 1) / (loads[i].running or 1), i))


def stranded(loads: Sequence[VariantLoad], index: int) -> bool:
    """A request waiting on variant ``index`` should go elsewhere: it has no running replica and another has."""
    return loads[index].running == 0 and any(v.running for j, v in enumerate(loads) if j != index)
