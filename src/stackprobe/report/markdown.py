"""Markdown for pull-request comments: verdict, failures first, the coverage matrix, details folded.

GitHub-flavoured: tables, `<details>` blocks and fenced JSON for evidence.
"""

from __future__ import annotations

import json

from stackprobe.check import Outcome, Severity
from stackprobe.report.hops import hop_rows
from stackprobe.report.matrix import md_escape, render_matrix_markdown, stack_arg_for
from stackprobe.results import CheckResult, RunResult

ICONS = {
    "passed": "✅",
    "failed": "❌",
    "warning": "⚠️",
    "error": "💥",
    "skipped": "⏭️",
}
_ORDER = {"failed": 0, "error": 1, "warning": 2, "skipped": 3, "passed": 4}


def _label(r: CheckResult) -> str:
    if r.outcome is Outcome.FAILED and r.severity is Severity.WARNING:
        return "warning"
    return r.outcome.value


def render_markdown(result: RunResult, color: bool = False) -> str:
    del color
    s = result.summary
    status = "interrupted" if result.interrupted else ("FAILED" if result.exit_code else "OK")
    icon = "✅" if status == "OK" else "❌"
    stack_arg = stack_arg_for(result)
    lines = [
        f"## {icon} stackprobe {status}: {md_escape(result.stack)}",
        "",
        f"**{s.passed} passed · {s.failed} failed · {s.error} error · {s.skipped} skipped** · "
        f"coverage **{result.coverage.percent:g}%** · run `{result.run_id}` · "
        f"{result.duration_s:.1f} s",
        "",
    ]
    bad = sorted(
        (r for r in result.results if r.outcome in (Outcome.FAILED, Outcome.ERROR)),
        key=lambda r: _ORDER[_label(r)],
    )
    if bad:
        lines += [
            f"### Failures and errors ({len(bad)})",
            "",
            "| | service | check | message |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {ICONS[_label(r)]} {_label(r)} | {md_escape(r.service)} | `{r.check}` | "
            f"{md_escape(r.message)} |"
            for r in bad
        ]
        lines += ["", "<details><summary>Evidence and rerun commands</summary>", ""]
        for r in bad:
            lines += [
                f"**`{r.check}`** on **{md_escape(r.service)}**: "
                f"`stackprobe run {stack_arg} --service {r.service} --capability {r.capability}`",
                "",
                "```json",
                json.dumps(r.evidence, indent=2, sort_keys=True, ensure_ascii=False),
                "```",
                "",
            ]
        lines += ["</details>", ""]
    for name, info in result.services.items():
        if info.logs is not None:
            lines += [
                f"<details><summary>Last {len(info.logs.lines)} lines of the log of {md_escape(name)} "
                f"({md_escape(info.logs.source)})</summary>",
                "",
                "```",
                *(line.replace("```", "` ` `") for line in info.logs.lines),
                "```",
                "",
                "</details>",
                "",
            ]
    for r in (r for r in result.results if hop_rows(r)):
        lines += [f"### Hops of `{r.check}`", "", "| hop | service | status | latency | message |",
                  "|---|---|---|---:|---|"]  # fmt: skip
        lines += [
            f"| {h.hop} | {md_escape(h.service)} | {ICONS.get(h.status, '')} {h.status} | "
            f"{h.latency} | {md_escape(h.message)} |"
            for h in hop_rows(r)
        ]
        lines.append("")
    lines.append(render_matrix_markdown(result, stack_arg, heading="###"))
    lines += [
        f"<details><summary>All {len(result.results)} results</summary>",
        "",
        "| | service | check | time | message |",
        "|---|---|---|---:|---|",
    ]
    for r in sorted(result.results, key=lambda r: (_ORDER[_label(r)], r.service, r.check)):
        lines.append(
            f"| {ICONS[_label(r)]} {_label(r)} | {md_escape(r.service)} | `{r.check}` | "
            f"{r.duration_s:.2f} s | {md_escape(r.message)} |"
        )
    lines += ["", "</details>", "", "| service | kind | version |", "|---|---|---|"]
    for name, info in result.services.items():
        lines.append(
            f"| {md_escape(name)} | {info.kind} | {md_escape(info.version or 'unknown')} |"
        )
    lines.append("")
    return "\n".join(lines)
