"""The stack's `load` capability: bounded load against one service, with an SLO verdict.

Two kinds of check, both on the stack kind (so they get the runner's timeouts, cleanups,
reports, coverage and redaction):

- `stack.load.slo_smoke`, in every `stackprobe run`: each service that declares `slo:` gets a
  short, low load (`SMOKE_OPS` operations of its kind's default workload at its low rate, at
  most `SMOKE_MAX_RATE` ops/s: half a second on Redis) and must meet its SLO. Skipped when no service declares one. It is exclusive on the stack
  kind, so the runner runs it alone, after the other checks: measured beside 40 checks
  sharing the event loop, a Redis p99 of 1 ms reads 100-300 ms.
- `stack.load.<service>_<workload>`, built by `stackprobe load` from the command line
  (`load_spec`): the profile asked for, in-process or on Locust workers, with live progress,
  live OTLP metrics through the stack's collector, and baselines. Above the workload's low
  rate (`LOW_RATE`, 100 ops/s; Redis 2,000), or with `--max`, it is disruptive.

The verdict:

    SLO breached (any window, or overall)                                  failed
      ... but the generator was bound (engine.py's rule) and the service
      time alone (send to answer, no generator lag) meets the SLO           error: cannot tell
    generator bound and the rate asked for not reached                     error
    rate more than 5 % short of the target (generator not bound)           failed
    a regression against --compare                                         failed
    a Locust worker lost mid-run (its partial seconds kept)                error
    otherwise                                                              passed (saying when
                                                                           the generator was
                                                                           bound: upper bounds)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stackprobe import __version__
from stackprobe.check import CheckContext, CheckFailed, CheckSkipped, CheckSpec
from stackprobe.config import SloTargets
from stackprobe.errors import ServiceError
from stackprobe.load import engine
from stackprobe.load.analysis import Analysis, analyse
from stackprobe.load.baseline import (
    baseline_document,
    regressions,
    save_baseline,
)
from stackprobe.load.distributed import run_distributed
from stackprobe.load.engine import Profile, Tick, run_load
from stackprobe.load.limits import DEFAULT_CONCURRENCY, DEFAULT_THRESHOLD
from stackprobe.load.telemetry import LoadTelemetry
from stackprobe.load.timeline import Timeline
from stackprobe.load.workload import (
    Workload,
    find_workload,
    service_context,
    workloads_of,
)
from stackprobe.services.stack import KIND as STACK
from stackprobe.services.stack import StackView

COLLECTOR_KIND = "otel-collector"
SMOKE_OPS = 100
SMOKE_MAX_RATE = 200.0  # and never above the workload's low rate: not disruptive
SMOKE_CONCURRENCY = 4
SETUP_TIMEOUT = 60.0  # preparing a workload (seeding keys, waiting for a probe trace)
CLEANUP_TIMEOUT = 30.0  # deleting what a workload created, by name


@dataclass(frozen=True)
class LoadRequest:
    """One `stackprobe load` invocation."""

    service: str
    workload: str | None = None
    rate: float | None = None  # None: closed-loop maximum (--max)
    duration: float = 10.0
    concurrency: int = DEFAULT_CONCURRENCY
    workers: int = 0  # 0: in this process; N: N Locust workers
    local_workers: int | None = None  # workers this machine starts (default: all of them)
    master_bind: str = "127.0.0.1:0"  # where the Locust master listens for workers
    save_baseline: Path | None = None
    compare: Path | None = None
    compare_document: dict[str, Any] | None = None
    threshold: float = DEFAULT_THRESHOLD
    telemetry: bool = True
    on_tick: tuple[Callable[[Tick], None], ...] = field(default=())

    def disruptive(self, chosen: Workload) -> bool:
        """--max, or a rate above the workload's low rate (DESIGN rule 3)."""
        return self.rate is None or self.rate > chosen.low_rate

    @property
    def profile(self) -> Profile:
        return Profile(self.rate, self.duration, self.concurrency)


def check_name(service: str, workload: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", f"{service}_{workload}")


def load_spec(request: LoadRequest, kind: str) -> CheckSpec:
    """The stack-level check that runs `request` (kind: the target's kind)."""
    chosen = find_workload(request.service, kind, request.workload)
    what = f"{request.rate:g} ops/s" if request.rate else "maximum throughput"
    where = f" on {request.workers} Locust worker(s)" if request.workers else ""

    async def run(ctx: CheckContext[StackView]) -> str:
        return await run_request(ctx, replace(request, workload=chosen.name), chosen)

    return CheckSpec(
        kind=STACK.name,
        capability="load",
        name=check_name(request.service, chosen.name),
        title=f"{chosen.title}: {what} for {request.duration:g} s{where} against {request.service}",
        fn=run,
        timeout=request.duration + engine.DRAIN_S + SETUP_TIMEOUT + CLEANUP_TIMEOUT,
        disruptive=request.disruptive(chosen),
        exclusive=True,
    )


async def target_context(ctx: CheckContext[StackView], name: str) -> CheckContext[Any]:
    """The target service's context, whose cleanups run in this check's cleanup."""
    client = await ctx.open(name)
    target = service_context(
        ctx.stack, name, client, ctx.run_id, services=ctx.services, sandbox=ctx.sandbox
    )

    async def cleanup() -> None:
        problems = await target.run_cleanups(CLEANUP_TIMEOUT)
        if problems:
            raise ServiceError("; ".join(problems))

    ctx.cleanup(cleanup, f"remove what the load created on {name}")
    return target


def slo_of(ctx: CheckContext[Any], service: str, workload: str) -> SloTargets | None:
    slo = ctx.stack.service(service).slo
    return slo.for_workload(workload) if slo is not None else None


async def _telemetry(
    ctx: CheckContext[StackView], service: str, workload: str
) -> LoadTelemetry | None:
    """The exporter to the stack's only collector with an OTLP/HTTP endpoint, else None."""
    collectors = [
        n
        for n, s in ctx.stack.services.items()
        if s.kind == COLLECTOR_KIND and s.endpoints.get("otlp_http")
    ]
    if len(collectors) != 1:
        ctx.evidence["telemetry"] = {
            "exported": False,
            "why": "no collector with endpoints.otlp_http"
            if not collectors
            else f"several collectors ({', '.join(collectors)}): none picked",
        }
        return None
    try:
        collector = await ctx.open(collectors[0])
    except Exception as exc:  # noqa: BLE001 - telemetry is best effort: the load goes on
        ctx.evidence["telemetry"] = {"exported": False, "why": f"{collectors[0]}: {exc}"}
        return None
    labels = {"run_id": ctx.run_id, "service": service, "workload": workload}
    return LoadTelemetry(
        collector.http, ctx.stack.service(collectors[0]).endpoints["otlp_http"], labels
    )


async def run_request(ctx: CheckContext[StackView], request: LoadRequest, chosen: Workload) -> str:
    name = request.service
    if request.disruptive(chosen):
        ctx.require_disruption(name)
    targets = slo_of(ctx, name, chosen.name)
    ctx.evidence.update(service=name, kind=ctx.stack.service(name).kind, workload=chosen.name)
    hooks = list(request.on_tick)
    telemetry = await _telemetry(ctx, name, chosen.name) if request.telemetry else None
    if telemetry is not None:
        await telemetry.start(request.rate)
        hooks.append(telemetry.tick)

    def on_tick(tick: Tick) -> None:
        for hook in hooks:
            hook(tick)

    try:
        if request.workers:
            timeline = await run_distributed(ctx, request, chosen, on_tick)
        else:
            target = await target_context(ctx, name)
            lanes = await asyncio.wait_for(
                chosen.prepare(target, request.concurrency), SETUP_TIMEOUT
            )
            ctx.evidence.update(target.evidence)
            timeline = await run_load(lanes, request.profile, on_tick=on_tick)
    finally:
        if telemetry is not None:
            ctx.evidence["telemetry"] = {"exported": True, **await telemetry.close()}
    analysis = analyse(timeline, request.profile, targets)
    ctx.evidence.update(analysis.evidence)
    if request.workers:
        ctx.evidence["workers"] = _workers(timeline, request)
    found: list[str] = []
    if request.compare_document is not None and request.compare is not None:
        found, table = regressions(request.compare_document, analysis.overall, request.threshold)
        ctx.evidence["baseline"] = {
            "file": str(request.compare),
            "regressions": found,
            "comparison": table,
        }
    if request.save_baseline is not None:
        document = baseline_document(
            service=name,
            kind=ctx.evidence["kind"],
            workload=chosen.name,
            evidence=analysis.evidence,
            run_id=ctx.run_id,
            version=__version__,
        )
        save_baseline(request.save_baseline, document)
        ctx.evidence["baseline_saved"] = str(request.save_baseline)
    lost = ctx.evidence.get("lost_workers") or {}
    if lost:
        raise ServiceError(
            f"{len(lost)} of {request.workers} worker(s) lost mid-run ("
            + "; ".join(f"{k}: {v}" for k, v in lost.items())
            + f"): the load was not applied as asked; what they sent is kept: {headline(analysis, request.profile)}"
        )
    return verdict(analysis, request.profile, found)


def _workers(timeline: Timeline, request: LoadRequest) -> dict[str, Any]:
    lost = [g.name for g in timeline.generators if not g.complete]
    return {"expected": request.workers, "reported": len(timeline.generators), "lost": lost}


def headline(analysis: Analysis, profile: Profile) -> str:
    o = analysis.overall
    rate = f"{o['rate']:g} ops/s" + (f" of {profile.rate:g}" if profile.rate else " (max)")
    return (
        f"{rate}, p50 {o['p50_ms']:g} / p90 {o['p90_ms']:g} / p99 {o['p99_ms']:g} / "
        f"p99.9 {o['p999_ms']:g} / max {o['max_ms']:g} ms, errors {o['errors']} ({o['error_rate']:.2%})"
    )


def verdict(analysis: Analysis, profile: Profile, found: list[str]) -> str:
    """The message, or the exception that makes the outcome (see the module docstring)."""
    head = headline(analysis, profile)
    gen = analysis.generator
    if analysis.slo_passed is False:
        breaches = "; ".join(analysis.breaches[:5])
        if gen.bound and analysis.service_slo_passed is not False:
            raise GeneratorBound(
                f"generator-bound ({gen.reason}): the SLO breach ({breaches}) may be the "
                f"generator's own, service time alone meets the SLO; {head}"
            )
        raise CheckFailed(f"SLO breached: {breaches}; {head}")
    if gen.bound and analysis.rate_short:
        raise GeneratorBound(
            f"generator-bound ({gen.reason}): the rate asked for was not reached; {head}"
        )
    if analysis.rate_short:
        raise CheckFailed(
            f"achieved rate below the target by more than {engine.RATE_TOLERANCE:.0%}: {head}"
        )
    if found:
        raise CheckFailed(f"regression against the baseline: {'; '.join(found)}; {head}")
    notes = []
    if analysis.slo_passed:
        notes.append(f"SLO met in all {len(analysis.evidence['windows'])} window(s)")
    if gen.bound:
        notes.append(f"generator-bound ({gen.reason}): figures are upper bounds")
    elif gen.limited_by == "concurrency":
        notes.append(f"concurrency-bound: {gen.reason}")
    return "; ".join([head, *notes])


class GeneratorBound(ServiceError):
    """The generator, not the service, was the bottleneck: the check could not measure (error)."""


# --- in every run: the SLOs under a short, low load -----------------------------------------


@STACK.check(
    "load",
    title=f"every service with an slo: meets it under {SMOKE_OPS} operations at a low rate",
    name="slo_smoke",
    timeout=SMOKE_OPS / 100 + engine.DRAIN_S + SETUP_TIMEOUT,
    exclusive=True,  # alone, after the other checks: their work would be in its latency
)
async def check_slo_smoke(ctx: CheckContext[StackView]) -> str:
    names = [
        n
        for n in ctx.client.members
        if ctx.stack.service(n).slo is not None and workloads_of(ctx.stack.service(n).kind)
    ]
    if not names:
        raise CheckSkipped("no service declares slo: (see stackprobe load SERVICE)")

    async def one(name: str) -> tuple[str, Analysis]:
        chosen = find_workload(name, ctx.stack.service(name).kind, None)
        rate = min(chosen.low_rate, SMOKE_MAX_RATE)
        profile = Profile(rate, SMOKE_OPS / rate, SMOKE_CONCURRENCY)
        target = await target_context(ctx, name)
        lanes = await asyncio.wait_for(chosen.prepare(target, profile.concurrency), SETUP_TIMEOUT)
        timeline = await run_load(lanes, profile)
        return chosen.name, analyse(timeline, profile, slo_of(ctx, name, chosen.name))

    done = await asyncio.gather(*(one(n) for n in names))
    ctx.evidence["services"] = {
        name: {
            "workload": workload,
            "profile": a.evidence["profile"],
            "overall": a.overall,
            "slo": a.evidence["slo"],
            "generator_bound": a.generator.bound,
        }
        for name, (workload, a) in zip(names, done, strict=True)
    }
    breached = [
        f"{name} ({workload}): {'; '.join(a.breaches[:3])}"
        for name, (workload, a) in zip(names, done, strict=True)
        if a.slo_passed is False
    ]
    if breached:
        raise CheckFailed(f"SLO breached under a low load: {' | '.join(breached)}")
    return (
        "; ".join(
            f"{name} {workload}: {a.overall['rate']:g} ops/s, p99 {a.overall['p99_ms']:g} ms, "
            f"errors {a.overall['errors']}"
            for name, (workload, a) in zip(names, done, strict=True)
        )
        + " (SLO met)"
    )
