"""The human report: one table per service with outcome, duration and message, then a summary."""

from __future__ import annotations

import io
import shutil

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from stackprobe.check import Outcome, Severity
from stackprobe.report.hops import hop_rows
from stackprobe.report.scenarios import text_parts
from stackprobe.results import CheckResult, RunResult

STYLES = {
    Outcome.PASSED: "green",
    Outcome.FAILED: "bold red",
    Outcome.ERROR: "bold magenta",
    Outcome.SKIPPED: "yellow",
}
WIDTH = 120  # files and pipes; a terminal uses its own width (at least 100)


def outcome_text(r: CheckResult) -> Text:
    label = r.outcome.value
    if r.outcome is Outcome.FAILED and r.severity is Severity.WARNING:
        return Text("warning", style="yellow")
    return Text(label, style=STYLES[r.outcome])


HOP_STYLES = {o.value: style for o, style in STYLES.items()}


def hop_table(r: CheckResult) -> Table:
    """The hops of a flow check, under its service's table."""
    table = Table(title=f"{r.check} hops", title_justify="left", expand=False, width=WIDTH)
    table.add_column("hop", no_wrap=True, width=10)
    table.add_column("service", no_wrap=True, width=14)
    table.add_column("status", no_wrap=True, width=7)
    table.add_column("latency", justify="right", no_wrap=True, width=11)
    table.add_column("message", overflow="fold", ratio=1)
    for h in hop_rows(r):
        table.add_row(
            Text(h.hop), Text(h.service), Text(h.status, style=HOP_STYLES.get(h.status, "")),
            h.latency, Text(h.message),
        )  # fmt: skip
    return table


def build(result: RunResult) -> Group:
    parts: list[Table | Text] = [
        Text.assemble(
            ("stackprobe ", "bold"),
            f"stack {result.stack} · run {result.run_id} · {result.duration_s:.1f} s",
        )
    ]
    check_width = max((len(r.check) for r in result.results), default=10)
    by_service: dict[str, list[CheckResult]] = {}
    for r in result.results:  # first-seen order; skipped results come last in the list
        by_service.setdefault(r.service, []).append(r)
    for service, rows in by_service.items():
        info = result.services.get(service)
        cov = result.coverage.services.get(service)
        kind = info.kind if info else "?"
        version = f" {info.version}" if info and info.version else ""
        caps = cov.capabilities if cov else {}
        covered = sum(1 for v in caps.values() if v == "passed")
        waited = f" · waited {info.waited_s:.1f} s" if info and info.waited_s is not None else ""
        title = f"{service} ({kind}{version}) · coverage {cov.percent if cov else 0:g}% ({covered}/{len(caps)}){waited}"
        table = Table(
            title=title, title_justify="left", title_style="bold", expand=False, width=WIDTH
        )
        table.add_column("check", no_wrap=True, width=check_width)
        table.add_column("outcome", no_wrap=True, width=7)
        table.add_column("time", justify="right", no_wrap=True, width=6)
        table.add_column("message", overflow="fold", ratio=1)
        for r in rows:
            # messages quote what services said: text, never rich markup ("[b'x']", "[/api]")
            table.add_row(Text(r.check), outcome_text(r), f"{r.duration_s:.2f}s", Text(r.message))
        parts.append(table)
        parts += [hop_table(r) for r in rows if hop_rows(r)]
        if info is not None and info.logs is not None:
            logs = info.logs
            parts.append(
                Text(
                    f"last {len(logs.lines)} lines of the log of {service} ({logs.source}):",
                    style="bold",
                )
            )
            parts.append(Text("\n".join(f"  {line}" for line in logs.lines)))
    parts += text_parts(result)
    s = result.summary
    status = "interrupted" if result.interrupted else ("FAILED" if result.exit_code else "OK")
    parts.append(
        Text.assemble(
            (status, "bold red" if result.exit_code else "bold green"),
            f"  {s.passed} passed, {s.failed} failed, {s.error} error, {s.skipped} skipped"
            f" · coverage {result.coverage.percent:g}%",
        )
    )
    return Group(*parts)


def render_text(result: RunResult, color: bool = False) -> str:
    buffer = io.StringIO()
    width = max(100, shutil.get_terminal_size((WIDTH, 24)).columns) if color else WIDTH
    console = Console(
        file=buffer, width=width, color_system="standard" if color else None,
        force_terminal=color, no_color=not color, highlight=False,
    )  # fmt: skip
    console.print(build(result))
    return buffer.getvalue()
