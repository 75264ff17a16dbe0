"""Wait until the stack is ready: each service's liveness probe, again and again, until it
passes or the budget ends (Goss's retry-until-ready, for a CI job that just ran
`docker compose up`). `stackprobe wait` and `stackprobe run --wait` use this one loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from stackprobe.config import Stack
from stackprobe.connect import LIVENESS_TIMEOUT, Services, liveness_cause

RETRY_INTERVAL = 0.5
MIN_PROBE = 1.0  # the last probe's timeout: a probe cut shorter only ever says "no answer"


@dataclass(frozen=True)
class Waited:
    """One service after the wait: ready or not, how long it took, the last cause seen."""

    service: str
    ready: bool
    waited_s: float
    cause: str = ""


Report = Callable[[str, str], None]  # (service, "waiting: <cause>" or "ready after N s")


async def wait_ready(
    services: Services,
    names: list[str],
    budget: float,
    on_wait: Report | None = None,
) -> dict[str, Waited]:
    """Probe every service until it is alive or `budget` seconds have passed (each probe
    bounded by the liveness timeout); every service waits on its own, all at once. A kind
    without a liveness probe (the stack's own checks) has nothing to wait for."""
    started = time.monotonic()
    deadline = started + budget

    async def one(name: str) -> Waited:
        last = ""
        while True:
            limit = max(MIN_PROBE, min(LIVENESS_TIMEOUT, deadline - time.monotonic()))
            try:
                await services.probe(name, limit)
                took = round(time.monotonic() - started, 3)
                if on_wait is not None:
                    on_wait(name, f"ready after {took:.1f} s")
                return Waited(name, True, took)
            except Exception as exc:  # noqa: BLE001 - not ready yet: the cause is what it waits for
                cause = liveness_cause(exc, round(limit, 1))[1]
            services.forget(name)  # a client that could not be opened is opened anew
            if cause != last and on_wait is not None:
                on_wait(name, f"waiting: {cause}")
            last = cause
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Waited(name, False, round(time.monotonic() - started, 3), cause)
            await asyncio.sleep(min(RETRY_INTERVAL, remaining))  # then a last probe at the end

    probed = [n for n in names if services.kind(n).liveness is not None]  # others: no wait
    found = await asyncio.gather(*(one(n) for n in probed))
    return {w.service: w for w in found}


async def wait_stack(
    stack: Stack, names: list[str], budget: float, on_wait: Report | None = None
) -> dict[str, Waited]:
    """`stackprobe wait`: the same wait on services opened for it alone."""
    async with Services(stack) as services:
        return await wait_ready(services, names, budget, on_wait)
