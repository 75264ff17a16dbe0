"""Turn any exception raised while checking into one line a person can act on."""

from __future__ import annotations

import asyncio
import os
import re

from stackprobe.errors import StackprobeError

# Errors raised by these client libraries are the service's answer (or silence), not our bug.
_SERVICE_LIBRARIES = {
    "redis": "redis",
    "kombu": "broker",
    "celery": "celery",
    "httpx": "http",
    "httpcore": "http",
}


# redis-py: "Error 111 connecting to 127.0.0.1:6379. Connect call failed ('127.0.0.1', 6379)."
_REDIS_CONNECT = re.compile(r"Error (?P<errno>\d+) connecting to (?P<addr>\S+?)\.(\s|$)")


def explain(exc: BaseException) -> str:
    """One line: what went wrong and, for a service, what it said."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, StackprobeError):
        return detail
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"timed out: {detail}" if str(exc) else "timed out"
    root = type(exc).__module__.split(".", 1)[0]
    if root == "redis" and (match := _REDIS_CONNECT.match(detail)):
        return f"redis: cannot connect to {match['addr']}: {os.strerror(int(match['errno']))}"
    if root in _SERVICE_LIBRARIES:
        return f"{_SERVICE_LIBRARIES[root]}: {detail}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: {detail}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or type(exc).__name__}: {detail}"
    return f"check crashed: {type(exc).__name__}: {detail}"
