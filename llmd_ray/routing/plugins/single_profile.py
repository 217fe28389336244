"""``single-profile``: profile handler. Run the one configured profile; it is primary.

The default handler when the config names none. A P/D handler (later) runs
``decode`` first and then ``prefill`` when the prompt is worth disaggregating,
returning both results (see ``framework.ProfileHandler``).

Inputs: the configured profiles (exactly one).

Parameters: none.

Example:

```yaml
plugins:
- type: single-profile
- type: queue
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmd_ray.routing.framework import CycleState, ProfileHandler, ProfileResult, SchedulingProfile


class SingleProfileHandler(ProfileHandler):
    type = "single-profile"

    def pick_profiles(
        self, cycle: CycleState, profiles: Mapping[str, SchedulingProfile], results: Mapping[str, ProfileResult]
    ) -> list[str]:
        return [] if results else list(profiles)[:1]

    def primary(self, cycle: CycleState, results: Mapping[str, ProfileResult]) -> str:
        return next(iter(results))

    def validate_profiles(self, profile_names: Sequence[str]) -> str | None:
        if len(profile_names) != 1:
            return f"runs exactly one scheduling profile, {len(profile_names)} configured"
        return None
