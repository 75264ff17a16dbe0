"""The part of every report that shows resilience scenarios: the figures (time to detect, time
to recover, outage, acknowledged writes lost), the timeline, and the recovery procedure the
scenario carried out. Drawn from a result's evidence, so any report of a run that had
scenarios shows them: text lines, and an SVG timeline in HTML."""

from __future__ import annotations

from html import escape
from typing import Any

from rich.text import Text

from stackprobe.results import CheckResult, RunResult

FIGURES = (
    ("time_to_detect_s", "time to detect"),
    ("time_to_recover_s", "time to recover"),
    ("outage_s", "outage"),
)
MARKS = {  # event -> colour of its marker
    "steady state verified": "#2f9e50",
    "fault injected": "#d1302b",
    "first failure observed": "#8e3bb8",
    "fault removed": "#1f6fb2",
    "first success again": "#2f9e50",
    "steady state verified again": "#2f9e50",
}


def scenario_results(result: RunResult) -> list[CheckResult]:
    return [r for r in result.results if r.evidence.get("timeline")]


def figures_line(r: CheckResult) -> str:
    ev = r.evidence
    parts = [f"{label} {ev[key]} s" for key, label in FIGURES if ev.get(key) is not None]
    writes = ev.get("writes")
    if isinstance(writes, dict):
        parts.append(
            f"writes {writes.get('acknowledged')} acknowledged, {writes.get('refused')} refused, "
            f"{writes.get('lost')} lost"
        )
    return " · ".join(parts) or "no outage observed"


def text_parts(result: RunResult) -> list[Text]:
    """For the text report: each scenario's figures and timeline."""
    out: list[Text] = []
    for r in scenario_results(result):
        out.append(
            Text.assemble(
                (f"scenario {r.evidence.get('scenario', r.check)}", "bold"),
                f" [{r.outcome.value}] · {figures_line(r)}",
            )
        )
        for event in r.evidence["timeline"]:
            detail = f"  {event['detail']}" if event.get("detail") else ""
            out.append(Text(f"  +{float(event['t_s']):7.3f} s  {event['event']}{detail}"))
    return out


def html_section(result: RunResult) -> list[str]:
    shown = scenario_results(result)
    if not shown:
        return []
    out = ['<section id="scenarios">', "<h2>Resilience scenarios</h2>"]
    for r in shown:
        ev = r.evidence
        out.append(
            f'<h3>{escape(str(ev.get("scenario", r.check)))} <span class="pill o-{r.outcome.value}">{r.outcome.value}</span></h3>'
        )
        out.append(f"<p>{escape(r.message)}</p>")
        out.append(_figures_table(ev))
        out.append(timeline_svg(ev["timeline"]))
        procedure = ev.get("procedure") or []
        if procedure:
            out.append("<details><summary>recovery procedure</summary><ol>")
            out += [f"<li>{escape(str(step))}</li>" for step in procedure]
            out.append("</ol></details>")
    out.append("</section>")
    return out


def _figures_table(ev: dict[str, Any]) -> str:
    rows = [(label, f"{ev[key]} s") for key, label in FIGURES if ev.get(key) is not None]
    writes = ev.get("writes")
    if isinstance(writes, dict):
        rows += [
            (f"writes {k}", str(writes.get(k)))
            for k in ("attempted", "acknowledged", "refused", "lost")
        ]
    tolerances = ev.get("tolerances") or {}
    rows += [(f"tolerance {k}", str(v)) for k, v in tolerances.items()]
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def timeline_svg(timeline: list[dict[str, Any]]) -> str:
    """Events on a time axis; the fault (injected -> removed) and the outage (first failure ->
    first success again) drawn as bands."""
    width, left, right, axis_y = 760, 20, 20, 40
    end = max((float(e["t_s"]) for e in timeline), default=1.0) or 1.0
    scale = (width - left - right) / end

    def x(t: float) -> float:
        return left + t * scale

    def first(name: str) -> float | None:
        return next((float(e["t_s"]) for e in timeline if e["event"] == name), None)

    bands = []
    for start, stop, colour, label in (
        (first("fault injected"), first("fault removed"), "#f7c6c4", "fault"),
        (first("first failure observed"), first("first success again"), "#e6cdf3", "outage"),
    ):
        if start is not None:
            stop = stop if stop is not None else end
            y = axis_y - 18 if label == "fault" else axis_y + 4
            bands.append(
                f'<rect x="{x(start):.1f}" y="{y}" width="{max(1.0, (stop - start) * scale):.1f}" height="14" fill="{colour}">'
                f"<title>{label}: {stop - start:.3f} s</title></rect>"
            )
    marks = []
    for i, e in enumerate(timeline):
        colour = MARKS.get(str(e["event"]), "#5d6470")
        t = float(e["t_s"])
        label_y = axis_y + 34 + (i % 4) * 14
        marks.append(
            f"<g><title>+{t:.3f} s {escape(str(e['event']))} {escape(str(e.get('detail', '')))}</title>"
            f'<line x1="{x(t):.1f}" y1="{axis_y - 20}" x2="{x(t):.1f}" y2="{label_y - 10}" stroke="{colour}" stroke-width="1.5"/>'
            f'<text x="{x(t):.1f}" y="{label_y}" font-size="11" fill="{colour}">{escape(str(e["event"]))} +{t:.2f} s</text></g>'
        )
    height = axis_y + 34 + 4 * 14 + 10
    return (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="scenario timeline in seconds">'
        + "".join(bands)
        + f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#5d6470"/>'
        + "".join(marks)
        + "</svg>"
    )
