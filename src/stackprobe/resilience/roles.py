"""Built-in scenarios name their services by role (`$cache`, `$ha-consul-1`): this resolves
each role to a service of the stack, so the same scenario runs on the sandbox and on a user's
stack:

    1. `services.<stack service>.options.targets.<role>` in the stack file, else
    2. the service named like the role, else
    3. the only service of the kind the scenario gives the role (`roles: {cache: redis}`,
       `roles: {tracing: jaeger|tempo}`).
"""

from __future__ import annotations

from typing import Any

from stackprobe.check import CheckSkipped
from stackprobe.config import Stack
from stackprobe.resilience.model import Scenario


def resolve(scenario: Scenario, stack: Stack, targets: dict[str, str]) -> Scenario:
    """The scenario with every `$role` replaced by its service; skipped, saying how to name
    it, when a role has no service or several candidates."""
    names: dict[str, str] = {}

    def service(role: str) -> str:
        if not role.startswith("$"):
            return role
        bare = role[1:]
        if bare not in names:
            names[bare] = _pick(scenario, stack, targets, bare)
        return names[bare]

    data = _walk(scenario.model_dump(), service)
    resolved = Scenario.model_validate(data)
    members = list(dict.fromkeys(resolved.members))  # one service may play several members
    return resolved.model_copy(update={"members": members})


def _pick(scenario: Scenario, stack: Stack, targets: dict[str, str], role: str) -> str:
    if role in targets:
        return targets[role]
    if role in stack.services:
        return role
    kind = scenario.roles.get(role)
    kinds = set(kind.split("|")) if kind else set()
    candidates = [n for n, s in stack.services.items() if s.kind in kinds]
    if len(candidates) == 1:
        return candidates[0]
    need = f" ({scenario.needs})" if scenario.needs else ""
    found = (
        f"several {kind} services ({', '.join(candidates)})"
        if candidates
        else f"no service {role!r}"
    )
    raise CheckSkipped(
        f"{scenario.name}: {found}: name it in the stack service's options.targets.{role}{need}"
    )


def _walk(value: Any, service: Any) -> Any:
    """Replace role names wherever a field names a service."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("service", "watch") and isinstance(item, str):
                out[key] = service(item)
            elif key == "members" and isinstance(item, list):
                out[key] = [service(m) for m in item]
            else:
                out[key] = _walk(item, service)
        return out
    if isinstance(value, list):
        return [_walk(v, service) for v in value]
    return value
