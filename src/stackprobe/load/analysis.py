"""From a timeline to the figures a person reads: percentiles, rates, errors, windows, the
SLO verdict and whether the generator (not the service) was the bottleneck (the rule is in
`stackprobe.load.engine`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stackprobe.config import SloTargets
from stackprobe.load import engine
from stackprobe.load.engine import Profile
from stackprobe.load.histogram import Histogram, merged
from stackprobe.load.slo import judge, targets_json, window_s
from stackprobe.load.timeline import Timeline

TOP_ERROR_KINDS = 10
OPEN_LOOP = "open-loop constant rate"
CLOSED_LOOP = "closed-loop maximum throughput"


def figures(hist: Histogram, ops: int, errors: int, seconds: float) -> dict[str, Any]:
    attempts = ops + errors
    return {
        **{k: v for k, v in hist.summary().items() if k != "count"},
        "ops": ops,
        "errors": errors,
        "attempts": attempts,
        "error_rate": round(errors / attempts, 6) if attempts else 0.0,
        "rate": round(attempts / seconds, 1) if seconds > 0 else 0.0,
    }


@dataclass(frozen=True)
class GeneratorView:
    bound: bool
    limited_by: str | None  # "generator", "concurrency" or None
    reason: str
    evidence: dict[str, Any]


def generator_view(timeline: Timeline, p99_ms: float, profile: Profile) -> GeneratorView:
    """The engine's rule, applied to every generator process (any bound one binds the run)."""
    reasons: list[str] = []
    per: list[dict[str, Any]] = []
    queued = issued = 0
    for gen in timeline.generators:
        lag = Histogram.decode(gen.lag)
        lag_p99 = lag.value_ms(99.0)
        share = gen.busy_share
        queued += gen.queued
        issued += gen.issued
        bound = []
        if share >= engine.CPU_LIMIT:
            on_cpu = max(0.0, share - gen.runqueue_s / gen.wall_s)
            bound.append(
                f"{gen.name} was busy {share:.0%} of the time ({on_cpu:.0%} on a CPU, "
                f"{share - on_cpu:.0%} waiting for one; limit {engine.CPU_LIMIT:.0%})"
            )
        if lag_p99 > engine.LAG_FLOOR_MS and lag_p99 > engine.LAG_SHARE * p99_ms:
            bound.append(
                f"{gen.name} started 1 % of operations more than {lag_p99:g} ms late "
                f"({lag_p99 / p99_ms:.0%} of the p99 it measured)"
                if p99_ms
                else f"{gen.name} started 1 % of operations more than {lag_p99:g} ms late"
            )
        reasons += bound
        per.append(
            {
                "name": gen.name,
                "busy_share": round(share, 3),
                "cpu_share": round(gen.cpu_share, 3),
                "runqueue_share": round(gen.runqueue_s / gen.wall_s, 3) if gen.wall_s else 0.0,
                "lag_p99_ms": lag_p99,
                "lag_max_ms": lag.summary()["max_ms"],
                "issued": gen.issued,
                "queued": gen.queued,
                "unfinished": gen.unfinished,
                "service_time": {
                    k: v
                    for k, v in Histogram.decode(gen.service_time).summary().items()
                    if k in ("p50_ms", "p99_ms", "max_ms")
                },
                "complete": gen.complete,
                "bound": bool(bound),
            }
        )
    queued_share = queued / issued if issued else 0.0
    limited_by = "generator" if reasons else None
    reason = "; ".join(reasons)
    if not reasons and profile.rate and queued_share > engine.QUEUED_SHARE:
        limited_by = "concurrency"
        reason = (
            f"{queued_share:.1%} of operations waited for a free lane: the service's latency "
            f"at {profile.rate:g} ops/s needs more than --concurrency {profile.concurrency} "
            "(that wait is counted in the latency)"
        )
    evidence = {
        "bound": bool(reasons),
        "limited_by": limited_by,
        "reason": reason or None,
        "rule": (
            f"bound when a generator's thread is busy (on a CPU or waiting for one) ≥ "
            f"{engine.CPU_LIMIT:.0%} of the time, or its p99 schedule lag is > "
            f"{engine.LAG_FLOOR_MS:g} ms and > {engine.LAG_SHARE:.0%} of the p99 latency"
        ),
        "queued": queued,
        "queued_share": round(queued_share, 4),
        "processes": per,
    }
    return GeneratorView(bool(reasons), limited_by, reason, evidence)


@dataclass(frozen=True)
class Analysis:
    evidence: dict[str, Any]
    overall: dict[str, Any]
    slo_passed: bool | None  # None: no slo
    breaches: list[str]  # "window 2 (10-20 s): p99_ms ≤ 5: saw 7.1" and "overall: ..."
    generator: GeneratorView
    rate_short: bool  # open loop: achieved below the target by more than the tolerance
    # the SLO judged on service time (send to answer, no generator lag, no queueing): when it
    # is breached there too, the service is too slow however the generator behaved
    service_slo_passed: bool | None


def analyse(timeline: Timeline, profile: Profile, targets: SloTargets | None) -> Analysis:
    elapsed = max((g.wall_s for g in timeline.generators), default=profile.duration)
    elapsed = max(elapsed, 1e-9)
    total = timeline.histogram()
    ops, errors, kinds = timeline.counts()
    overall = figures(total, ops, errors, elapsed)
    overall["duration_s"] = round(elapsed, 3)
    overall["target_rate"] = profile.rate
    if profile.rate:
        overall["achieved_ratio"] = round(overall["rate"] / profile.rate, 4)
    seconds = []
    for i in range(timeline.length_s):
        s = timeline.seconds.get(i)
        length = min(1.0, elapsed - i) if i == timeline.length_s - 1 else 1.0
        hist = Histogram.decode(s.latency) if s else Histogram()
        summary = hist.summary()
        attempts = (s.ops + s.errors) if s else 0
        seconds.append(
            {
                "t": i,
                "rate": round(attempts / max(length, 1e-3), 1),
                "errors": s.errors if s else 0,
                "p50_ms": summary["p50_ms"],
                "p99_ms": summary["p99_ms"],
            }
        )
    window = window_s(targets)
    windows: list[dict[str, Any]] = []
    breaches: list[str] = []
    for start, end in timeline.windows(window, elapsed):
        last = end >= elapsed  # the last window also takes what completed after `elapsed`
        upto = None if last else end
        w_ops, w_errors, _ = timeline.counts(start, upto)
        span = max(1e-3, end - start)
        w = figures(timeline.histogram(start, upto), w_ops, w_errors, span)
        verdict = judge(targets, w)
        w.update(start_s=start, end_s=round(start + span, 3), passed=verdict.passed)
        w["breaches"] = verdict.breaches
        breaches += [
            f"window {len(windows) + 1} ({start}-{w['end_s']:g} s): {b}" for b in verdict.breaches
        ]
        windows.append(w)
    whole = judge(targets, overall)
    breaches += [f"overall: {b}" for b in whole.breaches]
    slo_passed = None if targets is None else not breaches
    generator = generator_view(timeline, float(overall["p99_ms"]), profile)
    service = merged([g.service_time for g in timeline.generators])
    service_figures = figures(service, ops, errors, elapsed)
    service_slo = judge(targets, service_figures) if targets is not None else None
    rate_short = bool(profile.rate and overall["rate"] < profile.rate * (1 - engine.RATE_TOLERANCE))
    evidence = {
        "mode": OPEN_LOOP if profile.rate else CLOSED_LOOP,
        "profile": {
            "rate": profile.rate,
            "duration_s": profile.duration,
            "concurrency": profile.concurrency,
        },
        "overall": overall,
        "error_kinds": dict(kinds.most_common(TOP_ERROR_KINDS)),
        "slo": {
            "targets": targets_json(targets),
            "window_s": window,
            "passed": slo_passed,
            "breaches": breaches,
        },
        "windows": windows,
        "seconds": seconds,
        "generator": generator.evidence,
        "service_time": {k: v for k, v in service_figures.items() if k.endswith("_ms")},
        "histogram": total.encode(),
    }
    return Analysis(
        evidence,
        overall,
        slo_passed,
        breaches,
        generator,
        rate_short,
        None if service_slo is None else service_slo.passed,
    )
