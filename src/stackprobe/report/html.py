"""One self-contained HTML file to share a run: no external assets, readable offline and printed.

Summary, the coverage matrix as a heatmap, failures first with their evidence and the command
that reruns them, the figures of each load result (latency percentiles against the SLO, the
rate and p99 over time, the SLO windows), results per service, check timings as an inline SVG
bar chart, and the versions of the stack. Styles are inline CSS; the only script opens every evidence block
before printing.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from stackprobe.check import Outcome, Severity
from stackprobe.coverage import NOT_RUN
from stackprobe.report.hops import hop_rows
from stackprobe.report.matrix import counts, gaps, kind_groups, stack_arg_for
from stackprobe.report.scenarios import html_section
from stackprobe.results import CheckResult, RunResult

COLORS = {  # (fill, text) per cell / outcome; also used by the SVG bars
    "passed": ("#c9ecd2", "#0f5323"),
    "failed": ("#f7c6c4", "#8a1512"),
    "warning": ("#fbe3b0", "#6b4500"),
    "error": ("#e6cdf3", "#5c1a7d"),
    "skipped": ("#f2ecc6", "#5c5200"),
    NOT_RUN: ("#e8e8e8", "#555555"),
}
BAR_COLORS = {
    "passed": "#2f9e50",
    "failed": "#d1302b",
    "warning": "#d98b00",
    "error": "#8e3bb8",
    "skipped": "#b3a600",
}
_ORDER = {"failed": 0, "error": 1, "warning": 2, "skipped": 3, "passed": 4}
MAX_BARS = 60

CSS = (
    """
:root { --fg: #1d2026; --muted: #5d6470; --line: #d9dce1; --bg: #ffffff; --panel: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system,
  "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 6px; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.meta { color: var(--muted); }
.status { display: inline-block; padding: 2px 10px; border-radius: 4px; font-weight: 700;
  color: #fff; vertical-align: middle; margin-left: 8px; font-size: 14px; }
.status.ok { background: #2f9e50; } .status.failed { background: #d1302b; }
.status.interrupted { background: #8e3bb8; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 8px 16px; min-width: 110px; }
.card b { display: block; font-size: 22px; }
.card span { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
table { border-collapse: collapse; margin: 6px 0 14px; }
th, td { border: 1px solid var(--line); padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
table.heat td.cell { text-align: center; font-weight: 600; min-width: 92px; }
table.heat th.svc { text-align: left; }
table.heat td.pct { text-align: right; font-variant-numeric: tabular-nums; font-weight: 700; }
"""
    + "".join(
        f".o-{name.replace(' ', '-')} {{ background: {fill}; color: {text}; }}\n"
        for name, (fill, text) in COLORS.items()
    )
    + """
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; border-radius: 3px;
  font-size: 12px; font-weight: 600; }
.pill { display: inline-block; padding: 0 7px; border-radius: 3px; font-weight: 600; font-size: 12px; }
table.results { width: 100%; }
table.results td.time { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.results td.check { white-space: nowrap; }
table.results td.outcome { width: 1%; white-space: nowrap; }
.title { color: var(--muted); font-size: 12px; }
.failure { border: 1px solid var(--line); border-left: 5px solid #d1302b; border-radius: 4px;
  padding: 8px 12px; margin: 10px 0; background: #fff; page-break-inside: avoid; }
.failure.error { border-left-color: #8e3bb8; } .failure.warning { border-left-color: #d98b00; }
.failure p { margin: 4px 0; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 4px; padding: 8px;
  margin: 6px 0; white-space: pre-wrap; word-break: break-word; }
details summary { cursor: pointer; color: var(--muted); }
.gaps li { margin: 3px 0; }
svg.load text { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 11px; fill: #1d2026; }
svg.load .axis { stroke: #9aa0a8; stroke-width: 1; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
svg.bars text { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 11px; fill: #1d2026; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
@media print {
  body { padding: 0; font-size: 11px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2 { page-break-after: avoid; }
  section { page-break-inside: auto; }
  table, svg { page-break-inside: avoid; }
  details summary { display: none; }
  a { color: inherit; text-decoration: none; }
}
"""
)

PRINT_SCRIPT = (
    'window.addEventListener("beforeprint",()=>'
    'document.querySelectorAll("details").forEach(d=>d.open=true));'
)


def _label(r: CheckResult) -> str:
    if r.outcome is Outcome.FAILED and r.severity is Severity.WARNING:
        return "warning"
    return r.outcome.value


def _pill(label: str) -> str:
    return f'<span class="pill o-{label.replace(" ", "-")}">{escape(label)}</span>'


def _evidence(r: CheckResult) -> str:
    return escape(json.dumps(r.evidence, indent=2, sort_keys=True, ensure_ascii=False))


def _hops(r: CheckResult) -> str:
    """A flow check's hops as a table (hop, service, status, latency, message)."""
    rows = hop_rows(r)
    if not rows:
        return ""
    body = "".join(
        f'<tr><td class="mono">{escape(h.hop)}</td><td>{escape(h.service)}</td>'
        f'<td>{_pill(h.status)}</td><td class="time">{escape(h.latency)}</td>'
        f"<td>{escape(h.message)}</td></tr>"
        for h in rows
    )
    return (
        '<table class="results hops"><tr><th>hop</th><th>service</th><th>status</th>'
        f"<th>latency</th><th>message</th></tr>{body}</table>"
    )


def render_html(result: RunResult, color: bool = False) -> str:
    del color  # the document carries its own colours
    s = result.summary
    status = "interrupted" if result.interrupted else ("failed" if result.exit_code else "ok")
    covered, total = counts(result)
    stack_arg = stack_arg_for(result)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>stackprobe · {escape(result.stack)} · {status.upper()} · "
        f"coverage {result.coverage.percent:g}%</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f'<h1>stackprobe report: {escape(result.stack)}<span class="status {status}">'
        f"{status.upper()}</span></h1>",
        f'<div class="meta">run <code>{escape(result.run_id)}</code> · started '
        f"{escape(result.started_at)} · {result.duration_s:.1f} s · stackprobe "
        f"{escape(result.stackprobe)}</div>",
        '<div class="cards">',
        f'<div class="card"><b>{result.coverage.percent:g}%</b><span>coverage '
        f"({covered}/{total})</span></div>",
        *(
            f'<div class="card o-{name}"><b>{count}</b><span>{name}</span></div>'
            for name, count in (
                ("passed", s.passed),
                ("failed", s.failed),
                ("error", s.error),
                ("skipped", s.skipped),
            )
        ),
        "</div>",
        "</header>",
        *_coverage(result, stack_arg),
        *_failures(result, stack_arg),
        *_loads(result),
        *_services(result),
        *html_section(result),
        *_timings(result),
        *_versions(result),
        f"<footer>generated by stackprobe {escape(result.stackprobe)} from run "
        f"{escape(result.run_id)}; self-contained, no external assets</footer>",
        f"<script>{PRINT_SCRIPT}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _coverage(result: RunResult, stack_arg: str) -> list[str]:
    out = [
        '<section id="coverage">',
        f"<h2>Coverage matrix · {result.coverage.percent:g}%</h2>",
        '<p class="legend">'
        + "".join(
            f'<span class="o-{c.replace(" ", "-")}">{escape(c)}</span>'
            for c in ("passed", "failed", "error", "skipped", NOT_RUN)
        )
        + "</p>",
    ]
    for kind, names in kind_groups(result):
        caps = list(result.coverage.services[names[0]].capabilities)
        out.append(f'<table class="heat" data-kind="{escape(kind)}">')
        out.append(
            f'<tr><th class="svc">{escape(kind)}</th>'
            + "".join(f"<th>{escape(c)}</th>" for c in caps)
            + "<th>coverage</th></tr>"
        )
        for name in names:
            cov = result.coverage.services[name]
            cells = "".join(
                f'<td class="cell o-{cell.replace(" ", "-")}" title="{escape(name)} '
                f'{escape(cap)}: {escape(cell)}">{escape(cell)}</td>'
                for cap in caps
                for cell in [cov.capabilities.get(cap, NOT_RUN)]
            )
            out.append(
                f'<tr><th class="svc">{escape(name)}</th>{cells}'
                f'<td class="pct">{cov.percent:g}%</td></tr>'
            )
        out.append("</table>")
    found = gaps(result, stack_arg)
    if found:
        out.append(f"<h3>Gaps ({len(found)}): what to run to close them</h3>")
        out.append('<ul class="gaps">')
        for gap in found:
            command = f"<br><code>{escape(gap.command)}</code>" if gap.command else ""
            out.append(
                f"<li><b>{escape(gap.service)}</b> <code>{escape(gap.capability)}</code> "
                f"{_pill(gap.cell)} {escape(gap.detail)}{command}</li>"
            )
        out.append("</ul>")
    out.append("</section>")
    return out


def _failures(result: RunResult, stack_arg: str) -> list[str]:
    bad = sorted(
        (r for r in result.results if r.outcome in (Outcome.FAILED, Outcome.ERROR)),
        key=lambda r: _ORDER[_label(r)],
    )
    out = ['<section id="failures">', f"<h2>Failures and errors ({len(bad)})</h2>"]
    if not bad:
        out.append("<p>No check failed or errored.</p>")
    for r in bad:
        label = _label(r)
        out += [
            f'<div class="failure {label}">',
            f'<p>{_pill(label)} <b class="mono">{escape(r.check)}</b> on '
            f"<b>{escape(r.service)}</b> ({escape(r.kind)}) · {r.duration_s:.2f} s</p>",
            f'<p class="title">{escape(r.title)}</p>',
            f"<p>{escape(r.message)}</p>{_hops(r)}",
            f"<pre>{_evidence(r)}</pre>" if r.evidence else "",
            f"<p>rerun: <code>stackprobe run {escape(stack_arg)} --service "
            f"{escape(r.service)} --capability {escape(r.capability)}</code></p>",
            "</div>",
        ]
    for name, info in result.services.items():
        if info.logs is not None:
            out.append(
                f'<details class="log"><summary>last {len(info.logs.lines)} lines of the log of '
                f"<b>{escape(name)}</b> ({escape(info.logs.source)})</summary>"
                f"<pre>{escape(chr(10).join(info.logs.lines))}</pre></details>"
            )
    out.append("</section>")
    return out


def _services(result: RunResult) -> list[str]:
    out = ['<section id="services">', "<h2>Results by service</h2>"]
    for name, info in result.services.items():
        rows = sorted(
            (r for r in result.results if r.service == name), key=lambda r: _ORDER[_label(r)]
        )
        cov = result.coverage.services.get(name)
        version = f" {info.version}" if info.version else ""
        pct = f" · coverage {cov.percent:g}%" if cov else ""
        out.append(f'<h3 id="svc-{escape(name)}">{escape(name)} ({escape(info.kind)}'
                   f"{escape(version)}){pct}</h3>")  # fmt: skip
        if not rows:
            out.append("<p>No check ran on this service.</p>")
            continue
        out.append('<table class="results">')
        out.append(
            "<tr><th>outcome</th><th>check</th><th>time</th><th>message and evidence</th></tr>"
        )
        for r in rows:
            evidence = (
                f"<details{' open' if r.outcome in (Outcome.FAILED, Outcome.ERROR) else ''}>"
                f"<summary>evidence</summary><pre>{_evidence(r)}</pre></details>"
                if r.evidence
                else ""
            )
            out.append(
                f'<tr><td class="outcome">{_pill(_label(r))}</td>'
                f'<td class="check"><span class="mono">{escape(r.check)}</span><br>'
                f'<span class="title">{escape(r.title)}</span></td>'
                f'<td class="time">{r.duration_s:.2f} s</td>'
                f"<td>{escape(r.message)}{_hops(r)}{evidence}</td></tr>"
            )
        out.append("</table>")
    out.append("</section>")
    return out


def _timings(result: RunResult) -> list[str]:
    timed = sorted(
        (r for r in result.results if r.outcome is not Outcome.SKIPPED),
        key=lambda r: (-r.duration_s, r.check, r.service),
    )
    out = ['<section id="timings">', "<h2>Timings</h2>"]
    if not timed:
        return [*out, "<p>No check ran.</p>", "</section>"]
    shown = timed[:MAX_BARS]
    label_w, bar_w, row_h, top = 360, 330, 20, 6
    longest = max(r.duration_s for r in shown) or 1.0
    height = top + row_h * len(shown) + 6
    width = label_w + bar_w + 80
    out.append(
        f'<svg class="bars" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-label="check durations in seconds, longest first">'
    )
    for i, r in enumerate(shown):
        y = top + i * row_h
        w = max(1.0, bar_w * r.duration_s / longest)
        label = f"{r.check} [{r.service}]"
        if len(label) > 52:
            label = label[:51] + "…"
        out.append(
            f"<g><title>{escape(r.check)} [{escape(r.service)}]: {r.duration_s:.3f} s "
            f"({escape(_label(r))})</title>"
            f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" rx="2" '
            f'fill="{BAR_COLORS[_label(r)]}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 14}">{r.duration_s:.2f} s</text></g>'
        )
    out.append("</svg>")
    if len(timed) > len(shown):
        out.append(f"<p>{len(timed) - len(shown)} shorter checks not shown.</p>")
    out.append("</section>")
    return out


def _versions(result: RunResult) -> list[str]:
    out = [
        '<section id="stack">',
        "<h2>Stack</h2>",
        "<table><tr><th>service</th><th>kind</th><th>version</th></tr>",
    ]
    for name, info in result.services.items():
        out.append(
            f"<tr><td>{escape(name)}</td><td>{escape(info.kind)}</td>"
            f"<td>{escape(info.version or 'unknown')}</td></tr>"
        )
    out += ["</table>", "</section>"]
    return out


# --- load results ----------------------------------------------------------------------------

LOAD_PERCENTILES = (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms"), ("max", "max_ms"))  # fmt: skip


def is_load(r: CheckResult) -> bool:
    """A result that carries a load's figures (stack.load.*: overall, seconds, windows)."""
    return all(k in r.evidence for k in ("overall", "seconds", "windows", "generator"))


def _loads(result: RunResult) -> list[str]:
    loads = [r for r in result.results if is_load(r)]
    if not loads:
        return []
    out = ['<section id="load">', "<h2>Load</h2>"]
    for r in loads:
        e = r.evidence
        o = e["overall"]
        target = f" of {o['target_rate']:g} asked" if o.get("target_rate") else " (maximum)"
        gen = e["generator"]
        out += [
            f"<h3>{escape(str(e.get('service')))} · {escape(str(e.get('workload')))} · "
            f"{escape(str(e.get('mode')))} {_pill(_label(r))}</h3>",
            f"<p>{o['rate']:g} ops/s{escape(target)} · {o['attempts']} operations · "
            f"errors {o['errors']} ({o['error_rate']:.3%}) · latency from each operation's "
            "intended start (coordinated omission corrected)</p>",
        ]
        if gen.get("bound") or gen.get("limited_by"):
            kind = "generator-bound" if gen.get("bound") else f"{gen['limited_by']}-bound"
            out.append(
                f'<p class="failure warning"><b>{escape(kind)}</b>: {escape(str(gen.get("reason")))}</p>'
            )
        out.append('<div class="charts">')
        out.append(_percentile_chart(o, (e.get("slo") or {}).get("targets") or {}))
        out.append(_rate_chart(e["seconds"], o.get("target_rate")))
        out.append("</div>")
        out.append(_windows_table(e))
    out.append("</section>")
    return out


def _percentile_chart(overall: dict[str, Any], targets: dict[str, Any]) -> str:
    """Horizontal bars p50 ... max in ms, with each SLO bound as a dashed line."""
    label_w, bar_w, row_h, top = 60, 300, 22, 8
    values = [
        (name, float(overall.get(key, 0) or 0), targets.get(key)) for name, key in LOAD_PERCENTILES
    ]
    scale = max([v for _, v, _ in values] + [float(t) for _, _, t in values if isinstance(t, int | float)] + [1e-3])  # fmt: skip
    height = top + row_h * len(values) + 22
    width = label_w + bar_w + 90
    parts = [
        f'<svg class="load" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="latency percentiles in milliseconds">'
    ]
    for i, (name, value, bound) in enumerate(values):
        y = top + i * row_h
        w = max(1.0, bar_w * value / scale)
        over = isinstance(bound, int | float) and value > float(bound)
        fill = BAR_COLORS["failed"] if over else BAR_COLORS["passed"]
        parts.append(
            f"<g><title>{name}: {value:g} ms</title>"
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{name}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" rx="2" fill="{fill}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{value:g} ms</text></g>'
        )
        if isinstance(bound, int | float):
            x = label_w + bar_w * float(bound) / scale
            parts.append(
                f'<line x1="{x:.1f}" y1="{y + 1}" x2="{x:.1f}" y2="{y + row_h - 1}" stroke="#1d2026" '
                f'stroke-dasharray="3,2"><title>SLO {name} ≤ {float(bound):g} ms</title></line>'
            )
    parts.append(f'<text x="{label_w}" y="{height - 6}">latency (ms); dashed: the SLO bound</text>')
    parts.append("</svg>")
    return "".join(parts)


def _rate_chart(seconds: list[dict[str, float]], target: object) -> str:
    """Operations per second (bars) and the p99 of each second (line), with the target rate."""
    left, plot_w, plot_h, top = 48, 420, 150, 10
    width, height = left + plot_w + 80, top + plot_h + 34
    n = max(1, len(seconds))
    peak_rate = max([float(s["rate"]) for s in seconds] + ([float(target)] if isinstance(target, int | float) else []) + [1.0])  # fmt: skip
    peak_p99 = max([float(s["p99_ms"]) for s in seconds] + [1e-3])
    step = plot_w / n
    parts = [
        f'<svg class="load" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="operations per second and p99 over time">',
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak_rate:g}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
        f'<text x="{left + plot_w + 4}" y="{top + 8}">{peak_p99:g} ms</text>',
    ]
    for i, s in enumerate(seconds):
        h = plot_h * float(s["rate"]) / peak_rate
        x = left + i * step
        fill = BAR_COLORS["failed"] if s.get("errors") else BAR_COLORS["passed"]
        parts.append(
            f'<rect x="{x + 0.5:.1f}" y="{top + plot_h - h:.1f}" width="{max(1.0, step - 1):.1f}" '
            f'height="{h:.1f}" fill="{fill}" opacity="0.75"><title>second {s["t"]}: {s["rate"]:g} ops/s, '
            f"{s.get('errors', 0)} error(s), p50 {s['p50_ms']:g} ms, p99 {s['p99_ms']:g} ms</title></rect>"
        )
    points = " ".join(
        f"{left + (i + 0.5) * step:.1f},{top + plot_h - plot_h * float(s['p99_ms']) / peak_p99:.1f}"
        for i, s in enumerate(seconds)
    )
    if points:
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{BAR_COLORS["error"]}" stroke-width="2"/>'
        )
    if isinstance(target, int | float):
        y = top + plot_h - plot_h * float(target) / peak_rate
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#1d2026" '
            f'stroke-dasharray="4,3"><title>target {float(target):g} ops/s</title></line>'
        )
    parts.append(
        f'<text x="{left}" y="{height - 6}">ops/s per second (bars; red: with errors), '
        "p99 (line), target (dashed)</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _windows_table(e: dict[str, object]) -> str:
    slo = e.get("slo") or {}
    windows = e.get("windows") or []
    assert isinstance(slo, dict) and isinstance(windows, list)
    has_slo = bool(slo.get("targets"))
    rows = [
        f"<table><tr><th>SLO window ({slo.get('window_s')} s)</th><th>ops/s</th><th>p50 ms</th>"
        "<th>p99 ms</th><th>max ms</th><th>errors</th><th>verdict</th></tr>"
    ]
    for i, w in enumerate(windows, 1):
        verdict = ("passed" if w["passed"] else "failed") if has_slo else "not run"
        said = "; ".join(w["breaches"]) if w["breaches"] else ""
        rows.append(
            f"<tr><td>{i} ({w['start_s']}–{w['end_s']:g} s)</td><td>{w['rate']:g}</td>"
            f"<td>{w['p50_ms']:g}</td><td>{w['p99_ms']:g}</td><td>{w['max_ms']:g}</td>"
            f"<td>{w['errors']}</td><td>{_pill(verdict)} {escape(said)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)
