"""The hops of an end-to-end flow (a check whose evidence has `hops`), as every report shows
them: hop, service, status, latency and what it saw, in the flow's order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stackprobe.results import CheckResult


@dataclass(frozen=True)
class HopRow:
    hop: str
    service: str
    status: str
    latency: str  # "12.3 ms", or "-"
    message: str


def hop_rows(result: CheckResult) -> list[HopRow]:
    """The flow's hops of `result`, or [] when it is not a flow."""
    hops = result.evidence.get("hops")
    if not isinstance(hops, list):
        return []
    rows = []
    for hop in hops:
        if not isinstance(hop, dict):
            continue
        latency: Any = hop.get("latency_ms")
        rows.append(
            HopRow(
                hop=str(hop.get("hop", "?")),
                service=str(hop.get("service") or "-"),
                status=str(hop.get("status", "?")),
                latency=f"{latency:g} ms" if isinstance(latency, int | float) else "-",
                message=str(hop.get("message", "")),
            )
        )
    return rows


def hop_lines(result: CheckResult) -> list[str]:
    """Plain lines, one per hop (JUnit's text, logs)."""
    return [
        f"{r.hop:<10} {r.status:<7} {r.latency:>12}  {r.service}: {r.message}"
        for r in hop_rows(result)
    ]
