"""The load engine: open-loop constant arrival rate, and closed-loop maximum throughput.

Open loop (`--rate R`): operation k is due at `t0 + k / R`, whatever happened before it. A
fixed number of lanes (`--concurrency`) take the next due operation as soon as they are free
and start it at its due time. Its latency is measured from its *intended* start, so when the
service slows down and every lane is busy, the wait of the operations queued behind it counts
as latency, as it would for the users who sent them (coordinated omission corrected). A lane
may start an operation up to `EARLY_S` before it is due (the event loop cannot wake more
precisely than that); it is then measured from its actual start, never from the later due
time, so no latency is ever shortened. Service time (send to answer, no waiting) is recorded
beside it.

Closed loop (`--max`): every lane sends its next operation as soon as the previous one
answered, for the duration; the result is throughput, with latency from each actual start.

Both are bounded: the open loop issues exactly `round(R * duration)` operations, the closed
loop stops at the duration or `MAX_OPS`; operations still running `DRAIN_S` after the end
are cancelled and counted as errors.

The generator watches itself, and the rule (`generator_bound`) is:

    generator-bound when, over the run, the generator's thread was busy at least CPU_LIMIT
    (90 %) of the time: running on a CPU, or runnable and waiting for one (Linux
    /proc/thread-self/schedstat; elsewhere the process's CPU time) - it never waited for the
    service, so its own queueing is inside every figure it measured; or when the 99th
    percentile of its schedule lag (how late a *free* lane started an operation after its due
    time) is above LAG_FLOOR_MS (1 ms) and above LAG_SHARE (25 %) of the p99 latency it
    reports (the generator's own delay would make a visible part of that p99).

Operations that started late because every lane was still busy are `queued`: that wait is the
service's (or too low a `--concurrency`), and stays in the latency; when more than 1 % of
operations queued and the generator was not bound, the result says `concurrency-bound`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from stackprobe.explain import explain
from stackprobe.load.histogram import Histogram
from stackprobe.load.timeline import Generator, Second, Timeline

Op = Callable[[], Awaitable[object]]
EARLY_S = 0.001
LEAD_S = 0.02  # the schedule starts this long after the lanes are ready
DRAIN_S = 10.0
MAX_OPS = 50_000_000
CPU_LIMIT = 0.90
LAG_FLOOR_MS = 1.0
LAG_SHARE = 0.25
QUEUED_SHARE = 0.01
RATE_TOLERANCE = 0.05
ERROR_KIND_CHARS = 120


@dataclass(frozen=True)
class Profile:
    """What to send: `rate` operations per second (None: as fast as the lanes can), for
    `duration` seconds, on `concurrency` lanes."""

    rate: float | None
    duration: float
    concurrency: int

    @property
    def total_ops(self) -> int:
        return round(self.rate * self.duration) if self.rate else MAX_OPS


@dataclass(frozen=True)
class Tick:
    """One second of the run, as the live progress and the telemetry see it."""

    second: int
    elapsed_s: float
    ops: int
    errors: int
    p50_ms: float
    p99_ms: float
    total_ops: int
    total_errors: int
    target_rate: float | None
    record: Second | None = None  # the second itself (a distributed worker sends it on)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (the `load` extra brings it: measured here,
    a quarter more throughput and a fifth less client overhead than asyncio's own), else
    asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def busy_seconds() -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of the calling thread; the
    process's CPU time and 0 where the kernel does not say."""
    try:
        on_cpu, waiting, _ = Path("/proc/thread-self/schedstat").read_text().split()
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    except (OSError, ValueError):
        return time.process_time(), 0.0


def error_kind(exc: BaseException) -> str:
    """One short line naming what went wrong, to count errors by kind."""
    return " ".join(explain(exc).split())[:ERROR_KIND_CHARS]


class Recorder:
    """Counts and histograms of the current second; each tick moves them to the timeline."""

    def __init__(self, target_rate: float | None) -> None:
        self.timeline = Timeline()
        self.target_rate = target_rate
        self.latency = Histogram()
        self.ops = 0
        self.errors = 0
        self.kinds: Counter[str] = Counter()
        self.total_ops = 0
        self.total_errors = 0
        self.closed = 0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.kinds[kind] += 1

    def tick(self, second: int, elapsed_s: float) -> Tick:
        summary = self.latency.summary()
        self.timeline.seconds[second] = Second(
            self.ops, self.errors, self.kinds, self.latency.encode() if self.ops else ""
        )
        self.total_ops += self.ops
        self.total_errors += self.errors
        tick = Tick(
            second,
            elapsed_s,
            self.ops,
            self.errors,
            float(summary["p50_ms"]),
            float(summary["p99_ms"]),
            self.total_ops,
            self.total_errors,
            self.target_rate,
            self.timeline.seconds[second],
        )
        self.latency = Histogram()
        self.ops = self.errors = 0
        self.kinds = Counter()
        self.closed = second + 1
        return tick


async def run_load(
    lanes: list[Op],
    profile: Profile,
    *,
    on_tick: Callable[[Tick], None] | None = None,
    name: str = "local",
    clock: Callable[[], float] = time.perf_counter,
) -> Timeline:
    """Run `profile` with one operation function per lane; the timeline of what happened."""
    if not lanes:
        raise ValueError("no lanes to run")
    rec = Recorder(profile.rate)
    service = Histogram()
    lag = Histogram()
    gen = Generator(name=name)
    total = profile.total_ops
    interval = 1.0 / profile.rate if profile.rate else 0.0
    state = {"next": 0, "queued": 0, "stop": 0}
    cpu0 = time.process_time()
    on_cpu0, waiting0 = busy_seconds()
    t0 = clock() + LEAD_S
    end = t0 + profile.duration

    def swallowed_cancel(exc: Exception) -> None:
        """A client that turns a cancellation into its own error (redis-py may, mid-read)
        must not keep the lane running: the cancellation wins."""
        task = asyncio.current_task()
        if state["stop"] or (task is not None and task.cancelling()):
            raise asyncio.CancelledError from exc

    async def open_lane(op: Op) -> None:
        while state["next"] < total and not state["stop"]:
            k = state["next"]
            state["next"] = k + 1
            intended = t0 + k * interval
            claimed = clock()
            if intended - claimed > EARLY_S:
                await asyncio.sleep(intended - claimed - EARLY_S)
            start = clock()
            try:
                await op()
            except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
                swallowed_cancel(exc)
                rec.error(error_kind(exc))
                continue
            done = clock()
            rec.latency.record(done - (start if start < intended else intended))
            rec.ops += 1
            service.record(done - start)
            if claimed < intended:
                lag.record(max(0.0, start - intended))
            else:
                state["queued"] += 1

    async def closed_lane(op: Op) -> None:
        while state["next"] < total and not state["stop"]:
            start = clock()
            if start >= end:
                return
            state["next"] += 1
            try:
                await op()
            except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
                swallowed_cancel(exc)
                rec.error(error_kind(exc))
                continue
            rec.latency.record(clock() - start)  # closed loop: latency is service time
            rec.ops += 1

    async def ticker() -> None:
        second = 0
        while True:
            await asyncio.sleep(max(0.0, t0 + second + 1 - clock()))
            tick = rec.tick(second, clock() - t0)
            if on_tick is not None:
                on_tick(tick)
            second += 1

    lane = open_lane if profile.rate else closed_lane
    tasks = [asyncio.create_task(lane(op)) for op in lanes]
    ticking = asyncio.create_task(ticker())
    try:
        _, pending = await asyncio.wait(tasks, timeout=end + DRAIN_S - clock())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        gen.unfinished = len(pending)
        for _ in pending:
            rec.error(f"no answer within the drain time ({DRAIN_S:g} s after the end)")
    finally:
        state["stop"] = 1  # a lane that outlives its cancellation claims nothing more
        for task in [*tasks, ticking]:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, ticking, return_exceptions=True)
    finished = clock()
    if rec.ops or rec.errors:  # what completed after the last whole second
        last = rec.tick(rec.closed, finished - t0)
        if on_tick is not None:
            on_tick(last)
    gen.wall_s = round(finished - t0, 6)
    gen.cpu_s = round(time.process_time() - cpu0, 6)
    on_cpu, waiting = busy_seconds()
    gen.busy_s = round(on_cpu - on_cpu0 + waiting - waiting0, 6)
    gen.runqueue_s = round(waiting - waiting0, 6)
    gen.issued = state["next"]
    gen.queued = state["queued"]
    gen.lag = lag.encode()
    # closed loop: no operation waits, its service time is its latency (recorded once)
    gen.service_time = service.encode() if profile.rate else rec.timeline.histogram().encode()
    rec.timeline.generators.append(gen)
    return rec.timeline
