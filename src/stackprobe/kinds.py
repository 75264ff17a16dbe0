"""What a kind is: its capabilities, how to reach it, how to validate its config, its checks.

Each module under `services/` builds one `Kind` and registers its checks with `KIND.check`.
Connection details live in the kind's `connect()` from the typed service config, never in
module-level clients. A kind declares the models of its `options:` and `expectations:`; both
are validated when the stack file loads, and checks read the typed objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from stackprobe.check import CheckFn, CheckSpec, check_for
from stackprobe.config import ServiceConfig, Stack, StackConfig, Typed
from stackprobe.redact import Redactor

ClientT = TypeVar("ClientT")
OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True)
class Target:
    """One configured service as a kind sees it when connecting: its config as written, its
    typed options and expectations, and the stack around it."""

    name: str
    config: ServiceConfig
    stack: Stack
    options: Any = None
    expectations: Any = None


class Held(Protocol):
    """One idle connection the monitor holds to a service (`Kind.watch`): the server closing
    or resetting it is the fastest sign that its process died."""

    async def closed(self) -> str:
        """Return once the server closed or reset the connection: the cause, in one line."""
        ...

    async def aclose(self) -> None:
        """Close it from our side (the monitor stops, or opens it anew)."""
        ...


class NoOptions(BaseModel):
    model_config = {"extra": "forbid"}


class NoExpectations(BaseModel):
    model_config = {"extra": "forbid"}


@dataclass(frozen=True)
class SyncAccess:
    """A blocking client for tests that are synchronous (the pytest plugin's handles): opened
    with the kind's own timeouts, and how to delete one name a test created."""

    open: Callable[[Target], AbstractContextManager[Any]]
    delete: Callable[[Any, str], Any] | None = None


@dataclass
class Kind(Generic[ClientT]):
    """One technology: its stable capability ids and everything needed to check it."""

    name: str
    description: str
    capabilities: tuple[str, ...]
    connect: Callable[[Target], AbstractAsyncContextManager[ClientT]]
    url_schemes: tuple[str, ...] = ()
    url_required: bool = True
    endpoints: tuple[str, ...] = ()
    options_model: type[BaseModel] = NoOptions
    expectations_model: type[BaseModel] = NoExpectations
    links: dict[str, str | tuple[str, ...]] = field(default_factory=dict)  # role -> kind(s)
    default_username: str | None = None  # the user a password belongs to when none is set
    traffic_links: tuple[
        str, ...
    ] = ()  # link roles whose service this kind's checks send data through
    # services its checks send data through that links do not name, read from the whole stack
    # (the stack kind's flow: the collector it resolves)
    traffic_of: Callable[[Stack, str], tuple[str, ...]] | None = None
    version: Callable[[ClientT], Awaitable[str | None]] | None = None
    liveness: Callable[[ClientT], Awaitable[None]] | None = None
    # opens one idle connection with the kind's own client, held by the monitor: its close is
    # a failed probe at once (confirmed by a re-probe); kinds without it are probed only
    watch: Callable[[ClientT], Awaitable[Held]] | None = None
    # its checks look at the whole stack (the stack kind): an exclusive one runs alone, after
    # the others, as a disruptive one does (a load's latency must not include other checks)
    spans_stack: bool = False
    # a service whose liveness probe cannot get an answer gets every check `error` at once;
    # a kind whose checks partly work without the service (compose lint) turns that off
    liveness_gates: bool = True
    sweep: Callable[[ClientT, Target, datetime], Awaitable[list[str]]] | None = None
    sync: SyncAccess | None = None
    # Jepsen-style write accounting for resilience scenarios (resilience.writers.Writes)
    writes: Callable[[Any, str], Awaitable[Any]] | None = None
    # problems that need the whole stack file (`options.exclude: no service 'x'`)
    check_config: Callable[[str, StackConfig], list[str]] | None = None
    checks: list[CheckSpec] = field(default_factory=list)

    @property
    def check(self) -> Callable[..., Callable[[CheckFn], CheckFn]]:
        """The `@check(capability, title=..., ...)` decorator of this kind (DESIGN.md)."""
        return check_for(self.name, self.capabilities, self.checks)

    def typed(self, service: ServiceConfig) -> Typed:
        """The service's `options:` and `expectations:` parsed by this kind's models; raises
        pydantic's ValidationError (the loader turns it into field-path problems first)."""
        return Typed(
            options=self.options_model.model_validate(service.options),
            expectations=self.expectations_model.model_validate(service.expectations),
        )

    def validate(self, svc: ServiceConfig) -> list[str]:
        """Problems with a service of this kind, each `<field>: <what is wrong>`."""
        problems = []
        if svc.url is None:
            if self.url_required:
                problems.append("url: required field is missing")
        elif not self.url_schemes:
            problems.append(f"url: kind {self.name} does not use url (use endpoints)")
        else:
            problems += [f"url: {p}" for p in _url_problems(svc.url, self.url_schemes)]
        for endpoint, value in svc.endpoints.items():
            if endpoint not in self.endpoints:
                known = ", ".join(self.endpoints) or "none"
                problems.append(
                    f"endpoints.{endpoint}: unknown endpoint for kind {self.name} (known: {known})"
                )
            elif "://" in value:
                problems += [f"endpoints.{endpoint}: {p}" for p in _url_problems(value, ())]
        for section, model, values, unknown in (
            ("options", self.options_model, svc.options, "unknown option"),
            ("expectations", self.expectations_model, svc.expectations, "unknown expectation"),
        ):
            try:
                model.model_validate(values)
            except ValidationError as exc:
                problems += [_model_problem(section, err, unknown, model) for err in exc.errors()]
        return problems


def _model_problem(section: str, err: Any, unknown: str, model: type[BaseModel]) -> str:
    """`options.<field>: <what is wrong>` from one pydantic error, naming the value seen."""
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields) or "none"
        return f"{section}.{loc}: {unknown} (known: {known})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] != "missing" and not str(msg).startswith("'"):
        msg = f"{msg} (got {Redactor().text(repr(err['input']))})"
    return f"{section}.{loc}: {msg}"


def _url_problems(url: str, schemes: tuple[str, ...]) -> list[str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return [f"{Redactor().text(repr(url))} is not a valid URL ({exc})"]
    if not parts.scheme or not parts.hostname:
        return [f"{Redactor().text(repr(url))} is not a valid URL (expected scheme://host:port)"]
    if schemes and parts.scheme not in schemes:
        return [f"scheme {parts.scheme!r} not supported here (use {' or '.join(schemes)})"]
    del port
    return []
