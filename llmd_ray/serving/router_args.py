"""Request routing to engine replicas: ``RouterArgs`` (``AppArgs.router``, or a model's ``router``) and the
``RequestRouterConfig`` Serve gets for it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray.serve.config import RequestRouterConfig

from llmd_ray.routing.config import parse_config
from llmd_ray.routing.trace import DecisionTraceArgs
from llmd_ray.serving.routing_state import ROUTING_STATE_DEPLOYMENT


KV_INDEX_DEPLOYMENT = "KVIndex"


class RouterArgs(BaseModel):
    """How requests are routed to LLMServer replicas."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["llmd", "pow2"] = Field(
        default="llmd",
        description="`llmd`: the prefix-cache- and load-aware plugin router; `pow2`: Ray Serve's default power-of-two router.",
    )
    config: dict[str, Any] | str | None = Field(
        default=None,
        description="EndpointPickerConfig (plugins + schedulingProfiles) as a mapping or YAML text; None: the default profile.",
    )
    stats_period_s: float = Field(
        default=0.5, gt=0, description="How often replicas' record_routing_stats is polled for routers."
    )
    block_size: int | None = Field(default=None, ge=1, description="KV block size; the replicas' reported size if unset.")
    precise_index: bool | None = Field(
        default=None,
        description="Run the KVIndex deployment (vLLM KV events) and mirror it in routers; None: on when the config uses `precise-prefix-cache` or `matchSource: precise`. Turns on `engine.kv_events`.",
    )
    kv_index_sync_s: float = Field(default=0.2, gt=0, description="How often routers pull KV-index deltas.")
    kv_index_speculative_ttl_s: float = Field(
        default=5.0, ge=0,
        description="With the precise index: a routed request's blocks count as held by its replica for this long, "
        "until the engine's KV events (sent after prefill) confirm them; 0 turns it off.",
    )

    share_decisions: bool | None = Field(
        default=None,
        description="Share routing decisions between the routers of the ingress replicas (each has its own prefix "
        "index) through the `RoutingState` deployment: each router publishes its decisions in batches and merges "
        "the others' into its index, off the routing path, so a prefix routed by one ingress replica is routed to "
        "the same engine replica by the others. None: on when the app has more than one ingress replica. "
        "Policy `llmd` only.",
    )
    share_decisions_sync_s: float = Field(
        default=0.1, gt=0, description="How often each router exchanges decisions with the `RoutingState` deployment.",
    )

    decision_trace: DecisionTraceArgs | None = Field(
        default=None,
        description="Record per-decision traces (the chosen replica and why: the affinity verdict, the scorers' "
        "scores, each candidate's queue, batch, KV usage, predicted prefix hit and predicted TTFT) and the "
        "replicas' load over time, to a JSONL file per router under `dir`; analyse with "
        "`python -m llmd_ray.bench.traces`. None: off. Policy `llmd` only.",
    )

    def shares_decisions(self, ingress_replicas: int) -> bool:
        """Whether routers share decisions in an app with ``ingress_replicas`` ingress replicas."""
        if self.policy != "llmd":
            return False
        return ingress_replicas > 1 if self.share_decisions is None else self.share_decisions

    def uses_precise_index(self) -> bool:
        if self.policy != "llmd":
            return False
        if self.precise_index is not None:
            return self.precise_index
        return any(
            spec.type == "precise-prefix-cache" or (spec.parameters or {}).get("matchSource") == "precise"
            for spec in parse_config(self.config).plugins
        )


def request_router_config(router: RouterArgs) -> RequestRouterConfig:
    """Serve's RequestRouterConfig for the chosen policy (validates the plugin config eagerly)."""
    if router.policy == "pow2":
        return RequestRouterConfig(request_routing_stats_period_s=router.stats_period_s)
    from llmd_ray.routing.scheduler import Scheduler

    Scheduler.from_config(router.config)  # a bad plugin config fails here, naming plugin and field
    return RequestRouterConfig(
        request_router_class="llmd_ray.routing.router:LLMDRequestRouter",
        request_router_kwargs={
            "config": router.config, "block_size": router.block_size,
            "kv_index": KV_INDEX_DEPLOYMENT if router.uses_precise_index() else None,
            "kv_index_sync_s": router.kv_index_sync_s,
            "speculative_ttl_s": router.kv_index_speculative_ttl_s,
            # build_app resolves share_decisions (None: by the ingress replicas); unresolved here means off
            "shared_state": ROUTING_STATE_DEPLOYMENT if router.share_decisions else None,
            "shared_state_sync_s": router.share_decisions_sync_s,
            "trace": router.decision_trace.model_dump() if router.decision_trace is not None else None,
        },
        request_routing_stats_period_s=router.stats_period_s,
    )
