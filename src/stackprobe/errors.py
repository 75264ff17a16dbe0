"""The exceptions stackprobe raises, as one tree.

    StackprobeError            anything stackprobe reports to a person as one line
    ├── ConfigError            the stack file or an argument is wrong: exit 2
    ├── MissingBinaryError     a service binary is not installed: exit 2, says how to install
    ├── SandboxError           the sandbox could not start or is not running
    └── ServiceError           a service could not be used (unreachable, auth, bad answer)

A service that answers but misbehaves is not an exception here: checks raise
`stackprobe.check.CheckFailed`, which becomes a `failed` result.
"""

from __future__ import annotations


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
