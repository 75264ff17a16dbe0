"""SLO verdicts: every bound of a service's `slo:` checked in every window and over the run.

A breach in any window fails the verdict, even when the whole run meets the bound (a spike
that an average hides is still a spike). A window with no completed operation breaches every
latency bound it has (the service answered nothing) and `min_rate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stackprobe.config import SloTargets
from stackprobe.durations import parse_duration

DEFAULT_WINDOW_S = 10
LATENCY_BOUNDS = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")


def window_s(targets: SloTargets | None) -> int:
    if targets is None or targets.window is None:
        return DEFAULT_WINDOW_S
    return int(parse_duration(targets.window))


@dataclass
class Verdict:
    passed: bool = True
    breaches: list[str] = field(default_factory=list)


def judge(targets: SloTargets | None, figures: dict[str, Any]) -> Verdict:
    """Compare one window's (or the run's) figures with the bounds; each breach in one line
    saying the bound and what was seen."""
    verdict = Verdict()
    if targets is None:
        return verdict
    completed = int(figures.get("ops", 0))
    for bound in LATENCY_BOUNDS:
        limit = getattr(targets, bound)
        if limit is None:
            continue
        seen = figures.get(bound)
        if completed == 0:
            verdict.breaches.append(f"{bound} ≤ {limit:g}: no operation completed")
        elif seen is not None and float(seen) > limit:
            verdict.breaches.append(f"{bound} ≤ {limit:g}: saw {float(seen):g}")
    if targets.error_rate is not None and float(figures.get("error_rate", 0)) > targets.error_rate:
        verdict.breaches.append(
            f"error_rate ≤ {targets.error_rate:g}: saw {float(figures['error_rate']):.4g} "
            f"({figures.get('errors', 0)} of {figures.get('attempts', 0)})"
        )
    if targets.min_rate is not None and float(figures.get("rate", 0)) < targets.min_rate:
        verdict.breaches.append(
            f"min_rate ≥ {targets.min_rate:g} ops/s: saw {float(figures.get('rate', 0)):g}"
        )
    verdict.passed = not verdict.breaches
    return verdict


def targets_json(targets: SloTargets | None) -> dict[str, Any] | None:
    if targets is None:
        return None
    return {k: v for k, v in targets.model_dump().items() if v is not None}
