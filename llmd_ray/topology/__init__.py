"""The app's topology, modelled once: its variants (``Variant``) and QoS classes (``QoSClass``).

Declared in the serve config's ``args`` (``variants:``, ``qos:``); the app's deployments, the variant
autoscaler's inputs and the KubeRay RayService are all derived from them. Pure: no Ray, no vLLM.
"""

from llmd_ray.topology.pod import PodResources, PodSpec, Toleration
from llmd_ray.topology.qos import ClassTarget, QoSClass, QoSConfig
from llmd_ray.topology.resolve import PDGroup, entry_variants, pd_groups, resolve_engines
from llmd_ray.topology.variant import Role, ServeAutoscaling, Variant, deployment_name

__all__ = [
    "ClassTarget", "PDGroup", "PodResources", "PodSpec", "QoSClass", "QoSConfig", "Role", "ServeAutoscaling",
    "Toleration", "Variant", "deployment_name", "entry_variants", "pd_groups", "resolve_engines",
]
