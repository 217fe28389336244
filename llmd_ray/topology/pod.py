"""Where a variant's replicas run on Kubernetes: pod size, node selector, tolerations (pure pydantic).

Part of ``Variant`` (``pod:``); the KubeRay renderer turns it into the variant's worker group.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def quantity(value: str) -> str:
    """A Kubernetes quantity, or ValueError."""
    if not QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '4', '500m', '16Gi')")
    return value


class Toleration(_Model):
    """A Kubernetes pod toleration (so GPU pods can land on tainted GPU nodes)."""

    key: str | None = Field(None, description="Taint key; empty with `Exists` tolerates everything.")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="`Equal` (key and value) or `Exists` (key only).")
    value: str | None = Field(None, description="Taint value, with `Equal`.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect; empty: all.")
    toleration_seconds: int | None = Field(None, ge=0, description="`NoExecute` only: how long the pod stays bound.")

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "operator": self.operator, "value": self.value,
                               "effect": self.effect, "tolerationSeconds": self.toleration_seconds}
        return {k: v for k, v in out.items() if v is not None}


class PodResources(_Model):
    """CPU and memory of one pod (requests = limits, so pods are Guaranteed and Ray's CPU count is exact)."""

    cpu: str = Field(description="CPU quantity, e.g. '8'. KubeRay sets Ray's num-cpus from it.")
    memory: str = Field(description="Memory quantity, e.g. '64Gi'.")

    @field_validator("cpu", "memory")
    @classmethod
    def _q(cls, v: str) -> str:
        return quantity(v)


class PodSpec(_Model):
    """A variant's worker pods."""

    resources: PodResources | None = Field(None, description="Pod CPU and memory; None: the renderer's default "
                                           "for the replica's CPUs.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate.")
    replicas_per_pod: int = Field(1, ge=1, description="Replicas one pod holds (its worker group's size is the "
                                  "variant's bounds divided by this).")
