"""Coverage: configured services x their kinds' capabilities, marked by a run's outcomes.

A capability is covered when at least one of its checks passed. A cell shows the best outcome
seen: passed > failed > error > skipped > not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from stackprobe import __version__
from stackprobe.results import (
    Cell,
    CheckResult,
    Coverage,
    RunResult,
    ServiceCoverage,
    ServiceInfo,
    summarize,
)

NOT_RUN: Cell = "not run"
_RANK = {"passed": 4, "failed": 3, "error": 2, "skipped": 1, NOT_RUN: 0}


def compute(
    services: Mapping[str, tuple[str, tuple[str, ...]]], results: Iterable[CheckResult]
) -> Coverage:
    """`services` maps service name -> (kind, capabilities) for the selected services."""
    cells: dict[str, dict[str, Cell]] = {
        name: dict.fromkeys(caps, NOT_RUN) for name, (_, caps) in services.items()
    }
    for result in results:
        row = cells.get(result.service)
        if row is None or result.capability not in row:
            continue
        seen: Cell = result.outcome.value
        if _RANK[seen] > _RANK[row[result.capability]]:
            row[result.capability] = seen
    per_service = {}
    total = covered = 0
    for name, row in cells.items():
        passed = sum(1 for v in row.values() if v == "passed")
        total += len(row)
        covered += passed
        per_service[name] = ServiceCoverage(
            kind=services[name][0], percent=_pct(passed, len(row)), capabilities=row
        )
    return Coverage(percent=_pct(covered, total), services=per_service)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def run_result(
    *,
    run_id: str,
    stack: str,
    started_at: str,
    services: Mapping[str, tuple[str, tuple[str, ...]]],
    versions: Mapping[str, str | None],
    duration_s: float,
    results: list[CheckResult],
    interrupted: bool = False,
) -> RunResult:
    """The one way a RunResult is put together (runner and pytest plugin): summary and coverage
    computed from the results, every service with its kind and version."""
    return RunResult(
        stackprobe=__version__,
        run_id=run_id,
        stack=stack,
        started_at=started_at,
        services={
            name: ServiceInfo(kind=kind, version=versions.get(name))
            for name, (kind, _) in services.items()
        },
        duration_s=duration_s,
        summary=summarize(results),
        results=results,
        coverage=compute(services, results),
        interrupted=interrupted,
    )
