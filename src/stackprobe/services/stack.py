"""The stack as a whole: every service alive, every dependency up (and, from the stack-level
work, failover, recovery, the end-to-end flow and load).

A service of kind `stack` opts a stack file in (the sandbox has one, named `stack`):

    services:
      stack: {kind: stack}                 # options: {exclude: [a-service]}

Its checks see every other service through the run's open services (one connection each,
shared with the services' own checks), so a dead service is named once, with its cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from stackprobe.check import CheckContext, CheckFailed, ms
from stackprobe.config import Stack, StackConfig
from stackprobe.errors import outcome_of
from stackprobe.explain import explain
from stackprobe.flow import FlowOptions, config_problems, resolve_roles
from stackprobe.kinds import Kind, Target
from stackprobe.resilience.builtin import builtin
from stackprobe.resilience.model import Tolerances

KIND_NAME = "stack"
PROBE_TIMEOUT = 5.0


class StackOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exclude: list[str] = []  # services left out of the stack-level checks
    # resilience scenarios: which service plays a role (`cache: my-redis`), and tolerances that
    # replace a built-in scenario's own (`redis-crash: {recover_s: 20, lost_writes: 0}`)
    targets: dict[str, str] = {}
    tolerances: dict[str, Tolerances] = {}
    flow: FlowOptions = FlowOptions()  # the end-to-end flow's roles and bounds (flow.py)


@dataclass(frozen=True)
class StackView:
    """The services the stack-level checks look at (all but `stack` services and exclusions)."""

    stack: Stack
    members: tuple[str, ...]


def members_of(stack: Stack, opts: StackOptions) -> tuple[str, ...]:
    """The services the stack-level checks look at."""
    return tuple(
        name
        for name, svc in stack.services.items()
        if svc.kind != KIND_NAME and name not in opts.exclude
    )


def options_of(stack: Stack, name: str) -> StackOptions:
    typed = stack.typed.get(name)
    if typed is not None and isinstance(typed.options, StackOptions):
        return typed.options
    return StackOptions.model_validate(stack.service(name).options)


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[StackView]:
    opts: StackOptions = target.options or StackOptions()
    yield StackView(target.stack, members_of(target.stack, opts))


def _check_config(name: str, config: StackConfig) -> list[str]:
    options = config.services[name].options
    flow = options.get("flow")
    problems = [
        f"options.exclude: no service {n!r} in this stack"
        for n in options.get("exclude") or []
        if isinstance(n, str) and n not in config.services
    ]
    targets = options.get("targets") or {}
    problems += [
        f"options.targets.{role}: no service {n!r} in this stack"
        for role, n in (targets.items() if isinstance(targets, dict) else [])
        if isinstance(n, str) and n not in config.services
    ]
    tolerances = options.get("tolerances") or {}
    known = builtin()
    problems += [
        f"options.tolerances.{n}: no built-in scenario {n!r} (known: {', '.join(known)})"
        for n in (tolerances if isinstance(tolerances, dict) else [])
        if n not in known
    ]
    if isinstance(flow, dict):
        problems += config_problems(config, flow)
    return problems


def _traffic(stack: Stack, name: str) -> tuple[str, ...]:
    """The flow's spans pass through its collector: its checks hold it shared, so that an
    exclusive collector check (counters that must move by exactly what it sent) runs alone."""
    opts = options_of(stack, name)
    roles = resolve_roles(stack, members_of(stack, opts), opts.flow, f"services.{name}")
    collector = roles.names.get("collector")
    return (collector,) if collector else ()


KIND: Kind[StackView] = Kind(
    name=KIND_NAME,
    description="The stack as a whole: service health, dependencies, failover, recovery, e2e flow, load",
    # DESIGN's stack capabilities, each declared with the checks that prove it (failover and
    # recovery: stack_resilience; e2e-flow: stack_flow; load: stack_load)
    capabilities=("service-health", "dependencies", "failover", "recovery", "e2e-flow", "load"),
    connect=_connect,
    url_required=False,
    spans_stack=True,
    options_model=StackOptions,
    check_config=_check_config,
    traffic_of=_traffic,
)
check = KIND.check


@dataclass(frozen=True)
class Probed:
    name: str
    kind: str
    ok: bool
    latency_ms: float | None
    cause: str


async def probe_all(ctx: CheckContext[StackView]) -> list[Probed]:
    """Every member's liveness probe, all at once, each bounded."""
    services = ctx.services
    assert services is not None  # the runner always gives stack checks its services

    async def one(name: str) -> Probed:
        kind = ctx.stack.service(name).kind
        try:
            took = await services.probe(name, PROBE_TIMEOUT)
        except TimeoutError:
            return Probed(name, kind, False, None, f"no answer within {PROBE_TIMEOUT:g} s")
        except Exception as exc:  # noqa: BLE001 - each failure is this service's cause
            cause = explain(exc)
            if outcome_of(exc).value == "failed" and not cause.startswith("http"):
                cause = f"answered, but {cause}"
            return Probed(name, kind, False, None, cause)
        return Probed(name, kind, True, ms(took), "")

    return list(await asyncio.gather(*(one(n) for n in ctx.client.members)))


@check(
    "service-health", title="every configured service passes its liveness probe", name="all_alive"
)
async def check_all_alive(ctx: CheckContext[StackView]) -> str:
    probed = await probe_all(ctx)
    ctx.evidence["services"] = {
        p.name: {
            "kind": p.kind,
            "alive": p.ok,
            "latency_ms": p.latency_ms,
            "cause": p.cause or None,
        }
        for p in probed
    }
    down = [p for p in probed if not p.ok]
    if down:
        raise CheckFailed(
            f"{len(down)} of {len(probed)} service(s) not alive: "
            + "; ".join(f"{p.name} ({p.kind}): {p.cause}" for p in down)
        )
    slowest = max(probed, key=lambda p: p.latency_ms or 0.0, default=None)
    tail = f"; slowest {slowest.name} {slowest.latency_ms} ms" if slowest else ""
    return f"all {len(probed)} service(s) alive{tail}"


@check(
    "dependencies",
    title="every service's depends_on names a service that is up",
    name="depends_on_up",
)
async def check_depends_on_up(ctx: CheckContext[StackView]) -> str:
    probed = {p.name: p for p in await probe_all(ctx)}
    edges = [
        (name, dep)
        for name in ctx.client.members
        for dep in ctx.stack.service(name).depends_on
        if dep in probed
    ]
    ctx.evidence["depends_on"] = {
        n: list(ctx.stack.service(n).depends_on) for n in ctx.client.members
    }
    broken: dict[str, list[str]] = {}
    for name, dep in edges:
        if not probed[dep].ok:
            broken.setdefault(dep, []).append(name)
    ctx.evidence["down_dependencies"] = {
        dep: {"dependents": users, "cause": probed[dep].cause} for dep, users in broken.items()
    }
    if broken:
        raise CheckFailed(
            "; ".join(
                f"{', '.join(users)} depend(s) on {dep}, which is down ({probed[dep].cause})"
                for dep, users in broken.items()
            )
        )
    return f"{len(edges)} dependency edge(s), every dependency up"
