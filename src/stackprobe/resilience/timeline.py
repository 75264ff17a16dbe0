"""What happened, when: the probes a scenario keeps running and the timeline it records.

A Prober polls one service's liveness every `interval` from the steady state to the end; the
timeline marks the events a person asks about (steady state verified, fault injected, first
failure observed, fault removed, first success again, steady state verified again), from
which time to detect and time to recover are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stackprobe.check import ServiceOpener
from stackprobe.explain import explain

PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0

STEADY = "steady state verified"
INJECTED = "fault injected"
FAILURE = "first failure observed"
REMOVED = "fault removed"
SUCCESS = "first success again"
STEADY_AGAIN = "steady state verified again"


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the scenario started
    ok: bool
    latency_ms: float | None
    error: str = ""


@dataclass
class Event:
    t: float
    event: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"t_s": round(self.t, 3), "event": self.event, "detail": self.detail}


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    on_mark: Callable[[Event], None] | None = None  # the run's journal: how far a run got

    def now(self) -> float:
        return time.monotonic() - self.started

    def mark(self, event: str, detail: str = "", at: float | None = None) -> Event:
        found = Event(self.now() if at is None else at, event, detail)
        self.events.append(found)
        self.events.sort(key=lambda e: e.t)
        if self.on_mark is not None:
            self.on_mark(found)
        return found

    def first(self, event: str) -> Event | None:
        return next((e for e in self.events if e.event == event), None)

    def last(self, event: str) -> Event | None:
        return next((e for e in reversed(self.events) if e.event == event), None)

    def between(self, start: str, end: str) -> float | None:
        """Seconds from the first `start` event to the first `end` event after it."""
        a = self.first(start)
        if a is None:
            return None
        b = next((e for e in self.events if e.event == end and e.t >= a.t), None)
        return None if b is None else round(b.t - a.t, 3)


class Prober:
    """Polls one service's liveness on the run's open services, recording every sample."""

    def __init__(
        self,
        services: ServiceOpener,
        service: str,
        timeline: Timeline,
        degraded_ms: float | None = None,
    ) -> None:
        self.services = services
        self.service = service
        self.timeline = timeline
        self.degraded_ms = degraded_ms  # a probe slower than this counts as a failure
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            t = self.timeline.now()
            try:
                took = await self.services.probe(self.service, PROBE_TIMEOUT)
                ms = round(took * 1000, 2)
                if self.degraded_ms is not None and ms > self.degraded_ms:
                    self.samples.append(
                        Sample(
                            t, False, ms, f"slow: {ms} ms (degraded above {self.degraded_ms:g} ms)"
                        )
                    )
                else:
                    self.samples.append(Sample(t, True, ms))
            except TimeoutError:
                self.samples.append(Sample(t, False, None, f"no answer within {PROBE_TIMEOUT:g} s"))
            except Exception as exc:  # noqa: BLE001 - a failed probe is a sample with its cause
                self.samples.append(Sample(t, False, None, explain(exc)[:160]))
            await asyncio.sleep(PROBE_INTERVAL)

    def after(self, t: float) -> list[Sample]:
        return [s for s in self.samples if s.t >= t]

    def summary(self) -> dict[str, Any]:
        failed = [s for s in self.samples if not s.ok]
        latencies = [s.latency_ms for s in self.samples if s.latency_ms is not None]
        return {
            "samples": len(self.samples),
            "failed": len(failed),
            "first_error": failed[0].error if failed else None,
            "max_latency_ms": max(latencies) if latencies else None,
        }


def measure(
    timeline: Timeline, samples: list[Sample], by_remedy: bool = True
) -> dict[str, float | None]:
    """Mark the first failure and the recovery on the timeline, and read the figures:

    time_to_detect_s   fault injected -> the first failed probe
    time_to_recover_s  when the watched service is the one the fault hit and the method
                       removes the fault (`by_remedy`): fault removed -> the first successful
                       probe after it; when the system heals around the fault (a failover:
                       the watched service is another one), fault injected -> the first
                       successful probe after the last failed one. A probe that passes in the
                       middle of an outage, or a service that answers once while it shuts
                       down, is not the service being back.
    outage_s           the first failed probe -> that success
    """
    injected, removed = timeline.first(INJECTED), timeline.last(REMOVED)
    after = [s for s in samples if injected is not None and s.t >= injected.t]
    failed = [i for i, s in enumerate(after) if not s.ok]
    if injected is None or not failed:
        return {"time_to_detect_s": None, "time_to_recover_s": None, "outage_s": None}
    failure = after[failed[0]]
    timeline.mark(FAILURE, failure.error, at=failure.t)
    start = removed if by_remedy and removed is not None and removed.t > failure.t else injected
    window = [s for s in after if s.t >= start.t]
    last_failed = max((i for i, s in enumerate(window) if not s.ok), default=-1)
    success = next((s for s in window[last_failed + 1 :] if s.ok), None)
    if success is None:
        return {
            "time_to_detect_s": round(failure.t - injected.t, 3),
            "time_to_recover_s": None,
            "outage_s": None,
        }
    timeline.mark(SUCCESS, f"{success.latency_ms} ms", at=success.t)
    return {
        "time_to_detect_s": round(failure.t - injected.t, 3),
        "time_to_recover_s": round(max(0.0, success.t - start.t), 3),
        "outage_s": round(success.t - failure.t, 3),
    }
