"""`stackprobe clean`: remove what killed runs left behind, service by service.

Each kind's `sweep` removes only names that carry a run prefix whose run started before the
cutoff (DESIGN rule 2); a service that cannot be cleaned is reported and the others still run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stackprobe.catalog import known_kinds
from stackprobe.config import Stack
from stackprobe.connect import open_service
from stackprobe.explain import explain
from stackprobe.kinds import Kind
from stackprobe.redact import Redactor

SWEEP_TIMEOUT = 60.0


@dataclass
class Swept:
    """What one service's sweep removed, or why it could not run."""

    service: str
    removed: list[str] = field(default_factory=list)
    problem: str | None = None


async def sweep(
    stack: Stack,
    cutoff: datetime,
    kinds: Mapping[str, Kind[Any]] | None = None,
    timeout: float = SWEEP_TIMEOUT,
) -> list[Swept]:
    """Sweep every service whose kind can (one after another, each bounded by `timeout`)."""
    kinds = kinds if kinds is not None else known_kinds()
    redactor = Redactor(stack.secrets())
    report: list[Swept] = []
    for name, svc in stack.services.items():
        kind = kinds[svc.kind]
        if kind.sweep is None:
            continue
        try:
            async with asyncio.timeout(timeout):
                async with open_service(stack, name, kinds=kinds) as opened:
                    removed = await kind.sweep(opened.client, opened.target, cutoff)
        except Exception as exc:  # noqa: BLE001 - reported per service, the others still run
            report.append(Swept(name, problem=redactor.text(explain(exc))))
            continue
        report.append(Swept(name, removed=removed))
    return report
