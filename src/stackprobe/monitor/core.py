"""The monitor: cheap liveness probes every interval, the full non-disruptive suite every
full interval, and the end-to-end flow as a synthetic transaction every flow interval, all on
the same catalog and engine as `stackprobe run` (the flow one at a time with the full runs:
both send spans through the collector whose counters an exclusive check reads).

Held connections: for each service whose kind has `watch`, the monitor holds one idle
connection; when the server closes or resets it, a re-probe runs at once, and only when that
fails too are both counted as failed probes (down with the default `down_after` 2), so a
connection recycled by a proxy or an idle timeout does not flap the state. A hung service
(no close, no answer) is seen by the probes' timeout as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackprobe.catalog import known_kinds
from stackprobe.check import Outcome
from stackprobe.config import Stack
from stackprobe.connect import Services
from stackprobe.explain import explain
from stackprobe.kinds import Kind
from stackprobe.monitor.history import FlowRecord, History
from stackprobe.monitor.state import Policy, ServiceStatus, Tracker, evaluate
from stackprobe.redact import Redactor
from stackprobe.results import CheckResult, RunResult
from stackprobe.runner import Runner, Selection, make_plan, stack_plan
from stackprobe.services.stack_flow import flow_spec
from stackprobe.store import save_result

SPARKLINE_POINTS = 60
FLOW_HISTORY_POINTS = 30
HOLD_BACKOFF_MAX_S = 60.0  # between attempts to hold a connection an alive service refuses


@dataclass
class Monitor:
    stack: Stack
    history: History
    policy: Policy = field(default_factory=Policy)
    interval: float = 1.0
    full_interval: float = 60.0
    flow_interval: float = 30.0  # the synthetic flow; 0 = off
    probe_timeout: float = 0.5
    kinds: dict[str, Kind[Any]] = field(default_factory=known_kinds)
    latest_run: RunResult | None = None
    state: Path | None = None  # full runs go to this state dir's run store, as `run`'s do
    ready: bool = False
    rounds: int = 0
    latest_flow: CheckResult | None = None
    latest_flow_at: float | None = None
    last_failing_hop: dict[str, Any] | None = None
    hold: bool = True  # held connections for kinds with `watch` (False: probes only)
    location: str | None = None  # a `location` label on every metric series
    held_closes: int = 0  # closes of held connections seen (confirmed or not)

    def __post_init__(self) -> None:
        now = time.time()
        self.trackers = {name: Tracker(self.policy, started_at=now) for name in self.stack.services}
        self.redactor = Redactor(self.stack.secrets())
        # one client per service for the monitor's lifetime (clients reconnect by themselves)
        self.services = Services(self.stack, self.kinds)
        self._one_at_a_time = asyncio.Lock()  # a flow never runs beside a full run
        self.held: set[str] = set()  # services whose held connection is open now

    # --- probing -----------------------------------------------------------------------------

    async def probe(self, name: str) -> tuple[bool, float | None, str]:
        """(ok, latency in ms, one-line error) of one liveness probe, bounded by probe_timeout."""
        try:
            took = await self.services.probe(name, self.probe_timeout)
        except TimeoutError:
            self.services.forget(name)  # an open cut short by the timeout is tried again
            return False, None, f"no answer within {self.probe_timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure is a failed probe with its cause
            self.services.forget(name)
            return False, None, self.redactor.text(explain(exc))
        return True, round(took * 1000, 3), ""

    def _observe(self, rows: list[tuple[str, bool, float | None, str]], now: float) -> None:
        for name, ok, latency, error in rows:
            self.trackers[name].observe(
                ok, now, latency / 1000 if latency is not None else None, error
            )

    async def watch(self, name: str, stop: asyncio.Event) -> None:
        """Hold one idle connection to `name` until `stop`; a close confirmed by a re-probe
        counts as two failed probes, an unconfirmed one (recycled) only re-opens it."""
        kind = self.services.kind(name)
        if kind.watch is None:
            return
        refused = 0  # holds that failed in a row while the service was alive
        while not stop.is_set():
            try:
                async with asyncio.timeout(max(self.probe_timeout, 1.0)):
                    opened = await self.services.open(name)
                    held = await kind.watch(opened.client)
            except Exception:  # noqa: BLE001 - cannot hold: the probes see why; try later
                self.services.forget(name)
                # down: hold again as soon as it is back; alive (a server or proxy that does
                # not keep connections alive): back off, up to a minute
                refused = refused + 1 if self.trackers[name].alive else 0
                pause = min(self.interval * 2**refused, max(self.interval, HOLD_BACKOFF_MAX_S))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                continue
            refused = 0
            self.held.add(name)
            closed = asyncio.ensure_future(held.closed())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not closed.done():
                    return
                try:
                    cause = closed.result()
                except Exception as exc:  # noqa: BLE001 - a broken hold is a close, with why
                    cause = f"held connection failed: {explain(exc)}"
                cause = self.redactor.text(cause)
            finally:  # also when the monitor is cancelled (Ctrl-C)
                closed.cancel()
                stopping.cancel()
                self.held.discard(name)
                with contextlib.suppress(Exception):
                    await held.aclose()
            self.held_closes += 1
            ok, _, error = await self.probe(name)
            if ok:
                continue  # recycled by the server or a proxy: the service answers; hold anew
            now = time.time()
            rows: list[tuple[str, bool, float | None, str]] = [
                (name, False, None, cause),
                (name, False, None, error),
            ]
            self._observe(rows, now)
            await asyncio.to_thread(self.history.record_round, rows, now)
            with contextlib.suppress(TimeoutError):  # down: the probes see it come back
                await asyncio.wait_for(stop.wait(), self.interval)

    async def probe_round(self) -> None:
        names = list(self.stack.services)
        outcomes = await asyncio.gather(*(self.probe(n) for n in names))
        now = time.time()
        rows = [(n, ok, lat, err) for n, (ok, lat, err) in zip(names, outcomes, strict=True)]
        await asyncio.to_thread(self.history.record_round, rows, now)  # disk I/O off the probe loop
        self._observe(rows, now)
        self.rounds += 1
        self.ready = True

    async def full_run(self) -> RunResult:
        """The full non-disruptive suite (disruptive checks are never planned here)."""
        plan = make_plan(self.stack, Selection(allow_disruption=False))
        async with self._one_at_a_time:
            result = await Runner(plan, kinds=self.kinds).run()
        if result.interrupted:  # Ctrl-C reached the run: the monitor stops too
            raise asyncio.CancelledError
        self.latest_run = result
        self.history.record_run(result.run_id, result.to_json())
        if self.state is not None:
            with contextlib.suppress(OSError):  # the history keeps it; the store serves `coverage`
                await asyncio.to_thread(save_result, result, self.state)
        return result

    async def flow_run(self) -> CheckResult:
        """One synthetic transaction (the e2e-flow check) through the runner."""
        plan = stack_plan(self.stack, [flow_spec()], Selection(allow_disruption=False))
        # the monitor's open services, unless the plan added a stack service they do not know
        services = self.services if plan.stack is self.stack else None
        async with self._one_at_a_time:
            run = await Runner(plan, kinds=self.kinds, services=services).run()
        if run.interrupted:
            raise asyncio.CancelledError
        result = run.results[0]
        now = time.time()
        hops = list(result.evidence.get("hops") or [])
        broken = next((h for h in hops if h.get("status") in ("failed", "error")), None)
        if broken is None and result.outcome is not Outcome.PASSED:  # the check itself broke
            broken = {"hop": "flow", "service": None, "status": result.outcome.value,
                      "message": result.message}  # fmt: skip
        self.latest_flow, self.latest_flow_at = result, now
        if broken is not None:
            self.last_failing_hop = {**broken, "at": now}
        record = FlowRecord(
            ts=now,
            ok=result.outcome is Outcome.PASSED,
            duration_ms=result.evidence.get("duration_ms"),
            failing_hop=broken.get("hop") if broken else None,
            message=self.redactor.text(result.message),
            hops=hops,
        )
        await asyncio.to_thread(self.history.record_flow, record)
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Probe every `interval` and run the suite every `full_interval` until `stop` is set."""

        async def probing() -> None:
            while not stop.is_set():
                started = time.monotonic()
                await self.probe_round()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), max(0.0, self.interval - (time.monotonic() - started))
                    )

        async def full_runs() -> None:
            while not stop.is_set():
                await self.full_run()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.full_interval)

        async def flows() -> None:
            while self.flow_interval > 0 and not stop.is_set():
                await self.flow_run()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.flow_interval)

        watches = [self.watch(n, stop) for n in self.stack.services] if self.hold else []
        try:
            await asyncio.gather(probing(), full_runs(), flows(), *watches)
        finally:
            await self.services.aclose()

    # --- what the API and page show --------------------------------------------------------

    def failing_capabilities(self) -> dict[str, list[str]]:
        if self.latest_run is None:
            return {}
        failing: dict[str, list[str]] = {}
        for name, cov in self.latest_run.coverage.services.items():
            bad = [
                cap
                for cap, cell in cov.capabilities.items()
                if cell in (Outcome.FAILED, Outcome.ERROR)
            ]
            if bad:
                failing[name] = bad
        return failing

    def statuses(self) -> dict[str, ServiceStatus]:
        depends = {n: list(s.depends_on) for n, s in self.stack.services.items()}
        return evaluate(self.trackers, depends, self.failing_capabilities(), time.time())

    def service_view(self, name: str, status: ServiceStatus) -> dict[str, Any]:
        tracker = self.trackers[name]
        svc = self.stack.service(name)
        recent = self.history.recent(name, SPARKLINE_POINTS)
        return {
            "name": name,
            "kind": svc.kind,
            "state": status.state.value,
            "alive": status.alive,
            "reason": self.redactor.text(status.reason),
            "impacted_by": list(status.impacted_by),
            "depends_on": list(svc.depends_on),
            "latency_ms": round(tracker.last_latency_s * 1000, 3)
            if tracker.last_latency_s is not None
            else None,
            "last_error": self.redactor.text(tracker.last_error),
            "sparkline": [p.latency_ms if p.ok else None for p in recent],
            "uptime": self.history.uptime(name),
        }

    def flow_view(self) -> dict[str, Any]:
        """The synthetic flow for the page and the API: the last one's hops, the last failing
        hop, and the recent flows from the history."""
        flow = self.latest_flow
        last = None
        if flow is not None:
            last = {
                "at": self.latest_flow_at,
                "outcome": flow.outcome.value,
                "message": flow.message,
                "trace_id": flow.evidence.get("trace_id"),
                "duration_ms": flow.evidence.get("duration_ms"),
                "hops": self.redactor.data(flow.evidence.get("hops") or []),
            }
        return {
            "enabled": self.flow_interval > 0,
            "interval_s": self.flow_interval,
            "last": last,
            "last_failing_hop": self.redactor.data(self.last_failing_hop),
            "history": [
                {"ts": f.ts, "ok": f.ok, "duration_ms": f.duration_ms, "failing_hop": f.failing_hop}
                for f in self.history.flows(FLOW_HISTORY_POINTS)
            ],
        }

    def status_document(self) -> dict[str, Any]:
        statuses = self.statuses()
        run = self.latest_run
        return {
            "stack": self.stack.name,
            "generated_at": time.time(),
            "ready": self.ready,
            "all_up": bool(statuses) and all(s.alive is True for s in statuses.values()),
            "held": sorted(self.held),  # services whose held connection is open
            "held_closes": self.held_closes,  # closes of held connections, recycled ones too
            "services": {name: self.service_view(name, st) for name, st in statuses.items()},
            "coverage": run.coverage.model_dump() if run else None,
            "flow": self.flow_view(),
            "latest_run": {
                "run_id": run.run_id,
                "started_at": run.started_at,
                "summary": run.summary.model_dump(),
            }
            if run
            else None,
        }
