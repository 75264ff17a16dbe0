"""One way to open a service of the stack, for every front end and every check.

The runner, the monitor, the pytest plugin, `clean`, linked services inside checks (`ctx.linked`)
and the stack-level work (scenarios, load, the flow) all open services here, with one set of
timeouts:

    CONNECT_TIMEOUT   10 s   opening a kind's client (most connect lazily and return at once)
    LIVENESS_TIMEOUT   5 s   the kind's liveness probe before its checks run: a service that
                             does not answer in time gets every check `error` at once
    VERSION_TIMEOUT    3 s   asking the server's version for the report (null when it fails)
    CLOSE_TIMEOUT      5 s   closing a client (a failure to close is dropped, never raised)

Network calls inside the clients have their own bounds (stackprobe.http: 3 s connect, 5 s read;
Redis: 3 s connect, 5 s socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from stackprobe.catalog import known_kinds
from stackprobe.check import CheckContext, call_check
from stackprobe.config import Stack
from stackprobe.errors import Outcome, ServiceError, outcome_of
from stackprobe.explain import explain
from stackprobe.ids import new_run_id, service_namespace
from stackprobe.kinds import Kind, Target
from stackprobe.loader import typed_of
from stackprobe.redact import Redactor

CONNECT_TIMEOUT = 10.0
LIVENESS_TIMEOUT = 5.0
VERSION_TIMEOUT = 3.0
CLOSE_TIMEOUT = 5.0
CHECK_TIMEOUT = 10.0  # a check run through Services.check without a timeout of its own

ClientT = TypeVar("ClientT")
T = TypeVar("T")


def target_of(stack: Stack, name: str, kind: Kind[Any]) -> Target:
    """The Target a kind connects to: config, typed options and expectations, the stack."""
    typed = typed_of(stack, name, kind)
    return Target(name, stack.service(name), stack, typed.options, typed.expectations)


@dataclass
class Opened(Generic[ClientT]):
    """One open service: its name, kind, target and the kind's client."""

    name: str
    kind: Kind[ClientT]
    target: Target
    client: ClientT


class Unusable(ServiceError):
    """The service could not be opened, or did not answer its liveness probe in time."""


@asynccontextmanager
async def open_service(
    stack: Stack,
    name: str,
    *,
    kinds: Mapping[str, Kind[Any]] | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> AsyncIterator[Opened[Any]]:
    """Open one service with its kind's `connect()`, bounded by `timeout`; close it on exit.

    A failure to open raises Unusable with a one-line, redacted cause.
    """
    kind = (kinds or known_kinds())[stack.service(name).kind]
    target = target_of(stack, name, kind)
    exits = AsyncExitStack()
    try:
        async with asyncio.timeout(timeout):
            client = await exits.enter_async_context(kind.connect(target))
    except Exception as exc:  # noqa: BLE001 - becomes one line for a person
        await _close(exits)
        raise Unusable(Redactor(stack.secrets()).text(f"cannot connect: {explain(exc)}")) from None
    try:
        yield Opened(name, kind, target, client)
    finally:
        await _close(exits)


async def _close(exits: AsyncExitStack) -> None:
    """Close a client, bounded: a client that cannot say goodbye to a dead or hung service
    (a Celery app tidying its reply queue in a Redis that was just killed) is dropped, and
    its failure is never the caller's."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await exits.aclose()


async def probe(opened: Opened[Any], timeout: float = LIVENESS_TIMEOUT) -> None:
    """The kind's liveness probe, bounded: raises what it raised, or TimeoutError."""
    if opened.kind.liveness is None:
        return
    async with asyncio.timeout(timeout):
        await opened.kind.liveness(opened.client)


async def version(opened: Opened[Any], timeout: float = VERSION_TIMEOUT) -> str | None:
    """The server's version, or None when the kind cannot tell or the server does not say."""
    if opened.kind.version is None:
        return None
    try:
        async with asyncio.timeout(timeout):
            return await opened.kind.version(opened.client)
    except Exception:  # noqa: BLE001 - an unknown version is reported as null
        return None


class Services:
    """The open services of one run (or one monitor): each opened once, on first use, and
    all closed together by `aclose()`. A service that cannot be opened fails the same way
    for every caller, without a second attempt."""

    def __init__(
        self,
        stack: Stack,
        kinds: Mapping[str, Kind[Any]] | None = None,
        timeout: float = CONNECT_TIMEOUT,
        run_id: str | None = None,
    ) -> None:
        self.stack = stack
        self.run_id = run_id or new_run_id()  # names what checks run through check() create
        self.kinds = kinds if kinds is not None else known_kinds()
        self.timeout = timeout
        self._exits: dict[str, AsyncExitStack] = {}  # per service: one can be closed early
        self._opened: dict[str, asyncio.Future[Opened[Any]]] = {}

    async def open(self, name: str) -> Opened[Any]:
        if name not in self.stack.services:
            raise ServiceError(f"no service {name!r} in {self.stack.path}")
        pending = self._opened.get(name)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._opened[name] = pending
            exits = self._exits[name] = AsyncExitStack()
            try:
                opened = await exits.enter_async_context(
                    open_service(self.stack, name, kinds=self.kinds, timeout=self.timeout)
                )
            except BaseException as exc:
                pending.set_exception(exc if isinstance(exc, Exception) else Unusable("cancelled"))
                pending.exception()  # retrieved: a failure nobody else asks for is not logged
                raise
            pending.set_result(opened)
        return await asyncio.shield(pending)

    async def client(self, name: str) -> Any:
        return (await self.open(name)).client

    async def probe(self, name: str, timeout: float = LIVENESS_TIMEOUT) -> float:
        """The service's liveness probe, opening it first when needed; seconds it took."""
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            opened = await self.open(name)
            if opened.kind.liveness is not None:
                await opened.kind.liveness(opened.client)
        return time.perf_counter() - started

    def kind(self, name: str) -> Kind[Any]:
        return self.kinds[self.stack.service(name).kind]

    async def check(
        self, name: str, check_id: str, run_id: str | None = None
    ) -> tuple[Outcome, str, dict[str, Any]]:
        """Run one catalog check on a service now, on this run's open services (what it
        creates is named after `run_id`, by default this run's)."""
        spec = next(
            (c for c in self.kinds[self.stack.service(name).kind].checks if c.id == check_id), None
        )
        if spec is None:
            return (
                Outcome.ERROR,
                f"no check {check_id} for {name} ({self.stack.service(name).kind})",
                {},
            )
        opened = await self.open(name)
        typed = typed_of(self.stack, name, opened.kind)
        run_id = run_id or self.run_id
        ctx = CheckContext(
            client=opened.client, service_name=name, service=self.stack.service(name),
            stack=self.stack, ns=service_namespace(run_id, name), run_id=run_id,
            options=typed.options,
            expectations=typed.expectations, services=self,
        )  # fmt: skip
        try:
            outcome, message = await call_check(spec.fn, ctx, spec.timeout or CHECK_TIMEOUT)
        finally:
            await ctx.run_cleanups(CLOSE_TIMEOUT)
        return outcome, message, ctx.evidence

    def forget(self, name: str) -> None:
        """Open `name` anew on next use (after its failure, e.g. the monitor retrying)."""
        pending = self._opened.get(name)
        if pending is not None and pending.done() and pending.exception() is not None:
            del self._opened[name]

    async def close(self, name: str) -> None:
        """Close one service now (the runner, for a service none of its checks can use: a
        client holds its command tables and pool, ~10 KB, until closed); a later `open`
        opens it anew."""
        self._opened.pop(name, None)
        exits = self._exits.pop(name, None)
        if exits is not None:
            await exits.aclose()  # open_service closes within CLOSE_TIMEOUT and never raises

    async def aclose(self) -> None:
        self._opened.clear()
        while self._exits:
            _, exits = self._exits.popitem()  # the last opened first
            await exits.aclose()

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def liveness_cause(exc: BaseException, timeout: float) -> tuple[bool, str]:
    """(gate, cause) for a failed liveness probe: `gate` when the checks cannot run at all
    (no answer in time, unreachable, credentials refused) rather than the service answering
    wrongly, which its checks then report themselves."""
    if isinstance(exc, TimeoutError):
        return True, f"no answer within {timeout:g} s (liveness probe)"
    return outcome_of(exc).value == "error", explain(exc)
