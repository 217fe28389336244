"""The scheduler: builds the plugins and the profile from config, routes, takes feedback.

Use from one event loop (it is not thread-safe)::

    sched = Scheduler.from_config(yaml_text_or_dict)        # None: default_config()
    result = sched.schedule(request, endpoints)             # no state change
    ranked = result.ranked                                  # endpoint ids, best first
    sched.on_routed(request, ranked[0])                     # the replica actually used
    sched.on_completed(request.request_id, ranked[0])

The scheduler holds no routing state of its own: each plugin owns its state
(the ``prefix-cache`` plugin owns the approximate prefix index).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from llmd_ray.routing.config import ConfigError, SchedulerConfig, format_errors, parse_config
from llmd_ray.routing.framework import (
    CycleState, Filter, Picker, Plugin, PluginHandle, RoutedEvent, SchedulingProfile, SchedulingResult, Scorer,
)
from llmd_ray.routing.plugins.max_score import MaxScorePicker
from llmd_ray.routing.plugins.prefix_cache import PrefixCacheScorer, UsesPrefixIndex
from llmd_ray.routing.registry import PLUGIN_TYPES, RETIRED_TYPES, types_by_name
from llmd_ray.routing.table import EndpointTable, run_profile
from llmd_ray.routing.types import Endpoint, RoutingRequest

TABLE_MIN_ENDPOINTS = 64  # below this the per-endpoint path is faster than numpy (same result either way)

P = TypeVar("P", bound=Plugin)


def _instantiate(config: SchedulerConfig, handle: PluginHandle, plugin_types: Sequence[type[Plugin]],
                 errors: list[str]) -> dict[str, Plugin]:
    registry = types_by_name(plugin_types)
    plugins: dict[str, Plugin] = {}
    for i, spec in enumerate(config.plugins):
        name = spec.name or spec.type
        cls = registry.get(spec.type)
        if cls is None:
            retired = RETIRED_TYPES.get(spec.type)
            errors.append(f"plugins[{i}].type: plugin type {spec.type!r} was {retired}" if retired else
                          f"plugins[{i}].type: unknown plugin type {spec.type!r} (known: {', '.join(registry)})")
            continue
        if name in plugins:
            errors.append(f"plugins[{i}].name: duplicate plugin name {name!r}")
            continue
        try:
            params = cls.Parameters.model_validate(spec.parameters or {})
        except ValidationError as e:
            errors += [f"plugin {name!r} ({spec.type}): {m}" for m in format_errors(e, "parameters")]
            continue
        plugins[name] = cls(name, params, handle)
    return plugins


def _wire_prefix_index(plugins: dict[str, Plugin], handle: PluginHandle, errors: list[str]) -> None:
    """Point the plugins that read the approximate prefix index at the config's first ``prefix-cache`` plugin
    (adding one that only keeps the index, under the name ``prefix-cache``, when there is none)."""
    users = [p for p in plugins.values() if isinstance(p, UsesPrefixIndex) and p.needs_prefix_index()]
    if not users:
        return
    owner = next((p for p in plugins.values() if isinstance(p, PrefixCacheScorer)), None)
    if owner is None:
        name = PrefixCacheScorer.type
        if name in plugins:
            errors.append(f"plugin {name!r} ({plugins[name].type}): the name is needed for the prefix index of "
                          f"{', '.join(p.name for p in users)}; rename it or add a prefix-cache plugin")
            return
        owner = plugins[name] = PrefixCacheScorer(name, PrefixCacheScorer.Parameters(), handle)
    for p in users:
        p.prefix = owner


def _profile(config: SchedulerConfig, plugins: dict[str, Plugin], handle: PluginHandle,
             errors: list[str]) -> SchedulingProfile | None:
    if len(config.scheduling_profiles) != 1:
        names = ", ".join(p.name for p in config.scheduling_profiles)
        errors.append(f"schedulingProfiles: a scheduler runs exactly one profile, got "
                      f"{len(config.scheduling_profiles)} ({names})")
        return None
    (spec,) = config.scheduling_profiles
    where = f"profile {spec.name!r}"
    filters: list[Filter] = []
    scorers: list[tuple[Scorer, float]] = []
    pickers: list[Picker] = []
    for j, ref in enumerate(spec.plugins):
        p = plugins.get(ref.plugin_ref)
        at = f"{where}: plugins[{j}].pluginRef {ref.plugin_ref!r}"
        if p is None:
            if not any((s.name or s.type) == ref.plugin_ref for s in config.plugins):
                errors.append(f"{at}: no plugin of that name")
            continue  # else: the plugin itself failed, already reported
        if ref.weight is not None and not isinstance(p, Scorer):
            errors.append(f"{at}: weight applies to scorers only ({p.type} is not one)")
        if isinstance(p, Filter):
            filters.append(p)
        elif isinstance(p, Scorer):
            scorers.append((p, 1.0 if ref.weight is None else ref.weight))
        elif isinstance(p, Picker):
            pickers.append(p)
        else:
            errors.append(f"{at}: a {p.type} cannot be part of a profile")
    if len(pickers) > 1:
        errors.append(f"{where}: at most one picker, got {', '.join(p.name for p in pickers)}")
    picker = pickers[0] if pickers else MaxScorePicker(f"{spec.name}/max-score", MaxScorePicker.Parameters(), handle)
    return SchedulingProfile(spec.name, filters, scorers, picker)


def build_plugins(
    config: SchedulerConfig, handle: PluginHandle, plugin_types: Sequence[type[Plugin]] = PLUGIN_TYPES
) -> tuple[dict[str, Plugin], SchedulingProfile]:
    """Instantiate and wire the config; every problem found is reported at once."""
    errors: list[str] = []
    plugins = _instantiate(config, handle, plugin_types, errors)
    profile = _profile(config, plugins, handle, errors)
    _wire_prefix_index(plugins, handle, errors)
    if errors:
        raise ConfigError(errors)
    return plugins, profile



def router_seed() -> int:
    """A tie-break seed of a router's own (from ``os.urandom``). Routers in several ingress replicas must not
    share one: with one seed they draw the same "random" endpoint for their first ties."""
    return int.from_bytes(os.urandom(8), "little")

class Scheduler:
    """Filters -> weighted scorers -> picker, in one profile; returns ranked endpoint ids."""

    def __init__(self, plugins: dict[str, Plugin], profile: SchedulingProfile, handle: PluginHandle):
        self.plugins = plugins
        self.profile = profile
        self.handle = handle
        self._preparing = [p for p in plugins.values() if type(p).prepare is not Plugin.prepare]
        self._hooked = [p for p in plugins.values() if type(p).on_routed is not Plugin.on_routed]
        self.last_cycle: CycleState | None = None  # the last decision's (decision traces read its data)

    @classmethod
    def from_config(
        cls, config: dict | str | SchedulerConfig | None = None, *, precise_view: Any = None, seed: int | None = 0,
        clock: Callable[[], float] = time.time, plugin_types: Sequence[type[Plugin]] = PLUGIN_TYPES,
    ) -> Scheduler:
        """Build from YAML text, a dict or a ``SchedulerConfig``; raises ``ConfigError``."""
        handle = PluginHandle(clock, random.Random(seed), precise_view)
        plugins, profile = build_plugins(parse_config(config), handle, plugin_types)
        return cls(plugins, profile, handle)

    def plugin_of_type(self, cls: type[P]) -> P | None:
        """The first plugin that is a ``cls`` (e.g. ``PrefixCacheScorer``, for its index), or None."""
        return next((p for p in self.plugins.values() if isinstance(p, cls)), None)

    def set_precise_view(self, view: Any) -> None:
        """Install (or clear, with None) the precise KV-index view."""
        self.handle.precise_view = view

    def schedule(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> SchedulingResult:
        """Rank ``endpoints`` for ``request``. Router state is unchanged (see ``on_routed``).

        Given an ``EndpointTable`` (fleet scale) the profile runs on its arrays, with the same result.
        """
        table = endpoints if isinstance(endpoints, EndpointTable) and len(endpoints) >= TABLE_MIN_ENDPOINTS else None
        eps = table if table is not None else list(endpoints)
        cycle = self.last_cycle = CycleState(request, self.handle.clock(), self.handle)
        for p in self._preparing:
            p.prepare(cycle, eps)
        return run_profile(self.profile, cycle, table) if table is not None else self.profile.run(cycle, eps)

    def on_routed(self, request: RoutingRequest, endpoint_id: str) -> None:
        """The request was sent to ``endpoint_id``: feed the plugins (the prefix index records its blocks)."""
        if not endpoint_id:
            raise ValueError("on_routed needs the endpoint the request was sent to")
        event = RoutedEvent(request, endpoint_id, self.handle.clock())
        for p in self._hooked:
            p.on_routed(event)

    def on_completed(self, request_id: str, endpoint_id: str) -> None:
        for p in self.plugins.values():
            p.on_completed(request_id, endpoint_id)

    def remove_endpoint(self, endpoint_id: str) -> None:
        """Forget an endpoint everywhere (replica died or was removed)."""
        for p in self.plugins.values():
            p.remove_endpoint(endpoint_id)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-plugin counters (e.g. affinity outcomes, precise-index fallbacks)."""
        return {name: s for name, p in self.plugins.items() if (s := p.stats())}
