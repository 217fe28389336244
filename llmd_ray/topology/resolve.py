"""Checks across variants and each variant's resolved engine (pure: no Ray, no vLLM)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from llmd_ray.engine.config import EngineConfig
from llmd_ray.topology.variant import Variant


@dataclass(slots=True)
class PDGroup:
    """The prefill variant and the decode variants that hand KV to each other."""

    name: str
    prefill: str
    decode: list[str] = field(default_factory=list)


def resolve_engines(base: EngineConfig, variants: Sequence[Variant]) -> list[EngineConfig]:
    """Each variant's EngineConfig; errors name the field as ``variants.<i>.engine.<field>``."""
    out = []
    for i, v in enumerate(variants):
        try:
            out.append(EngineConfig.model_validate({**base.model_dump(), **v.engine}))
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"variants.{i}.engine.{loc}: {err['msg']}") from None
    return out


def pd_groups(variants: Sequence[Variant]) -> dict[str, PDGroup]:
    """P/D groups by name. Each group with a decode variant has exactly one prefill variant and vice versa."""
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"variants: duplicate names {dup}")
    prefill: dict[str, list[str]] = {}
    decode: dict[str, list[str]] = {}
    for v in variants:
        if v.role == "prefill":
            prefill.setdefault(v.pd_group, []).append(v.name)
        elif v.role == "decode":
            decode.setdefault(v.pd_group, []).append(v.name)
    for g, ps in prefill.items():
        if len(ps) > 1:
            raise ValueError(f"variants: pd_group '{g}' has {len(ps)} prefill variants {ps}; one per group "
                             "(give the others a pd_group of their own)")
        if g not in decode:
            raise ValueError(f"variants: prefill variant '{ps[0]}' has no decode variant in pd_group '{g}'")
    for g, ds in decode.items():
        if g not in prefill:
            raise ValueError(f"variants: decode variant '{ds[0]}' has no prefill variant in pd_group '{g}'")
    return {g: PDGroup(g, prefill[g][0], decode[g]) for g in prefill}


def entry_variants(variants: Sequence[Variant]) -> list[Variant]:
    """The variants the ingress sends requests to: aggregated and decode (prefill is called by decode)."""
    return [v for v in variants if v.role != "prefill"]
