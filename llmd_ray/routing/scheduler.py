"""The scheduler: builds plugins and profiles from config, routes, takes feedback.

Use from one event loop (it is not thread-safe)::

    sched = Scheduler.from_config(yaml_text_or_dict)        # None: default_config()
    result = sched.schedule(request, endpoints)             # no state change
    ranked = result.ranked                                  # endpoint ids, best first
    sched.on_routed(request, ranked[0])                     # the replica actually used
    sched.on_completed(request.request_id, ranked[0])
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from llmd_ray.routing.config import ConfigError, SchedulerConfig, format_errors, parse_config
from llmd_ray.routing.framework import (
    CycleState, Filter, Picker, Plugin, PluginHandle, ProfileHandler, ProfileResult, RoutedEvent,
    SchedulingProfile, SchedulingResult, Scorer,
)
from llmd_ray.routing.index import ApproximatePrefixIndex
from llmd_ray.routing.plugins.max_score import MaxScorePicker
from llmd_ray.routing.plugins.single_profile import SingleProfileHandler
from llmd_ray.routing.registry import PLUGIN_TYPES, types_by_name
from llmd_ray.routing.table import EndpointTable, run_profile
from llmd_ray.routing.types import Endpoint, RoutingRequest


TABLE_MIN_ENDPOINTS = 64  # below this the per-endpoint path is faster than numpy (same result either way)


def build_plugins(
    config: SchedulerConfig, handle: PluginHandle, plugin_types: Sequence[type[Plugin]] = PLUGIN_TYPES
) -> tuple[dict[str, Plugin], dict[str, SchedulingProfile], ProfileHandler]:
    """Instantiate and wire the config; every problem found is reported at once."""
    registry = types_by_name(plugin_types)
    errors: list[str] = []
    plugins: dict[str, Plugin] = {}
    for i, spec in enumerate(config.plugins):
        name = spec.name or spec.type
        cls = registry.get(spec.type)
        if cls is None:
            errors.append(f"plugins[{i}].type: unknown plugin type {spec.type!r} (known: {', '.join(registry)})")
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

    handlers = [p for p in plugins.values() if isinstance(p, ProfileHandler)]
    if len(handlers) > 1:
        errors.append(f"plugins: at most one profile handler, got {', '.join(p.name for p in handlers)}")
    if handlers:
        handler = handlers[0]
    else:
        handler = SingleProfileHandler("single-profile", SingleProfileHandler.Parameters(), handle)

    profiles: dict[str, SchedulingProfile] = {}
    for spec in config.scheduling_profiles:
        where = f"profile {spec.name!r}"
        if spec.name in profiles:
            errors.append(f"{where}: duplicate profile name")
            continue
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
        if pickers:
            picker = pickers[0]
        else:
            picker = MaxScorePicker(f"{spec.name}/max-score", MaxScorePicker.Parameters(), handle)
        profiles[spec.name] = SchedulingProfile(spec.name, filters, scorers, picker)
    if not errors:
        problem = handler.validate_profiles(list(profiles))
        if problem:
            errors.append(f"profile handler {handler.name!r} ({handler.type}): {problem}")
    if errors:
        raise ConfigError(errors)
    return plugins, profiles, handler


class Scheduler:
    """Filters -> weighted scorers -> picker, per profile; returns ranked endpoint ids."""

    def __init__(
        self, plugins: dict[str, Plugin], profiles: dict[str, SchedulingProfile], handler: ProfileHandler,
        handle: PluginHandle,
    ):
        self.plugins = plugins
        self.profiles = profiles
        self.handler = handler
        self.handle = handle
        self._hooked = [p for p in plugins.values() if type(p).on_routed is not Plugin.on_routed]
        self._capacities_of: dict[int, int] = {}  # EndpointTable uid -> version whose capacities were applied
        self._last_matches: tuple | None = None  # (request, index version, its prefix matches) from schedule

    @classmethod
    def from_config(
        cls, config: dict | str | SchedulerConfig | None = None, *, index: ApproximatePrefixIndex | None = None,
        precise_view: Any = None, seed: int | None = 0, clock: Callable[[], float] = time.time,
        plugin_types: Sequence[type[Plugin]] = PLUGIN_TYPES,
    ) -> Scheduler:
        """Build from YAML text, a dict or a ``SchedulerConfig``; raises ``ConfigError``."""
        handle = PluginHandle(index or ApproximatePrefixIndex(), clock, random.Random(seed), precise_view)
        plugins, profiles, handler = build_plugins(parse_config(config), handle, plugin_types)
        return cls(plugins, profiles, handler, handle)

    @property
    def index(self) -> ApproximatePrefixIndex:
        return self.handle.index

    def set_precise_view(self, view: Any) -> None:
        """Install (or clear, with None) the precise KV-index view."""
        self.handle.precise_view = view

    def schedule(self, request: RoutingRequest, endpoints: Sequence[Endpoint]) -> SchedulingResult:
        """Rank ``endpoints`` for ``request``. Router state is unchanged (see ``on_routed``).

        Given an ``EndpointTable`` (fleet scale) the profiles run on its arrays, with the same result.
        """
        index = self.handle.index
        known = index.capacities
        table = endpoints if isinstance(endpoints, EndpointTable) and len(endpoints) >= TABLE_MIN_ENDPOINTS else None
        if table is None or self._capacities_of.get(table.uid) != table.version:
            for e in endpoints:
                nb = e.num_blocks
                if nb and known.get(e.id) != nb:
                    index.set_capacity(e.id, nb)
            if table is not None:
                self._capacities_of[table.uid] = table.version
        cycle = CycleState(request, self.handle.clock(), self.handle)
        eps = table if table is not None else list(endpoints)
        results: dict[str, ProfileResult] = {}
        while True:
            names = self.handler.pick_profiles(cycle, self.profiles, results)
            names = [n for n in names if n not in results]
            if not names:
                break
            for name in names:
                profile = self.profiles[name]
                results[name] = run_profile(profile, cycle, eps) if table is not None else profile.run(cycle, eps)
        primary = self.handler.primary(cycle, results) if results else ""
        if cycle._matches is not None:  # on_routed's prior matches, unless the index changes first
            self._last_matches = (request, index.version, cycle._matches)
        return SchedulingResult(request.request_id, primary, results)

    def on_routed(self, request: RoutingRequest, endpoint_id: str, *, profile: str | None = None) -> None:
        """The request was sent to ``endpoint_id``: feed the plugins, then record its blocks.

        Call once per endpoint actually used (under P/D: once for the prefill
        endpoint with ``profile="prefill"`` and once for the decode endpoint).
        """
        if not endpoint_id:
            raise ValueError("on_routed needs the endpoint the request was sent to")
        hashes = request.block_hashes
        index = self.handle.index
        last = self._last_matches
        if last is not None and last[0] is request and last[1] == index.version:
            prior = last[2]
        else:
            prior = index.match(hashes)
        self._last_matches = None
        event = RoutedEvent(request, endpoint_id, profile, prior, self.handle.clock())
        for p in self._hooked:
            p.on_routed(event)
        if hashes:
            self.handle.index.record(endpoint_id, hashes)

    def on_completed(self, request_id: str, endpoint_id: str) -> None:
        for p in self.plugins.values():
            p.on_completed(request_id, endpoint_id)

    def remove_endpoint(self, endpoint_id: str) -> None:
        """Forget an endpoint everywhere (replica died or was removed)."""
        self.handle.index.remove_endpoint(endpoint_id)
        for p in self.plugins.values():
            p.remove_endpoint(endpoint_id)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-plugin counters (e.g. affinity outcomes, precise-index fallbacks)."""
        return {name: s for name, p in self.plugins.items() if (s := p.stats())}
