"""The exceptions stackprobe raises, as one tree, and the outcomes they become.

    StackprobeError            anything stackprobe reports to a person as one line
    ├── ConfigError            the stack file or an argument is wrong: exit 2
    ├── MissingBinaryError     a service binary is not installed: exit 2, says how to install
    ├── SandboxError           the sandbox could not start or is not running
    └── ServiceError           a service could not be used: outcome `error`
        └── (http.HttpServiceError: an HTTP answer the check cannot use; `failed` or `error`
             by the rule written in stackprobe.http)
    CheckFailed                the service misbehaved: outcome `failed`
    CheckSkipped               the check does not apply: outcome `skipped`

`outcome_of(exc)` is the one place an exception becomes an outcome; the runner, the monitor
and the plugin all ask it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class StackprobeError(Exception):
    """Root of every error meant for a person; its message is one line."""

    exit_code = 1


class ConfigError(StackprobeError):
    """Bad stack file, bad argument or bad input file."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class MissingBinaryError(StackprobeError):
    """A binary the sandbox needs is not installed."""

    exit_code = 2


class SandboxError(StackprobeError):
    """The sandbox could not be started, or is not running when it is needed."""

    exit_code = 1


class ServiceError(StackprobeError):
    """A service could not be reached or used: the check could not run (outcome `error`)."""

    @property
    def outcome(self) -> Outcome:
        return Outcome.ERROR


class CheckFailed(Exception):
    """The service misbehaved: say what was expected and what was seen."""

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.evidence = evidence


class CheckSkipped(Exception):
    """The check does not apply to this service; the message is the reason."""


def outcome_of(exc: BaseException) -> Outcome:
    """The outcome an exception raised while checking stands for."""
    if isinstance(exc, CheckFailed):
        return Outcome.FAILED
    if isinstance(exc, CheckSkipped):
        return Outcome.SKIPPED
    if isinstance(exc, ServiceError):
        return exc.outcome
    return Outcome.ERROR
