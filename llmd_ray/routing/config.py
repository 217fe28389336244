"""Scheduler config in the shape of llm-d's EndpointPickerConfig, and its validation.

```yaml
plugins:                         # instances: type, optional name (default: type), parameters
- type: queue
  name: my-queue
  parameters: {}
schedulingProfiles:              # filters -> weighted scorers -> picker, by reference
- name: default
  plugins:
  - pluginRef: my-queue
    weight: 2
```

Each plugin validates its own ``parameters`` with its pydantic model, so an
error names the plugin and the field, e.g.
``plugin 'my-queue' (queue): parameters.foo: extra inputs are not permitted``.
"""

from __future__ import annotations

from llmd_ray import errors

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_CONFIG_YAML = """\
# Default: llm-d's "sticky until saturated" prefix-cache-aware, load-aware routing.
plugins:
- type: prefix-cache-affinity      # warm endpoints only, until they saturate or the fleet is skewed
  parameters:
    prefillTokensPerSecond: 8000   # measured per-endpoint prefill throughput (set per model/hardware)
    maxTtftPenaltySeconds: 0.5     # saturated beyond 8000 x 0.5 = 4000 pending prefill tokens
- type: prefix-cache
- type: queue
- type: kv-cache-utilization
- type: session-affinity
- type: lora-affinity              # requests naming a LoRA adapter: where it runs / is loaded / has a slot
- type: max-score
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache-affinity
  - pluginRef: prefix-cache
    weight: 3
  - pluginRef: queue
    weight: 2
  - pluginRef: kv-cache-utilization
    weight: 2
  - pluginRef: session-affinity
    weight: 1
  - pluginRef: lora-affinity       # 0 for every endpoint without an adapter: base-model routing unchanged
    weight: 3
  - pluginRef: max-score
"""


def default_config() -> dict[str, Any]:
    """The default config as a dict (see ``DEFAULT_CONFIG_YAML`` for the commented form)."""
    return yaml.safe_load(DEFAULT_CONFIG_YAML)


class ConfigError(errors.ConfigError):
    """An invalid scheduler config; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid scheduler config: " + "; ".join(errors))

    def __reduce__(self):
        return (type(self), (self.errors,))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PluginSpec(_Model):
    type: str = Field(description="The plugin type, one of the registered types (e.g. 'queue').")
    name: str | None = Field(None, description="Unique instance name; default: the type.")
    parameters: dict[str, Any] | None = Field(None, description="Validated by the plugin's own model.")


class ProfilePluginRef(_Model):
    plugin_ref: str = Field(alias="pluginRef", description="Name of a plugin declared under plugins.")
    weight: float | None = Field(None, ge=0, description="Scorers only; default 1.")


class SchedulingProfileSpec(_Model):
    name: str = Field(description="Profile name (e.g. default, prefill, decode).")
    plugins: list[ProfilePluginRef] = Field(description="Filters, scorers and at most one picker, by reference.")


class SchedulerConfig(_Model):
    api_version: str | None = Field(None, alias="apiVersion", description="Accepted and ignored.")
    kind: Literal["EndpointPickerConfig"] | None = Field(None, description="Accepted; must be EndpointPickerConfig.")
    plugins: list[PluginSpec] = Field(description="Plugin instances.")
    scheduling_profiles: list[SchedulingProfileSpec] = Field(
        alias="schedulingProfiles", min_length=1, description="Named profiles."
    )


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def format_errors(e: ValidationError, prefix: str = "") -> list[str]:
    """``path: message`` per error, message lower-cased first letter."""
    out = []
    for err in e.errors():
        msg = err["msg"]
        msg = msg[:1].lower() + msg[1:]
        loc = _loc(err["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        out.append(f"{where}: {msg}" if where else msg)
    return out


def parse_config(config: dict | str | SchedulerConfig | None) -> SchedulerConfig:
    """YAML text, a dict, or a model -> a validated ``SchedulerConfig`` (None: the default)."""
    if config is None:
        config = default_config()
    if isinstance(config, SchedulerConfig):
        return config
    if isinstance(config, str):
        try:
            config = yaml.safe_load(config)
        except yaml.YAMLError as e:
            raise ConfigError([f"not valid YAML: {e}"]) from None
    if not isinstance(config, dict):
        raise ConfigError([f"expected a mapping at the top level, got {type(config).__name__}"])
    try:
        return SchedulerConfig.model_validate(config)
    except ValidationError as e:
        raise ConfigError(format_errors(e)) from None
