"""The catalog: every kind stackprobe knows and every check it can run.

The CLI, the pytest plugin and the monitor all read this one catalog.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from stackprobe.check import CheckSpec
from stackprobe.kinds import Kind


@cache
def known_kinds() -> dict[str, Kind[Any]]:
    """Kind name -> Kind: every module under `stackprobe.services` that defines `KIND`."""
    import stackprobe.services as package

    kinds: list[Kind[Any]] = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if isinstance(kind := getattr(module, "KIND", None), Kind):
            kinds.append(kind)
    return {kind.name: kind for kind in sorted(kinds, key=lambda k: k.name)}


def all_checks() -> list[CheckSpec]:
    return [spec for kind in known_kinds().values() for spec in kind.checks]


def describe() -> dict[str, Any]:
    """Every kind with its capabilities and checks, as `stackprobe list --format json` prints it."""
    return {
        "kinds": {
            k.name: {
                "description": k.description,
                "capabilities": list(k.capabilities),
                "checks": [
                    {
                        "id": c.id,
                        "capability": c.capability,
                        "title": c.title,
                        "severity": c.severity.value,
                        "disruptive": c.disruptive,
                        "exclusive": c.exclusive,
                        "timeout_s": c.timeout,
                    }
                    for c in k.checks
                ],
            }
            for k in known_kinds().values()
        }
    }
