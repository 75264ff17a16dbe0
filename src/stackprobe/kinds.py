"""What a kind is: its capabilities, how to reach it, how to validate its config, its checks.

Each module under `services/` builds one `Kind` and registers its checks with `KIND.check`.
Connection details live in the kind's `connect()` from the typed service config, never in
module-level clients.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from stackprobe.check import CheckFn, CheckSpec, Severity, check_for
from stackprobe.config import ServiceConfig, Stack
from stackprobe.redact import Redactor

ClientT = TypeVar("ClientT")
OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True)
class Target:
    """One configured service as a kind sees it when connecting."""

    name: str
    config: ServiceConfig
    stack: Stack


class NoOptions(BaseModel):
    model_config = {"extra": "forbid"}


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
    links: dict[str, str | tuple[str, ...]] = field(default_factory=dict)  # role -> kind(s)
    default_username: str | None = None  # the user a password belongs to when none is set
    traffic_links: tuple[
        str, ...
    ] = ()  # link roles whose service this kind's checks send data through
    version: Callable[[ClientT], Awaitable[str | None]] | None = None
    liveness: Callable[[ClientT], Awaitable[None]] | None = None
    sweep: Callable[[ClientT, Target, datetime], Awaitable[list[str]]] | None = None
    checks: list[CheckSpec] = field(default_factory=list)

    def check(
        self,
        capability: str,
        *,
        title: str,
        timeout: float | None = None,
        severity: Severity | str = Severity.ERROR,
        exclusive: bool = False,
        disruptive: bool = False,
        name: str | None = None,
    ) -> Callable[[CheckFn], CheckFn]:
        """Register a check of this kind (the `@check` of DESIGN.md)."""
        return check_for(self.name, self.capabilities, self.checks)(
            capability,
            title=title,
            timeout=timeout,
            severity=severity,
            exclusive=exclusive,
            disruptive=disruptive,
            name=name,
        )

    def options(self, service: ServiceConfig) -> Any:
        """The service's `options:` parsed by this kind's model (validated at load)."""
        return self.options_model.model_validate(service.options)

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
        try:
            self.options_model.model_validate(svc.options)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
                problems.append(f"options.{loc}: {msg}")
        return problems


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
