"""Run one scenario inside a check of the stack kind: steady state, method, measured figures,
rollbacks that always run (as the check's cleanups: on success, failure, error, timeout and
Ctrl-C), and a final check that nothing is left broken.

Figures, read from the watched service's probes and the timeline:
    time_to_detect_s    fault injected -> first failed probe
    time_to_recover_s   fault removed (or, when nothing removes it, fault injected) -> first
                        successful probe after the failure
    outage_s            first failed probe -> first successful probe again
    lost                acknowledged writes gone after recovery (the writer's ledger)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped
from stackprobe.durations import parse_duration
from stackprobe.errors import Outcome
from stackprobe.explain import explain
from stackprobe.resilience import timeline as tl
from stackprobe.resilience.faults import injector_for
from stackprobe.resilience.journal import Journal
from stackprobe.resilience.model import (
    FAULTS,
    FOLLOWER,
    LEADER,
    Fault,
    Observe,
    Probe,
    Scenario,
    Tolerances,
    Verify,
    Wait,
    disrupted,
)
from stackprobe.resilience.verify import VERIFIERS, before_fault, resolve_leader, within_s
from stackprobe.resilience.writers import Writer, writes_for
from stackprobe.state import state_dir

STEADY_TIMEOUT = 30.0  # the steady state must hold (again) within this
WRITE_TIMEOUT = 2.0  # one write's budget: a write that hangs longer is counted as refused
ROLLBACK_TIMEOUT = 90.0  # rollbacks, and waiting for every touched service to be alive again
VERIFY_ATTEMPT_MIN = 1.0  # the last attempt of a verify step still gets this long


def state_of(ctx: CheckContext[object]) -> Path:
    """Where the journal goes: the sandbox's state dir, else the configured one."""
    return ctx.stack.path.parent.parent if ctx.sandbox else state_dir()


async def run_scenario(
    ctx: CheckContext[object], scenario: Scenario, tolerances: Tolerances | None = None
) -> str:
    """The check's body: raises CheckFailed with every breached tolerance, else the summary."""
    for name in scenario.services():
        if name not in ctx.stack.services:
            raise CheckSkipped(
                f"{scenario.name} needs service {name!r} ({scenario.needs or 'not in this stack'})"
            )
    for name in sorted(disrupted(scenario)):
        ctx.require_disruption(name)
    run = _Run(ctx, scenario, tolerances or scenario.tolerances)
    ctx.cleanup(run.rollback, f"roll back {scenario.name}", timeout=ROLLBACK_TIMEOUT)
    return await run.go()


def _faults(scenario: Scenario) -> list[Fault]:
    return [s for s in scenario.method if isinstance(s, Fault)] + list(scenario.rollbacks)


class _Run:
    def __init__(
        self, ctx: CheckContext[object], scenario: Scenario, tolerances: Tolerances
    ) -> None:
        assert ctx.services is not None  # the runner gives stack checks the run's services
        self.ctx = ctx
        self.services = ctx.services
        self.scenario = scenario
        self.tolerances = tolerances
        self.journal = Journal(state_of(ctx), ctx.run_id, scenario.name)
        self.timeline = tl.Timeline(on_mark=self._journal_mark)
        self.state: dict[str, Any] = {}
        self.open_faults: list[Fault] = []  # applied and not yet remedied, in order
        self.resolved: dict[str, str] = {}  # @leader / @follower -> the services they were
        self.writer: Writer | None = None
        self.watch = scenario.watch or next(f.service for f in _faults(scenario))
        self.prober = tl.Prober(self.services, self.watch, self.timeline)
        ctx.evidence.update(scenario=scenario.name, procedure=scenario.procedure)

    def name(self, service: str) -> str:
        return self.resolved.get(service, service)

    def _journal_mark(self, event: tl.Event) -> None:
        """Timeline events go to the journal too: a run killed on a hang shows how far it got."""
        self.journal.write("mark", t_s=round(event.t, 3), what=event.event, detail=event.detail)

    def _outage_writer(self) -> bool:
        return self.scenario.writer is not None and self.scenario.writer.during == "outage"

    async def go(self) -> str:
        await self._steady(tl.STEADY)
        if self.scenario.members:
            leader = await resolve_leader(self.ctx, self.scenario.members)
            others = [m for m in self.scenario.members if m != leader]
            self.resolved = {LEADER: leader, FOLLOWER: others[0] if others else leader}
            self.ctx.evidence["members"] = {"leader": leader, "others": others}
        self.watch = self.name(self.watch)
        self.prober = tl.Prober(self.services, self.watch, self.timeline, self.scenario.degraded_ms)
        self.ctx.evidence["watched"] = self.watch
        verifies = [s for s in self.scenario.method if isinstance(s, Verify)]
        await before_fault(
            self.ctx,
            [v.model_copy(update={"service": self.name(v.service)}) for v in verifies],
            self.state,
        )
        if (spec := self.scenario.writer) is not None:
            writes = await writes_for(self.ctx, self.name(spec.service))
            self.writer = Writer(writes, spec.rate, WRITE_TIMEOUT)
            self.ctx.cleanup(writes.close, "remove what the writer wrote", timeout=30)
            if not self._outage_writer():
                self.writer.start()
        self.prober.start()
        try:
            async with asyncio.timeout(self.scenario.timeout_s):
                for step in self.scenario.method:
                    await self._step(step)
        except TimeoutError:
            raise CheckFailed(
                f"{self.scenario.name}: method not finished within {self.scenario.timeout}"
            ) from None
        finally:
            if self.writer is not None:
                await self.writer.stop()
        await self._steady(tl.STEADY_AGAIN)
        await self.prober.stop()
        return await self._verdict()

    # --- steps ---------------------------------------------------------------------------------

    async def _step(self, step: Fault | Observe | Wait | Verify) -> None:
        if isinstance(step, Fault):
            await self._fault(step)
        elif isinstance(step, Wait):
            await asyncio.sleep(parse_duration(step.duration))
        elif isinstance(step, Observe):
            await self._observe(step)
        else:
            await self._verify(step)

    async def _fault(self, fault: Fault) -> None:
        fault = fault.model_copy(update={"service": self.name(fault.service)})
        injector = injector_for(self.ctx, fault)
        is_fault = fault.action in FAULTS
        undo = FAULTS.get(fault.action)
        self.journal.write(
            "fault" if is_fault else "remedy",
            action=fault.action,
            service=fault.service,
            injector=injector.name,
            undo=undo,
        )
        # marked as it starts: a restart that takes seconds is an outage from its first moment
        event = self.timeline.mark(
            tl.INJECTED if is_fault else tl.REMOVED, f"{fault.action} {fault.service}"
        )
        if is_fault and self.writer is not None and self._outage_writer():
            self.writer.start()
        event.detail = await injector.apply(self.ctx, fault)
        if is_fault:
            if undo is not None:
                self.open_faults.append(fault)
            return
        self.open_faults = [
            f
            for f in self.open_faults
            if not (f.service == fault.service and FAULTS.get(f.action) == fault.action)
        ]
        if not self.open_faults and self.writer is not None and self._outage_writer():
            await self.writer.stop()

    async def _observe(self, step: Observe) -> None:
        service = self.name(step.service)
        prober = (
            self.prober
            if service == self.watch
            else tl.Prober(self.services, service, self.timeline)
        )
        prober.start()
        since = self.timeline.now()
        budget = parse_duration(step.within)
        try:
            async with asyncio.timeout(budget):
                while True:
                    if _reached(step, prober.after(since)):
                        break
                    await asyncio.sleep(tl.PROBE_INTERVAL)
        except TimeoutError:
            seen = prober.after(since)[-1:] or None
            said = (seen[0].error or f"{seen[0].latency_ms} ms") if seen else "no probe answered"
            raise CheckFailed(
                f"{service} not {step.until} within {step.within} (last probe: {said})"
            ) from None
        finally:
            if prober is not self.prober:
                await prober.stop()
        self.timeline.mark(f"{service} {step.until}", f"after {self.timeline.now() - since:.2f} s")

    async def _verify(self, step: Verify) -> None:
        verifier = VERIFIERS.get(step.verifier)
        if verifier is None:
            raise CheckFailed(f"no verifier {step.verifier!r} (known: {', '.join(VERIFIERS)})")
        step = step.model_copy(update={"service": self.name(step.service)})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s(step)
        last = ""
        while True:
            try:  # one attempt may not outlast the step: a frozen server never answers
                async with asyncio.timeout(max(VERIFY_ATTEMPT_MIN, deadline - loop.time())):
                    detail = await verifier(self.ctx, step, self.state)
                self.timeline.mark(f"verified {step.verifier}", detail)
                return
            except CheckFailed as exc:
                last = str(exc)
            except TimeoutError:
                last = "no answer in time"
            except Exception as exc:  # noqa: BLE001 - a service still recovering: try again
                last = explain(exc)
            if loop.time() > deadline:
                raise CheckFailed(
                    f"verify {step.verifier} on {step.service} within {step.within}: {last}"
                )
            await asyncio.sleep(0.5)

    async def _steady(self, event: str) -> None:
        """Every steady-state probe holds (polled up to STEADY_TIMEOUT the second time)."""
        budget = 0.0 if event == tl.STEADY else STEADY_TIMEOUT
        deadline = asyncio.get_running_loop().time() + budget
        while True:
            probes = [
                p.model_copy(update={"service": self.name(p.service)})
                for p in self.scenario.steady_state
            ]
            problems = [p for p in await asyncio.gather(*(self._probe(p) for p in probes)) if p]
            if not problems:
                self.timeline.mark(event)
                return
            if asyncio.get_running_loop().time() >= deadline:
                what = (
                    "steady state not met before the fault"
                    if event == tl.STEADY
                    else f"steady state not back within {STEADY_TIMEOUT:g} s"
                )
                raise CheckFailed(f"{what}: {'; '.join(problems)}")
            await asyncio.sleep(0.5)

    async def _probe(self, probe: Probe) -> str:
        if probe.probe == "check":
            outcome, message, _ = await self.services.check(probe.service, str(probe.check))
            return (
                ""
                if outcome is Outcome.PASSED
                else f"{probe.check} on {probe.service}: {outcome.value}: {message}"
            )
        try:
            took = await self.services.probe(probe.service, tl.PROBE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the probe's failure is the problem reported
            return f"{probe.service}: {explain(exc) if not isinstance(exc, TimeoutError) else 'no answer in time'}"
        if probe.max_latency_ms is not None and took * 1000 > probe.max_latency_ms:
            return f"{probe.service}: liveness {took * 1000:.1f} ms, more than {probe.max_latency_ms:g} ms"
        return ""

    # --- the verdict ---------------------------------------------------------------------------

    async def _verdict(self) -> str:
        remedied = {
            self.name(s.service)
            for s in self.scenario.method
            if isinstance(s, Fault) and s.action not in FAULTS
        }
        figures = tl.measure(self.timeline, self.prober.samples, by_remedy=self.watch in remedied)
        breaches: list[str] = []
        tol = self.tolerances
        if tol.detect_s is not None:
            if figures["time_to_detect_s"] is None:
                breaches.append(f"no failure of {self.watch} was observed after the fault")
            elif figures["time_to_detect_s"] > tol.detect_s:
                breaches.append(
                    f"detected after {figures['time_to_detect_s']} s, tolerance {tol.detect_s:g} s"
                )
        if tol.recover_s is not None and figures["time_to_detect_s"] is not None:
            if figures["time_to_recover_s"] is None:
                breaches.append(f"{self.watch} never answered again after the failure")
            elif figures["time_to_recover_s"] > tol.recover_s:
                breaches.append(
                    f"recovered after {figures['time_to_recover_s']} s, tolerance {tol.recover_s:g} s"
                )
        self.ctx.evidence.update(figures)
        self.ctx.evidence["probes"] = self.prober.summary()
        self.ctx.evidence["verified"] = {
            k: v for k, v in self.state.items() if not k.startswith(("leader:", "series:"))
        }
        writes = ""
        if self.writer is not None:
            ledger = await self.writer.account()
            summary = ledger.summary()
            self.ctx.evidence["writes"] = summary
            lost, acked = len(ledger.lost), len(ledger.acknowledged)
            if tol.lost_writes is not None and lost > tol.lost_writes:
                breaches.append(f"{lost} acknowledged write(s) lost, tolerance {tol.lost_writes}")
            if tol.lost_ratio is not None and acked and lost / acked > tol.lost_ratio:
                breaches.append(
                    f"{lost}/{acked} acknowledged writes lost, tolerance {tol.lost_ratio:g}"
                )
            if (
                tol.refused_ratio is not None
                and ledger.attempted
                and len(ledger.refused) / ledger.attempted > tol.refused_ratio
            ):
                breaches.append(
                    f"{len(ledger.refused)}/{ledger.attempted} writes refused, tolerance {tol.refused_ratio:g}"
                )
            writes = f"; writes: {acked} acknowledged, {len(ledger.refused)} refused, {lost} lost"
        self.ctx.evidence["timeline"] = [e.as_dict() for e in self.timeline.events]
        self.ctx.evidence["tolerances"] = tol.model_dump(exclude_none=True)
        self.ctx.evidence["verdict"] = "failed" if breaches else "passed"
        said = ", ".join(
            f"{k.removesuffix('_s').replace('_', ' ')} {v} s"
            for k, v in figures.items()
            if v is not None
        )
        if breaches:
            raise CheckFailed(
                f"{self.scenario.name}: " + "; ".join(breaches) + f" ({said}{writes})"
            )
        return f"{self.scenario.name}: {said or 'no outage observed'}{writes}"

    # --- rollbacks -----------------------------------------------------------------------------

    async def rollback(self) -> None:
        """Undo every fault still applied, then the scenario's own rollbacks; then check that
        nothing is left broken. Runs whatever happened before (it is the check's cleanup)."""
        await self.prober.stop()
        if self.writer is not None:
            await self.writer.stop()
        problems: list[str] = []
        undo = [
            f.model_copy(update={"action": FAULTS[f.action]})
            for f in reversed(self.open_faults)
            if FAULTS.get(f.action)
        ]
        for fault in [*undo, *self.scenario.rollbacks]:
            fault = fault.model_copy(update={"service": self.name(fault.service)})
            try:
                self.journal.write("remedy", action=fault.action, service=fault.service)
                detail = await injector_for(self.ctx, fault).apply(self.ctx, fault)
                self.timeline.mark("rollback", detail)
            except CheckSkipped:
                continue
            except Exception as exc:  # noqa: BLE001 - reported, and the other rollbacks still run
                problems.append(f"rollback {fault.action} {fault.service}: {explain(exc)}")
        problems += await self._left_broken()
        self.journal.end(problems)
        self.ctx.evidence["timeline"] = [e.as_dict() for e in self.timeline.events]
        if problems:
            raise CheckFailed("; ".join(problems))

    async def _left_broken(self) -> list[str]:
        """The services the scenario touched, and the services that depend on them (a Celery
        worker on a Redis that was restarted), are alive again within STEADY_TIMEOUT."""
        touched = {self.name(f.service) for f in _faults(self.scenario)} - {LEADER, FOLLOWER}
        touched |= {
            name
            for name, svc in self.ctx.stack.services.items()
            if touched.intersection(svc.depends_on)
        }
        problems = []
        for name in sorted(touched):
            if (proc := self._process(name)) is not None and proc.frozen():
                problems.append(f"{name} is still frozen (SIGSTOP)")
        services = self.services

        async def alive(name: str) -> str:
            deadline = asyncio.get_running_loop().time() + STEADY_TIMEOUT
            while True:
                try:
                    await services.probe(name, tl.PROBE_TIMEOUT)
                    return ""
                except Exception as exc:  # noqa: BLE001 - still down: try until the deadline
                    if asyncio.get_running_loop().time() > deadline:
                        return f"{name} still not alive after the rollbacks: {explain(exc)}"
                await asyncio.sleep(0.5)

        problems += [p for p in await asyncio.gather(*(alive(n) for n in sorted(touched))) if p]
        return problems

    def _process(self, name: str) -> Any:
        if self.ctx.processes is None:
            return None
        try:
            return self.ctx.processes.process(name)
        except Exception:  # noqa: BLE001 - a service the sandbox does not run
            return None


def _reached(step: Observe, samples: list[tl.Sample]) -> bool:
    """The last probes show the state `step` waits for (two in a row, so one lucky or unlucky
    probe does not decide). Slow and fast read the latency, whether or not the scenario counts
    slow probes as failures."""
    last = samples[-2:]
    if len(last) < 2:
        return False
    if step.until == "down":
        return all(s.latency_ms is None and not s.ok for s in last)
    if step.until == "up":
        return all(s.ok for s in last)
    timed = [s.latency_ms for s in last if s.latency_ms is not None]
    if len(timed) < 2:
        return False
    if step.until == "slow":
        return all(ms >= step.slow_ms for ms in timed)
    return all(ms < step.slow_ms for ms in timed)
