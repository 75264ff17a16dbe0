"""Every sandbox component, found in this package and ordered so dependencies start first."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from stackprobe.sandbox.component import Component


@cache
def all_components() -> tuple[Component, ...]:
    found: dict[str, Component] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for comp in getattr(module, "COMPONENTS", ()):
            found[comp.name] = comp
    ordered: list[Component] = []

    def visit(comp: Component, path: tuple[str, ...]) -> None:
        if comp in ordered:
            return
        if comp.name in path:
            raise RuntimeError(f"sandbox components require each other: {' -> '.join(path)}")
        for dep in comp.requires:
            visit(found[dep], (*path, comp.name))
        ordered.append(comp)

    for comp in found.values():
        visit(comp, ())
    return tuple(ordered)
