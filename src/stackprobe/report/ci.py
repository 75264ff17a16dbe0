"""What CI shows: the verdict and the failures for $GITHUB_STEP_SUMMARY, and the failures
grouped per service with a rerun command, at the end of the text report when CI=true."""

from __future__ import annotations

from stackprobe.check import Outcome
from stackprobe.report.matrix import md_escape
from stackprobe.results import CheckResult, RunResult


def _failing(result: RunResult) -> dict[str, list[CheckResult]]:
    by: dict[str, list[CheckResult]] = {}
    for r in result.results:
        if r.counts_as_failure or r.outcome is Outcome.FAILED:
            by.setdefault(r.service, []).append(r)
    return by


def _rerun(stack_arg: str, r: CheckResult) -> str:
    where = f" {stack_arg}" if stack_arg else ""
    return f"stackprobe run{where} --service {r.service} --capability {r.capability}"


def failures_by_service(result: RunResult, stack_arg: str) -> str:
    by = _failing(result)
    if not by:
        return ""
    lines = ["", f"failures by service ({sum(len(v) for v in by.values())}):"]
    for service, rows in by.items():
        lines.append(f"  {service} ({rows[0].kind}):")
        for r in rows:
            lines.append(f"    {r.outcome.value}: {r.check}: {r.message}")
        for command in dict.fromkeys(_rerun(stack_arg, r) for r in rows):
            lines.append(f"    rerun: {command}")
    return "\n".join(lines) + "\n"


def step_summary(result: RunResult, stack_arg: str) -> str:
    """Markdown appended to a GitHub Actions job summary: the verdict, then each failure."""
    s = result.summary
    status = "interrupted" if result.interrupted else ("FAILED" if result.exit_code else "OK")
    icon = "✅" if status == "OK" else "❌"
    lines = [
        f"### {icon} stackprobe {status}: {md_escape(result.stack)}",
        "",
        f"{s.passed} passed · {s.failed} failed · {s.error} error · {s.skipped} skipped · "
        f"coverage {result.coverage.percent:g}% · run `{result.run_id}`",
        "",
    ]
    by = _failing(result)
    if by:
        lines += ["| service | check | outcome | cause | rerun |", "|---|---|---|---|---|"]
        lines += [
            f"| {md_escape(r.service)} | `{r.check}` | {r.outcome.value} | {md_escape(r.message)} | `{_rerun(stack_arg, r)}` |"
            for rows in by.values()
            for r in rows
        ]
        lines.append("")
    return "\n".join(lines) + "\n"
