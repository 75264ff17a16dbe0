"""The check API: what a check is, what it receives, and how it says a service misbehaved.

A check is an async function `async def f(ctx: CheckContext) -> None | str` registered on its
kind with `@check(capability, title=...)`. It proves its capability with an observable effect,
puts measured values in `ctx.evidence`, registers every cleanup before it creates the thing to
clean, and raises `CheckFailed("expected ..., saw ...")` when the service misbehaves. Returning
a string sets the result's message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from stackprobe.config import ServiceConfig, Stack
from stackprobe.errors import CheckFailed, CheckSkipped, Outcome, Severity, outcome_of
from stackprobe.explain import explain

__all__ = [
    "CheckContext",
    "CheckFailed",
    "CheckSkipped",
    "CheckSpec",
    "Outcome",
    "Severity",
    "call_check",
    "check_for",
    "expect",
    "ms",
]

T = TypeVar("T")
ClientT = TypeVar("ClientT")


def expect(what: str, expected: Any, seen: Any) -> None:
    """Fail with both values when `seen` is not `expected` (the one-line failure every check uses)."""
    if expected != seen:
        raise CheckFailed(f"{what}: expected {expected!r}, saw {seen!r}")


def ms(seconds: float) -> float:
    """Milliseconds, rounded for evidence."""
    return round(seconds * 1000, 2)


CheckFn = Callable[["CheckContext[Any]"], Awaitable[str | None]]
CLEANUP_GRACE = 0.25  # seconds a cleanup still gets once a check's cleanup budget is spent


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: identity, policy, and the function that proves the capability."""

    kind: str
    capability: str
    name: str
    title: str
    fn: CheckFn
    timeout: float | None = None
    severity: Severity = Severity.ERROR
    exclusive: bool = False
    disruptive: bool = False

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.capability}.{self.name}"


class ServiceOpener(Protocol):
    """What opens the other services of the stack for a check (connect.Services)."""

    async def client(self, name: str) -> Any:
        """The service's client, opened once per run."""
        ...

    async def probe(self, name: str, timeout: float) -> float:
        """Run the service's liveness probe; seconds it took (raises what the probe raised)."""
        ...

    async def check(self, name: str, check_id: str) -> tuple[Outcome, str, dict[str, Any]]:
        """Run one catalog check on a service now: (outcome, message, evidence)."""
        ...

    def kind(self, name: str) -> Any:
        """The Kind of a service of the stack."""
        ...


class ProcessHandle(Protocol):
    """One sandbox process as a fault injector drives it (sandbox.manager.SandboxProcess)."""

    @property
    def name(self) -> str: ...
    def running(self) -> bool: ...
    def frozen(self) -> bool: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def start(self) -> float: ...
    def restart(self) -> float: ...


class ProcessControl(Protocol):
    """The processes that run the stack's services (the sandbox's, when the run is on it)."""

    def process(self, name: str) -> ProcessHandle: ...


@dataclass
class CheckContext(Generic[ClientT]):
    """Everything a check may use. One context per check execution.

    `options` and `expectations` are the service's `options:` and `expectations:` parsed by
    its kind's models at load; `linked(role)` opens the service that plays a role for this
    one (`links:` in the stack file), once per run.
    """

    client: ClientT
    service_name: str
    service: ServiceConfig
    stack: Stack
    ns: str
    run_id: str
    options: Any = None
    expectations: Any = None
    services: ServiceOpener | None = None
    sandbox: bool = False  # the run is on the sandbox (disruption allowed everywhere)
    processes: ProcessControl | None = None  # the sandbox's process API, on the sandbox
    evidence: dict[str, Any] = field(default_factory=dict)
    _cleanups: list[tuple[str, Callable[[], Awaitable[Any] | Any], float | None]] = field(
        default_factory=list
    )

    def linked_name(self, role: str) -> str:
        """The service that plays `role` for this one; skipped when the stack has none."""
        name = self.stack.link(self.service_name, role)
        if name is None:
            raise CheckSkipped(f"no service plays {role} for {self.service_name} (links.{role})")
        return name

    async def linked(self, role: str) -> tuple[str, Any]:
        """(name, client) of the service that plays `role` for this one, opened once per run."""
        name = self.linked_name(role)
        return name, await self.open(name)

    def require_disruption(self, name: str) -> None:
        """A stack-level check about to disrupt `name`: allowed on the sandbox, else only when
        the stack file says `services.<name>.disruption: allowed` (skipped otherwise)."""
        if not self.sandbox and self.stack.service(name).disruption != "allowed":
            raise CheckSkipped(f"disruptive: services.{name}.disruption is not 'allowed'")

    async def open(self, name: str) -> Any:
        """The client of another service of the stack, opened once per run."""
        if self.services is None:
            raise CheckSkipped(f"{name}: no other services are open to this check")
        return await self.services.client(name)

    def cleanup(
        self, fn: Callable[[], Awaitable[Any] | Any], what: str = "", timeout: float | None = None
    ) -> None:
        """Register `fn` to run after the check, whatever its outcome (last registered runs
        first), bounded by `timeout` (default: the runner's cleanup budget, 5 s)."""
        self._cleanups.append((what or getattr(fn, "__name__", "cleanup"), fn, timeout))

    def name(self, suffix: str) -> str:
        """A run-unique name for something this check creates."""
        return f"{self.ns}{suffix}"

    async def eventually(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        timeout: float,
        interval: float = 0.1,
        what: str = "condition",
    ) -> T:
        """Call `fn` until it returns without raising CheckFailed; then its value.

        On timeout, raise CheckFailed with the last thing `fn` reported seeing, so the message
        says what was observed ("found 2 of 3 spans after 15 s"), not just that time ran out.
        """
        started = time.monotonic()
        deadline = started + timeout
        last: CheckFailed | None = None
        attempts = 0
        while True:
            attempts += 1
            try:
                return await fn()
            except CheckFailed as exc:
                last = exc
            now = time.monotonic()
            if now >= deadline:
                seen = f": {last}" if last else ""
                raise CheckFailed(
                    f"{what} not reached after {now - started:.1f} s ({attempts} attempts){seen}"
                )
            await asyncio.sleep(min(interval, max(0.0, deadline - now)))

    async def run_cleanups(self, timeout: float) -> list[str]:
        """Run every cleanup, last registered first; return one line per cleanup that failed.

        `timeout` is the budget of all the cleanups together (one registered with a timeout
        of its own, a scenario's rollback, gets that on top): on a service that hangs, twenty
        cleanups cost one budget, not twenty. Those left when it is spent run together within
        a short grace (CLEANUP_GRACE: closing a local server is instant; a call to the hung
        service is cut and reported; what it would remove carries the run prefix and a TTL,
        and `stackprobe clean` finds it)."""
        problems: list[str] = []
        deadline = time.monotonic() + timeout
        spent = f"timed out: the {timeout:g} s cleanup budget was spent"
        left: list[tuple[str, Callable[[], Awaitable[Any] | Any]]] = []
        while self._cleanups:
            what, fn, own = self._cleanups.pop()
            remaining = deadline - time.monotonic()
            if own is None and remaining <= 0:
                left.append((what, fn))
                continue
            budget = own if own is not None else remaining
            late = f"timed out after {own:g} s" if own is not None else spent
            problem = await _one_cleanup(what, fn, budget, late)
            if problem:
                problems.append(problem)
        if left:
            try:
                found = await asyncio.gather(
                    *(_one_cleanup(what, fn, CLEANUP_GRACE, spent) for what, fn in left)
                )
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                found = [f"cleanup {what} interrupted" for what, _ in left]
            problems += [p for p in found if p]
        return problems


async def _one_cleanup(
    what: str,
    fn: Callable[[], Awaitable[Any] | Any],
    budget: float,
    late: str,
    again: bool = True,
) -> str | None:
    """Run one cleanup within `budget`: None, or the line saying how it failed. Cleanups are
    idempotent (they remove by name), so one the interruption reached runs once more within
    the grace: a Ctrl-C that lands in the middle of a DEL must not leave the key behind (seen:
    one session hash of twenty, one run in six)."""
    try:
        async with asyncio.timeout(budget):
            result = fn()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result
    except TimeoutError:
        return f"cleanup {what} {late}"
    except asyncio.CancelledError:
        # a second Ctrl-C or the deadline reached a cleanup: note it and still run the
        # others, so that one interruption never leaves the rest of the data behind
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if again and await _one_cleanup(what, fn, CLEANUP_GRACE, late, again=False) is None:
            return None
        return f"cleanup {what} interrupted"
    except Exception as exc:  # noqa: BLE001 - a failed cleanup is reported, never raised
        return f"cleanup {what} failed: {explain(exc).removeprefix('check crashed: ')}"
    return None


async def call_check(fn: CheckFn, ctx: CheckContext[Any], timeout: float) -> tuple[Outcome, str]:
    """Run one check function bounded by `timeout`: (outcome, message) by the rules of
    errors.outcome_of; a check's CheckFailed evidence joins ctx.evidence."""
    try:
        async with asyncio.timeout(timeout) as scope:
            message = await fn(ctx)
        return Outcome.PASSED, message or ""
    except TimeoutError as exc:
        if scope.expired():
            return Outcome.ERROR, f"timed out after {timeout:g} s"
        return Outcome.ERROR, explain(exc)
    except Exception as exc:  # noqa: BLE001 - a broken check or service is this check's result
        if isinstance(exc, CheckFailed):
            ctx.evidence.update(exc.evidence)
        return outcome_of(exc), explain(exc)


def check_for(
    kind: str, capabilities: tuple[str, ...], registry: list[CheckSpec]
) -> Callable[..., Callable[[CheckFn], CheckFn]]:
    """Make the `@check(capability, ...)` decorator of one kind, writing into `registry`."""

    def check(
        capability: str,
        *,
        title: str,
        timeout: float | None = None,
        severity: Severity | str = Severity.ERROR,
        exclusive: bool = False,
        disruptive: bool = False,
        name: str | None = None,
    ) -> Callable[[CheckFn], CheckFn]:
        if capability not in capabilities:
            raise ValueError(f"{kind} has no capability {capability!r} ({', '.join(capabilities)})")

        def register(fn: CheckFn) -> CheckFn:
            spec = CheckSpec(
                kind=kind,
                capability=capability,
                name=name or fn.__name__.removeprefix("check_"),
                title=title,
                fn=fn,
                timeout=timeout,
                severity=Severity(severity),
                exclusive=exclusive,
                disruptive=disruptive,
            )
            if any(existing.id == spec.id for existing in registry):
                raise ValueError(f"duplicate check id {spec.id}")
            registry.append(spec)
            return fn

        return register

    return check
