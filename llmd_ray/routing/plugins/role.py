"""``role``: filter. Keep the endpoints that can serve a P/D role.

Inputs: ``Endpoint.role`` (``prefill``, ``decode`` or ``both``).

Keeps endpoints whose role equals ``role``; endpoints of role ``both`` also
pass when ``acceptBoth`` is true (an aggregated endpoint can do either half).

Parameters: ``role``, ``acceptBoth``.

Example:

```yaml
plugins:
- type: role
  name: decode-role
  parameters:
    role: decode
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: decode-role
```
"""

from __future__ import annotations

from pydantic import Field

from llmd_ray.routing.framework import CycleState, Filter, PluginParameters
from llmd_ray.routing.types import Endpoint, Role


class RoleParameters(PluginParameters):
    role: Role = Field(description="The role a profile needs: prefill, decode or both.")
    accept_both: bool = Field(True, description="Also keep endpoints of role 'both'.")


class RoleFilter(Filter):
    type = "role"
    Parameters = RoleParameters

    def filter(self, cycle: CycleState, endpoints: list[Endpoint]) -> tuple[list[Endpoint], str]:
        role, both = self.params.role, self.params.accept_both
        kept = [e for e in endpoints if e.role == role or (both and e.role == "both")]
        return kept, f"role {role}" + (" or both" if both and role != "both" else "")
