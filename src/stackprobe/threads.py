"""Blocking client calls off the event loop, in threads a run never waits for.

`asyncio.to_thread` runs a call in the loop's default executor, and `asyncio.run` joins that
executor's threads when it ends: a sync client blocked on a hung server (a Celery ping, a
publish to a broker that accepted the connection and never answers) would hold the process
after its check has timed out. `in_thread` runs the call in a daemon thread instead: when the
awaiting check is cancelled (its timeout, the run deadline, Ctrl-C) the thread is abandoned,
it finishes or dies with the process, and nobody waits for it. The clients' own socket
timeouts still bound it (Celery's broker: 3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`await in_thread(fn, *args)`: fn's value or exception; on cancellation the thread is
    left to itself (a daemon), never joined."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if future.done():  # the awaiting check gave up: the answer goes nowhere
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        ok = True
        result: Any = None
        try:
            result = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            ok, result = False, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, ok, result)

    threading.Thread(
        target=work, name=f"stackprobe-{getattr(fn, '__name__', 'call')}", daemon=True
    ).start()
    return await future
