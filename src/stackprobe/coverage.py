"""Coverage: configured services x their kinds' capabilities, marked by a run's outcomes.

A capability is covered when at least one of its checks passed. A cell shows the best outcome
seen: passed > failed > error > skipped > not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from stackprobe.results import Cell, CheckResult, Coverage, ServiceCoverage

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
