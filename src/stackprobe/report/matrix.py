"""The coverage matrix and its gaps, rendered the same way by `stackprobe coverage`, the HTML and
Markdown reports and the pytest plugin's terminal summary.

Rows are services, cells their kind's capabilities, each showing the best outcome seen
(passed > failed > error > skipped > not run). A gap is a cell that is not `passed`; each gap
says what to run to close it and, when a check failed, what it saw.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from stackprobe.catalog import known_kinds
from stackprobe.check import Outcome, Severity
from stackprobe.coverage import NOT_RUN
from stackprobe.results import CheckResult, RunResult

CELLS = ("passed", "failed", "error", "skipped", NOT_RUN)
CELL_STYLES = {
    "passed": "green",
    "failed": "bold red",
    "error": "bold magenta",
    "skipped": "yellow",
    NOT_RUN: "dim",
}
MARKDOWN_CELLS = {
    "passed": "✅ passed",
    "failed": "❌ failed",
    "error": "💥 error",
    "skipped": "⏭️ skipped",
    NOT_RUN: "➖ not run",
}
SANDBOX_STACK = "sandbox"  # the stack name `stackprobe sandbox up` writes


@dataclass(frozen=True)
class Gap:
    """One capability of one service that the run did not prove, and how to close it."""

    service: str
    kind: str
    capability: str
    cell: str
    command: str | None  # None when no built-in check proves the capability yet
    detail: str


def stack_arg_for(result: RunResult, config: str | None = None) -> str:
    """How a command names the stack of `result`: `-c FILE` when known, else a placeholder."""
    if config:
        return f"-c {config}"
    if result.stack == SANDBOX_STACK:
        return "--sandbox"
    return "-c <stack file>"


def counts(result: RunResult) -> tuple[int, int]:
    """(covered, total) capabilities over every service of the matrix."""
    cells = [c for s in result.coverage.services.values() for c in s.capabilities.values()]
    return sum(1 for c in cells if c == "passed"), len(cells)


def gaps(result: RunResult, stack_arg: str | None = None) -> list[Gap]:
    """Every cell that is not `passed`, in matrix order, with what to run to close it."""
    stack_arg = stack_arg or stack_arg_for(result)
    kinds = known_kinds()
    found: list[Gap] = []
    for service, cov in result.coverage.services.items():
        for capability, cell in cov.capabilities.items():
            if cell == "passed":
                continue
            command: str | None = (
                f"stackprobe run {stack_arg} --service {service} --capability {capability}"
            )
            kind = kinds.get(cov.kind)
            seen = _worst(result.results, service, capability)
            if seen is not None:
                detail = f"{seen.check}: {seen.message}" if seen.message else seen.check
                if seen.outcome is Outcome.FAILED and seen.severity is Severity.WARNING:
                    detail = f"warning: {detail}"
                if seen.outcome is Outcome.SKIPPED and "--allow-disruption" in seen.message:
                    command = f"{command} --allow-disruption"
            elif kind is not None and not any(c.capability == capability for c in kind.checks):
                command = None
                detail = (
                    "no built-in check proves it yet: mark a pytest test with "
                    f'@pytest.mark.stackprobe(kind="{cov.kind}", capability="{capability}")'
                )
            else:
                detail = "no check of it ran"
            found.append(Gap(service, cov.kind, capability, cell, command, detail))
    return found


def _worst(results: list[CheckResult], service: str, capability: str) -> CheckResult | None:
    """The result that explains a gap: an error-severity failure first, then any failure."""
    rank = {Outcome.FAILED: 0, Outcome.ERROR: 1, Outcome.SKIPPED: 2, Outcome.PASSED: 3}
    mine = [
        r
        for r in results
        if r.service == service and r.capability == capability and r.outcome is not Outcome.PASSED
    ]
    mine.sort(key=lambda r: (rank[r.outcome], r.severity is not Severity.ERROR))
    return mine[0] if mine else None


def kind_groups(result: RunResult) -> list[tuple[str, list[str]]]:
    """(kind, [service, ...]) in the order services appear, one group per kind."""
    groups: dict[str, list[str]] = {}
    for name, cov in result.coverage.services.items():
        groups.setdefault(cov.kind, []).append(name)
    return list(groups.items())


# --- text (rich) ------------------------------------------------------------------------------


def build_matrix(result: RunResult, stack_arg: str | None = None) -> Group:
    """The matrix as rich renderables: one table per kind, then the gaps."""
    covered, total = counts(result)
    parts: list[Table | Text] = [
        Text.assemble(
            ("coverage ", "bold"),
            (f"{result.coverage.percent:g}%", "bold"),
            f" ({covered}/{total} capabilities) · stack {result.stack} · run {result.run_id}",
        )
    ]
    for kind, names in kind_groups(result):
        caps = list(result.coverage.services[names[0]].capabilities)
        table = Table(expand=False)
        table.add_column(kind, no_wrap=True, style="bold")
        for cap in caps:
            table.add_column(cap, no_wrap=True)
        table.add_column("coverage", justify="right", no_wrap=True)
        for name in names:
            cov = result.coverage.services[name]
            cells = [Text(cov.capabilities.get(cap, NOT_RUN)) for cap in caps]
            for cell in cells:
                cell.stylize(CELL_STYLES.get(cell.plain, ""))
            table.add_row(name, *cells, f"{cov.percent:g}%")
        parts.append(table)
    found = gaps(result, stack_arg)
    if found:
        parts.append(Text(f"gaps ({len(found)}): what to run to close them", style="bold"))
        for gap in found:
            parts.append(
                Text.assemble(
                    f"  {gap.service} {gap.capability} ",
                    (gap.cell, CELL_STYLES[gap.cell]),
                    f": {gap.detail}",
                )
            )
            if gap.command:
                parts.append(Text(f"    {gap.command}"))
    else:
        parts.append(Text("no gaps: every capability of every service passed", style="green"))
    return Group(*parts)


def render_matrix_text(
    result: RunResult, color: bool = False, width: int = 120, stack_arg: str | None = None
) -> str:
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=max(width, _needed_width(result)), color_system="standard" if color else None,
        force_terminal=color, no_color=not color, highlight=False, soft_wrap=True,
    )  # fmt: skip
    console.print(build_matrix(result, stack_arg))
    return buffer.getvalue()


def _needed_width(result: RunResult) -> int:
    """Wide enough that no matrix table has to crush a capability name or a cell."""
    widest = 0
    for kind, names in kind_groups(result):
        caps = list(result.coverage.services[names[0]].capabilities)
        columns = [max(len(kind), *(len(n) for n in names)), *(max(len(c), 7) for c in caps), 8]
        widest = max(widest, sum(w + 3 for w in columns) + 1)
    return widest


# --- json -------------------------------------------------------------------------------------


def render_matrix_json(result: RunResult, stack_arg: str | None = None) -> str:
    covered, total = counts(result)
    doc = {
        "run_id": result.run_id,
        "stack": result.stack,
        "percent": result.coverage.percent,
        "covered": covered,
        "total": total,
        "services": {name: cov.model_dump() for name, cov in result.coverage.services.items()},
        "gaps": [asdict(g) for g in gaps(result, stack_arg)],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# --- markdown ---------------------------------------------------------------------------------


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def render_matrix_markdown(
    result: RunResult, stack_arg: str | None = None, heading: str = "##"
) -> str:
    covered, total = counts(result)
    lines = [
        f"{heading} Coverage {result.coverage.percent:g}% ({covered}/{total} capabilities)",
        "",
    ]
    for kind, names in kind_groups(result):
        caps = list(result.coverage.services[names[0]].capabilities)
        lines.append(f"| {kind} | " + " | ".join(f"`{c}`" for c in caps) + " | coverage |")
        lines.append("|---|" + "---|" * len(caps) + "---:|")
        for name in names:
            cov = result.coverage.services[name]
            cells = [MARKDOWN_CELLS.get(cov.capabilities.get(c, NOT_RUN), "?") for c in caps]
            lines.append(f"| **{name}** | " + " | ".join(cells) + f" | {cov.percent:g}% |")
        lines.append("")
    found = gaps(result, stack_arg)
    if found:
        lines += [f"{heading}# Gaps ({len(found)})", ""]
        for gap in found:
            lines.append(
                f"- **{gap.service}** `{gap.capability}` {MARKDOWN_CELLS[gap.cell]}: "
                f"{md_escape(gap.detail)}"
            )
            if gap.command:
                lines.append(f"  `{gap.command}`")
        lines.append("")
    return "\n".join(lines)
