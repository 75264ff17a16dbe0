"""Turn any exception raised while checking into one line a person can act on."""

from __future__ import annotations

import asyncio
import os
import re

from stackprobe.errors import CheckFailed, CheckSkipped, StackprobeError

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


def one_line(message: str) -> str:
    """A message on one line: line breaks (and the spaces around them) become one space;
    other spacing is kept, so a title quoted as written reads as written."""
    return re.sub(r"[ \t]*[\r\n\v\f]+[ \t]*", " ", message).strip()


def explain(exc: BaseException) -> str:
    """One line: what went wrong and, for a service, what it said."""
    if isinstance(exc, StackprobeError | CheckFailed | CheckSkipped):
        return one_line(str(exc)) or type(exc).__name__
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"timed out: {detail}" if str(exc) else "timed out"
    root = type(exc).__module__.split(".", 1)[0]
    if root == "redis" and (match := _REDIS_CONNECT.match(detail)):
        return f"redis: cannot connect to {match['addr']}: {os.strerror(int(match['errno']))}"
    if root == "httpx":
        return _explain_http(exc, detail)
    if root in _SERVICE_LIBRARIES:
        return f"{_SERVICE_LIBRARIES[root]}: {detail}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: {detail}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or type(exc).__name__}: {detail}"
    return f"check crashed: {type(exc).__name__}: {detail}"


def _explain_http(exc: BaseException, detail: str) -> str:
    """httpx errors, for every HTTP kind: where it failed and the OS reason when there is one."""
    import httpx

    try:
        request = exc.request if isinstance(exc, httpx.RequestError) else None
    except RuntimeError:  # an httpx error raised without its request
        request = None
    if request is None:
        return f"http: {detail}"
    where = f"{request.method} {request.url.copy_with(query=None)}"
    if isinstance(exc, httpx.ConnectError):
        reason = detail
        cause: BaseException | None = exc
        for _ in range(8):  # the OS error (refused, unreachable) sits under anyio's summary
            if cause is None:
                break
            if isinstance(cause, OSError) and cause.strerror:
                errno = cause.errno
                reason = os.strerror(errno) if errno and errno > 0 else cause.strerror
                break
            cause = cause.__cause__ or cause.__context__
        return f"http: cannot connect to {request.url.netloc.decode()}: {reason}"
    if isinstance(exc, httpx.TimeoutException):
        return f"http: no answer in time ({type(exc).__name__}) to {where}"
    return f"http: {detail} ({where})"
