"""Every sandbox component, found in this package and ordered so dependencies start first;
the profile (`sandbox up --ha`, `--proxy SERVICE`) adds the HA components and Toxiproxy."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache

from stackprobe.sandbox.component import Component, Layout
from stackprobe.sandbox.components.ha import HA_COMPONENTS
from stackprobe.sandbox.components.observability import JAEGER_BADGER
from stackprobe.sandbox.components.toxiproxy import toxiproxy_component, upstream_of


@cache
def all_components() -> tuple[Component, ...]:
    """The default profile: the light sandbox."""
    found: dict[str, Component] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for comp in getattr(module, "COMPONENTS", ()):
            found[comp.name] = comp
    return ordered(found)


def ordered(found: dict[str, Component]) -> tuple[Component, ...]:
    """The components with every one after those it requires."""
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


@dataclass(frozen=True)
class Profile:
    """What the sandbox runs beyond the light default: the HA components, Toxiproxy proxies."""

    ha: bool = False
    proxies: tuple[str, ...] = ()


def components_for(profile: Profile) -> tuple[Component, ...]:
    """The components of a profile, ordered. HA swaps Jaeger's memory store for badger."""
    found = {c.name: c for c in all_components()}
    if profile.ha:
        found["jaeger"] = JAEGER_BADGER
        found.update({c.name: c for c in HA_COMPONENTS})
    if profile.proxies:
        base = ordered(found)
        wanted = set(profile.proxies)

        def upstreams(layout: Layout) -> dict[str, str]:
            return {
                service: upstream_of(str(entry["url"]))
                for comp in base
                for service, entry in comp.services(layout).items()
                if service in wanted
            }

        found["toxiproxy"] = toxiproxy_component(profile.proxies, upstreams)
    return ordered(found)
