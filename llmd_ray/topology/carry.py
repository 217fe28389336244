"""How the topology reaches the variant autoscaler: in the app's own deployment configs.

Ray Serve instantiates an application-level autoscaling policy from the Serve config's
``autoscaling_policy.policy_kwargs`` and hands it, every tick, one ``AutoscalingContext`` per
deployment whose ``config`` is that deployment's ``autoscaling_config``. ``build_app`` writes each
autoscaled variant's ``Variant`` and the app's ``QoSConfig`` into that config, under Serve's default
per-deployment policy (which ignores ``policy_kwargs``), so the application-level
``VariantAutoscalingPolicy`` reads the topology the app was built from, and ``policy_kwargs`` in the
Serve config carry only the policy's knobs. Pure: no Ray import.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmd_ray.topology.qos import QoSConfig
from llmd_ray.topology.variant import DEFAULT_POLICY, Variant

__all__ = ["DEFAULT_POLICY", "QOS_KEY", "VARIANT_KEY", "carried", "collect", "read"]
VARIANT_KEY = "llmd_variant"
QOS_KEY = "llmd_qos"


def carried(variant: Variant, qos: QoSConfig) -> dict[str, Any]:
    """The ``policy_kwargs`` that carry one variant and the app's classes (JSON-serialisable)."""
    return {VARIANT_KEY: variant.model_dump(mode="json"), QOS_KEY: qos.model_dump(mode="json")}


def read(policy_kwargs: Any) -> tuple[Variant, QoSConfig] | None:
    """The (variant, classes) a deployment's autoscaling policy kwargs carry; None if it carries none."""
    if not isinstance(policy_kwargs, dict) or VARIANT_KEY not in policy_kwargs:
        return None
    return Variant.model_validate(policy_kwargs[VARIANT_KEY]), QoSConfig.model_validate(policy_kwargs.get(QOS_KEY) or {})


def collect(kwargs: Iterable[Any]) -> tuple[list[Variant], QoSConfig | None]:
    """Every carried variant (in the order given) and the app's classes."""
    variants: list[Variant] = []
    qos = None
    for kw in kwargs:
        got = read(kw)
        if got is not None:
            variants.append(got[0])
            qos = got[1]
    return variants, qos
