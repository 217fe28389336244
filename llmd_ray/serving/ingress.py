"""The OpenAI ingress is the front door (``llmd_ray.frontdoor``): vLLM's own serving layer in the ingress,
over an engine client that routes token ids to the engine replicas. Re-exported here for ``build_app``."""

from llmd_ray.frontdoor.config import IngressConfig
from llmd_ray.frontdoor.pipeline import REPLICA_HEADER
from llmd_ray.frontdoor.routes import SESSION_HEADER, OpenAIIngress

__all__ = ["IngressConfig", "OpenAIIngress", "REPLICA_HEADER", "SESSION_HEADER"]
