"""What a workload is, and the registry of them: one definition per kind, on its own client.

A workload's `prepare(ctx, lanes)` receives a check context *of the target service* (its
client, its config and typed options, and `ns`, the run prefix for that service), registers
the cleanup of everything it will create before creating it (every name carries `ctx.ns`,
with a TTL where the service has one, and is removed by name), and returns one operation
function per lane. An operation raises when the service misbehaved (the engine counts it as an
error of its kind). The first workload registered for a kind is its default.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from stackprobe.check import CheckContext, ServiceOpener
from stackprobe.config import Stack
from stackprobe.errors import ConfigError
from stackprobe.ids import service_namespace
from stackprobe.load.engine import Op
from stackprobe.load.limits import LOW_RATE

Prepare = Callable[[CheckContext[Any], int], Awaitable[list[Op]]]


@dataclass(frozen=True)
class Workload:
    kinds: tuple[str, ...]
    name: str
    title: str
    prepare: Prepare
    low_rate: float = LOW_RATE


_REGISTRY: list[Workload] = []


def workload(
    *kinds: str, name: str, title: str, low_rate: float = LOW_RATE
) -> Callable[[Prepare], Prepare]:
    """Register `prepare` as the workload `name` of `kinds` (the decorator of workloads/*)."""

    def register(fn: Prepare) -> Prepare:
        _REGISTRY.append(Workload(tuple(kinds), name, title, fn, low_rate))
        return fn

    return register


@cache
def all_workloads() -> dict[str, dict[str, Workload]]:
    """kind -> workload name -> Workload, the default first (every module of workloads/)."""
    import stackprobe.load.workloads as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    table: dict[str, dict[str, Workload]] = {}
    for item in _REGISTRY:
        for kind in item.kinds:
            table.setdefault(kind, {})[item.name] = item
    return table


def workloads_of(kind: str) -> dict[str, Workload]:
    return all_workloads().get(kind, {})


def find_workload(service: str, kind: str, name: str | None) -> Workload:
    """The workload `name` of a kind (its default when None); ConfigError naming the known ones."""
    known = workloads_of(kind)
    if not known:
        kinds = ", ".join(sorted(all_workloads()))
        raise ConfigError(f"{service}: kind {kind} has no load workload (kinds with one: {kinds})")
    if name is None:
        return next(iter(known.values()))
    if name not in known:
        raise ConfigError(
            f"--workload: {kind} has no workload {name!r} (known: {', '.join(known)})"
        )
    return known[name]


def slo_problems(kind: str, slo_workloads: list[str]) -> list[str]:
    """`slo...: <what>` problems of a stack file: a kind with no workload to load it, or
    `slo.workloads` naming a workload the kind does not have."""
    known = workloads_of(kind)
    if not known:
        return [f"slo: kind {kind} has no load workload, so nothing can measure it"]
    return [
        f"slo.workloads.{name}: kind {kind} has no workload {name!r} (known: {', '.join(known)})"
        for name in slo_workloads
        if name not in known
    ]


def service_context(
    stack: Stack,
    name: str,
    client: Any,
    run_id: str,
    *,
    services: ServiceOpener | None = None,
    sandbox: bool = False,
    worker: str = "",
) -> CheckContext[Any]:
    """The context a workload prepares in: the target service's own (its client, config,
    typed options and the run prefix its checks use), so the kind's helpers work unchanged.
    A distributed worker adds its name to the prefix, so workers never share a name."""
    typed = stack.typed.get(name)
    ns = service_namespace(run_id, name) + (f"{worker}-" if worker else "")
    return CheckContext(
        client=client,
        service_name=name,
        service=stack.service(name),
        stack=stack,
        ns=ns,
        run_id=run_id,
        options=typed.options if typed else None,
        expectations=typed.expectations if typed else None,
        services=services,
        sandbox=sandbox,
    )
