"""QoS classes: the one place their objectives are configured, in seconds (pure; no Ray import).

``QoSConfig`` is ``AppArgs.qos``. The ingress reads it to pick each request's
class and to order, admit or shed requests (``flow_control.py``); the router
and the variant autoscaler read the same object (``QoSConfig.objectives()``)
for the classes' priorities and TTFT/ITL objectives.

A request picks its class, first match wins:

1. the ``x-llmd-qos`` header (``QoSConfig.header``);
2. its ``model``: an alias from ``model_aliases``, or ``<served model>:<class>`` (e.g. ``tiny-llama:batch``);
3. its API key's ``qos_class``;
4. ``default_class``.

An API key's class is also a ceiling: a header or alias may ask for a class of
lower or equal priority, never a higher one (403).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmd_ray.errors import InvalidRequestError, ModelNotFoundError, PermissionDeniedError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class QoSClass(BaseModel):
    """One service class: how it is ordered, what it is promised, and whether it may be shed."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(description="Higher is admitted first; strict between classes of different priority.")
    ttft_objective_s: float | None = Field(default=None, gt=0, description="Time-to-first-token objective (s).")
    itl_objective_s: float | None = Field(default=None, gt=0, description="Inter-token latency objective (s).")
    sheddable: bool = Field(
        default=False, description="Shed (429 + Retry-After) when the replicas are saturated, instead of waiting."
    )
    max_queue_wait_s: float = Field(
        default=30.0, gt=0, description="Longest wait for admission at the ingress; then 503 (429 if sheddable)."
    )
    max_input_tokens: int | None = Field(
        default=None, ge=1, description="Capacity planning: the variant autoscaler counts requests with at most this "
        "many prompt tokens (and at most max_output_tokens) in this class; a class without selectors is planned "
        "only as the default class.")
    max_output_tokens: int | None = Field(
        default=None, ge=1, description="Capacity planning: shape selector on the requested output tokens.")

    @property
    def has_selectors(self) -> bool:
        return self.max_input_tokens is not None or self.max_output_tokens is not None


def default_classes() -> dict[str, QoSClass]:
    return {
        "interactive": QoSClass(priority=2, ttft_objective_s=0.5, itl_objective_s=0.05, max_queue_wait_s=5.0),
        "standard": QoSClass(priority=1, ttft_objective_s=2.0, itl_objective_s=0.1, max_queue_wait_s=30.0),
        "batch": QoSClass(priority=0, sheddable=True, max_queue_wait_s=600.0),
    }


@dataclass(slots=True, frozen=True)
class Objective:
    """A class's objectives, as the router and the autoscaler read them."""

    name: str
    priority: int
    ttft_s: float | None
    itl_s: float | None
    sheddable: bool


UNBOUNDED_MS = 1e9  # a class with no objective: planned for throughput only


@dataclass(slots=True, frozen=True)
class ClassTarget:
    """A class as the variant autoscaler plans for it (ms; shape selectors; None: any)."""

    name: str
    ttft_ms: float
    itl_ms: float
    max_input_tokens: int | None
    max_output_tokens: int | None


class QoSConfig(BaseModel):
    """QoS classes and how requests select them (``AppArgs.qos``)."""

    model_config = ConfigDict(extra="forbid")

    classes: dict[str, QoSClass] = Field(
        default_factory=default_classes, description="Classes by name (lower-case letters, digits, `-`, `_`)."
    )
    default_class: str = Field(default="standard", description="Class of requests that select none.")
    header: str = Field(default="x-llmd-qos", description="Request header that names a class.")
    model_aliases: dict[str, str] = Field(
        default_factory=dict, description="Model names that select a class, e.g. `{code-complete: interactive}`."
    )

    @model_validator(mode="after")
    def _check(self) -> "QoSConfig":
        if not self.classes:
            raise ValueError("classes: at least one class is required")
        bad = [n for n in self.classes if not _NAME.match(n)]
        if bad:
            raise ValueError(f"classes: invalid class name(s) {bad}: use lower-case letters, digits, '-' and '_'")
        if self.default_class not in self.classes:
            raise ValueError(f"default_class: '{self.default_class}' is not one of {sorted(self.classes)}")
        for alias, cls in self.model_aliases.items():
            if cls not in self.classes:
                raise ValueError(f"model_aliases.{alias}: '{cls}' is not one of {sorted(self.classes)}")
        self.header = self.header.lower()
        return self

    def targets(self) -> list[ClassTarget]:
        """What the variant autoscaler plans for, in milliseconds: the classes with shape selectors in their
        order, then the default class as the catch-all. A class without an objective is planned as unbounded."""
        names = [n for n, c in self.classes.items() if c.has_selectors and n != self.default_class]
        out = []
        for n in [*names, self.default_class]:
            c = self.classes[n]
            out.append(ClassTarget(
                n, UNBOUNDED_MS if c.ttft_objective_s is None else 1000.0 * c.ttft_objective_s,
                UNBOUNDED_MS if c.itl_objective_s is None else 1000.0 * c.itl_objective_s,
                c.max_input_tokens if n != self.default_class else None,
                c.max_output_tokens if n != self.default_class else None))
        return out

    def objectives(self) -> dict[str, Objective]:
        """Each class's priority and objectives: what the router and the autoscaler read."""
        return {
            n: Objective(n, c.priority, c.ttft_objective_s, c.itl_objective_s, c.sheddable)
            for n, c in self.classes.items()
        }

    def select(
        self, *, served_model: str, model: str | None, header: str | None = None, key_class: str | None = None
    ) -> str:
        """The request's class. Raises 400 (unknown class), 404 (unknown model) or 403 (above the key's class)."""
        requested: str | None = None
        if header is not None:
            requested = header.strip().lower()
            if requested not in self.classes:
                raise InvalidRequestError(
                    f"{self.header}: unknown QoS class '{header[:64]}'; one of {sorted(self.classes)}",
                    param=self.header,
                )
        alias = self.model_class(served_model, model)
        requested = requested or alias
        if requested is None:
            return key_class or self.default_class
        if key_class is not None and self.classes[requested].priority > self.classes[key_class].priority:
            raise PermissionDeniedError(
                f"this API key may use QoS class '{key_class}' or lower, not '{requested}'",
                param=self.header if header is not None else "model",
                code="qos_class_not_allowed",
            )
        return requested

    def model_class(self, served_model: str, model: str | None) -> str | None:
        """The class a model name selects (None: the served model itself). Raises 404 for unknown names."""
        if model is None or model == served_model:
            return None
        if model in self.model_aliases:
            return self.model_aliases[model]
        base, sep, cls = model.rpartition(":")
        if sep and base == served_model and cls in self.classes:
            return cls
        raise ModelNotFoundError(
            f"model '{model[:200]}' does not exist; this server serves '{served_model}' "
            f"(also as '{served_model}:<class>' with a class of {sorted(self.classes)})",
            param="model",
            code="model_not_found",
        )
