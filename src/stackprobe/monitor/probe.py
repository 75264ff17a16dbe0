"""`GET /probe?service=<name>[&capability=<cap>]`: the blackbox exporter's contract.

Prometheus schedules the probes (one scrape job, the service names as targets, relabelled into
`__param_service`), so monitors in many places need no coordinator of their own. Each request
runs, now, the service's liveness probe, or that capability's checks that may run on request
(never disruptive ones, nor exclusive ones, which must run alone on their service: the full
run has them), and answers the Prometheus text format (or OpenMetrics, as /metrics does):

    probe_success 1
    probe_duration_seconds 0.0021
    stackprobe_check_status{check="redis.sessions.sliding_expiry",capability="sessions"} 1

bounded by the scrape's `X-Prometheus-Scrape-Timeout-Seconds` less a margin, so an answer
(`probe_success 0` and `stackprobe_probe_error_info{reason=...}`) always arrives before
Prometheus gives up. At most `PROBES_PER_SERVICE` probes of one service run at once; more
wait for a slot within their budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from stackprobe.check import CheckSpec, Outcome, Severity
from stackprobe.explain import explain
from stackprobe.ids import new_run_id
from stackprobe.monitor.core import Monitor
from stackprobe.monitor.metrics import with_location

SCRAPE_TIMEOUT_HEADER = "x-prometheus-scrape-timeout-seconds"
DEFAULT_BUDGET_S = 10.0  # no header (a person with curl): the default check timeout
MARGIN_S = 0.5  # as the blackbox exporter's timeout_offset: time to answer after the budget
PROBES_PER_SERVICE = 2
REASON_CHARS = 200


class BadProbe(ValueError):
    """A /probe request that cannot run: one line, answered 400."""


@dataclass(frozen=True)
class ProbeRequest:
    service: str
    capability: str | None
    checks: tuple[CheckSpec, ...] = ()  # with a capability: what runs


@dataclass
class ProbeResult:
    success: bool
    duration_s: float
    checks: list[tuple[str, str, bool]] = field(default_factory=list)  # (check, capability, ok)
    reason: str = ""


def budget(header: str | None) -> float:
    """Seconds a probe may take: the scrape timeout less `MARGIN_S` (never below half of it),
    or `DEFAULT_BUDGET_S` without the header."""
    if header is None or not header.strip():
        return DEFAULT_BUDGET_S
    try:
        value = float(header)
    except ValueError:
        raise BadProbe(
            f"{SCRAPE_TIMEOUT_HEADER}: {header[:40]!r} is not a number of seconds"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise BadProbe(f"{SCRAPE_TIMEOUT_HEADER}: {header[:40]!r} is not a positive number")
    return max(value - MARGIN_S, value / 2)


def runnable(specs: list[CheckSpec], capability: str) -> tuple[CheckSpec, ...]:
    """The checks of `capability` that /probe may run: neither disruptive nor exclusive."""
    return tuple(
        c for c in specs if c.capability == capability and not c.disruptive and not c.exclusive
    )


def parse(monitor: Monitor, params: Mapping[str, str]) -> ProbeRequest:
    """The request named by the query string; BadProbe (one line) when it names nothing."""
    name = params.get("service", "")
    services = monitor.stack.services
    if not name:
        raise BadProbe(f"pass ?service=<name> (services: {', '.join(services)})")
    if name not in services:
        raise BadProbe(f"unknown service {name[:80]!r} (services: {', '.join(services)})")
    capability = params.get("capability") or None
    if capability is None:
        return ProbeRequest(name, None)
    kind = monitor.kinds[services[name].kind]
    if capability not in kind.capabilities:
        raise BadProbe(
            f"unknown capability {capability[:80]!r} for {name} ({kind.name}: "
            f"{', '.join(kind.capabilities)})"
        )
    checks = runnable(kind.checks, capability)
    if not checks:
        raise BadProbe(
            f"{name}: capability {capability} has no check /probe may run "
            "(only disruptive or exclusive ones: the full run has them)"
        )
    return ProbeRequest(name, capability, checks)


class Prober:
    """Runs /probe requests on the monitor's open services, a few per service at a time."""

    def __init__(self, monitor: Monitor, per_service: int = PROBES_PER_SERVICE) -> None:
        self.monitor = monitor
        self.per_service = per_service
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._unfinished: set[asyncio.Future[Any]] = set()  # checks past their budget

    def _slot(self, name: str) -> asyncio.Semaphore:
        return self._slots.setdefault(name, asyncio.Semaphore(self.per_service))

    async def run(self, request: ProbeRequest, seconds: float) -> ProbeResult:
        started = time.perf_counter()
        deadline = time.monotonic() + seconds
        slot = self._slot(request.service)
        try:
            async with asyncio.timeout(seconds):
                await slot.acquire()
        except TimeoutError:
            return ProbeResult(
                False,
                time.perf_counter() - started,
                reason=f"busy: {self.per_service} probes of {request.service} already running "
                f"for longer than {seconds:g} s",
            )
        try:
            result = await self._run(request, deadline - time.monotonic())
        finally:
            slot.release()
        result.duration_s = time.perf_counter() - started
        return result

    async def _run(self, request: ProbeRequest, seconds: float) -> ProbeResult:
        services = self.monitor.services
        if request.capability is None:
            try:
                await services.probe(request.service, max(seconds, 0.001))
            except TimeoutError:
                return ProbeResult(False, 0, reason=f"no answer within {seconds:.3g} s")
            except Exception as exc:  # noqa: BLE001 - any failure is a failed probe with its cause
                services.forget(request.service)
                return ProbeResult(False, 0, reason=explain(exc))
            return ProbeResult(True, 0)
        run_id = new_run_id()  # probes at once never share the names their checks create
        tasks = {
            spec: asyncio.ensure_future(services.check(request.service, spec.id, run_id))
            for spec in request.checks
        }
        done, pending = await asyncio.wait(tasks.values(), timeout=max(seconds, 0.001))
        for task in pending:  # cancelled; its cleanups finish after the answer
            task.cancel()
            self._unfinished.add(task)
            task.add_done_callback(self._unfinished.discard)
        result = ProbeResult(True, 0)
        passed = 0
        for spec, task in tasks.items():
            if task not in done:
                ok, why = False, f"{spec.id}: no answer within {seconds:.3g} s"
            elif (failure := task.exception()) is not None:
                ok, why = False, f"{spec.id}: {explain(failure)}"
            else:
                outcome, message, _ = task.result()
                if outcome is Outcome.SKIPPED:
                    continue
                ok, why = outcome is Outcome.PASSED, f"{spec.id}: {message}"
                passed += ok
                if not ok and spec.severity is Severity.WARNING:
                    result.checks.append((spec.id, spec.capability, False))
                    continue  # a failed warning is shown, and does not fail the probe
            result.checks.append((spec.id, spec.capability, ok))
            if not ok and result.success:
                result.success, result.reason = False, why
        if result.success and not passed:
            result.success, result.reason = False, "every check was skipped"
        return result


class _ProbeCollector(Collector):
    def __init__(self, result: ProbeResult, monitor: Monitor) -> None:
        self.result = result
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        yield from with_location(self._families(), self.monitor.location)

    def _families(self) -> Iterator[Metric]:
        r = self.result
        label = self.monitor.redactor.text
        yield GaugeMetricFamily(
            "probe_success", "1 when the probe succeeded, else 0", value=1 if r.success else 0
        )
        yield GaugeMetricFamily(
            "probe_duration_seconds",
            "how long the probe took, in seconds",
            value=round(r.duration_s, 6),
        )
        if r.checks:
            status = GaugeMetricFamily(
                "stackprobe_check_status",
                "1 when the check passed in this probe, 0 when it failed or errored",
                labels=["check", "capability"],
            )
            for check, capability, ok in r.checks:
                status.add_metric([check, capability], 1 if ok else 0)
            yield status
        if not r.success and r.reason:
            info = GaugeMetricFamily(
                "stackprobe_probe_error_info",
                "why the probe failed (one line, redacted)",
                labels=["reason"],
            )
            info.add_metric([label(r.reason)[:REASON_CHARS]], 1)
            yield info


def registry_of(result: ProbeResult, monitor: Monitor) -> CollectorRegistry:
    """A registry holding one probe's result (rendered as /metrics is: text or OpenMetrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProbeCollector(result, monitor))
    return registry
