"""The coverage matrix, the HTML and the Markdown reports, against reviewed golden files.

Regenerate after an intended change with
`UPDATE_GOLDEN=1 pytest tests/unit/test_coverage_reports.py` and review the diff.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from stackprobe.check import Outcome
from stackprobe.kinds import Kind
from stackprobe.report import RENDERERS, matrix
from stackprobe.report.matrix import (
    gaps,
    render_matrix_json,
    render_matrix_markdown,
    render_matrix_text,
)
from stackprobe.results import CheckResult
from tests.unit.test_reports import sample

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str, rendered: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(rendered, encoding="utf-8")
    assert rendered == path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("fmt", "name"), [("html", "report.html"), ("markdown", "report.md")])
def test_report_matches_golden(fmt: str, name: str) -> None:
    golden(name, RENDERERS[fmt](sample(), False))


def test_matrix_matches_golden_in_every_format() -> None:
    result = sample()
    golden("coverage.txt", render_matrix_text(result, stack_arg="-c shop.yaml"))
    golden("coverage.md", render_matrix_markdown(result, stack_arg="-c shop.yaml"))
    golden("coverage.json", render_matrix_json(result, stack_arg="-c shop.yaml"))


def test_gaps_say_what_to_run_and_what_was_seen() -> None:
    found = {(g.service, g.capability): g for g in gaps(sample(), "-c shop.yaml")}
    assert ("cache", "connectivity") not in found  # passed: no gap
    sessions = found["cache", "sessions"]
    assert sessions.cell == "failed"
    assert sessions.command == "stackprobe run -c shop.yaml --service cache --capability sessions"
    assert sessions.detail == (
        "redis.sessions.sliding_expiry: session gone at 1.01 s: reading did not extend it"
    )
    assert found["cache", "persistence"].detail.startswith("warning: ")
    assert found["worker", "workers"].command is not None
    assert found["worker", "workers"].command.endswith("--allow-disruption")
    assert found["cache", "operations"].cell == "not run"


def test_a_capability_without_any_check_suggests_a_marked_pytest_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = sample()
    bare: Kind[None] = Kind(
        name="celery",
        description="a kind whose capability no check proves",
        capabilities=("workers",),
        connect=lambda target: contextlib.nullcontext(),
    )
    monkeypatch.setattr(matrix, "known_kinds", lambda: {"celery": bare})
    result.results = [r for r in result.results if r.service != "worker"]
    (gap,) = [g for g in gaps(result) if g.service == "worker"]
    assert gap.command is None
    assert '@pytest.mark.stackprobe(kind="celery", capability="workers")' in gap.detail


def test_sandbox_results_name_the_sandbox_in_commands() -> None:
    result = sample()
    result.stack = "sandbox"
    assert all(g.command is None or "--sandbox" in g.command for g in gaps(result))
    result.stack = "shop-staging"
    assert all(g.command is None or "-c <stack file>" in g.command for g in gaps(result))


def test_text_matrix_is_never_crushed_below_its_content() -> None:
    text = render_matrix_text(sample(), width=40)
    assert "cache-invalidation" in text and "…" not in text


class _Cells(HTMLParser):
    """Collects the heatmap cells (title -> class) and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "td" and "cell" in (a.get("class") or ""):
            self.cells[a.get("title") or ""] = a.get("class") or ""
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]


def test_html_is_self_contained_with_a_heatmap_and_print_styles() -> None:
    document = RENDERERS["html"](sample(), False)
    parser = _Cells()
    parser.feed(document)
    assert parser.urls == []  # no external stylesheet, script, image or font
    assert "link" not in parser.tags and "img" not in parser.tags
    assert re.findall(r"https?://[^\s\"']+", document) == ["http://www.w3.org/2000/svg"]
    assert parser.cells["cache sessions: failed"] == "cell o-failed"
    assert parser.cells["cache connectivity: passed"] == "cell o-passed"
    assert parser.cells["worker workers: skipped"] == "cell o-skipped"
    assert parser.cells["cache operations: not run"] == "cell o-not-run"
    assert "@media print" in document and "<svg" in document


def test_html_lists_failures_first_and_bars_every_timed_check() -> None:
    result = sample()
    result.results[0].duration_s = 2.0  # the passed ping is the longest check
    document = RENDERERS["html"](result, False)
    services = document[document.index('id="services"') :]
    assert services.index("redis.sessions.sliding_expiry") < services.index(
        "redis.connectivity.ping"
    )
    svg = document[document.index("<svg") : document.index("</svg>")]
    bars = re.findall(r'<rect x="\d+" y="[\d.]+" width="([\d.]+)"', svg)
    assert len(bars) == 4  # every check but the skipped one
    assert float(bars[0]) == 330.0  # longest first, full width
    assert svg.index("redis.connectivity.ping") < svg.index("redis.sessions.sliding_expiry")


def test_html_and_markdown_escape_what_services_said() -> None:
    result = sample()
    result.results.append(
        CheckResult(
            check="redis.operations.ttl",
            service="cache",
            kind="redis",
            capability="operations",
            outcome=Outcome.FAILED,
            duration_s=0.1,
            message="saw <script>alert(1)</script> | x",
            evidence={"value": "<b>"},
        )
    )
    document = RENDERERS["html"](result, False)
    assert "<script>alert" not in document and "&lt;script&gt;alert(1)" in document
    assert "&quot;&lt;b&gt;&quot;" in document
    markdown = RENDERERS["markdown"](result, False)
    assert "saw &lt;script>alert(1)&lt;/script> \\| x" in markdown


def test_markdown_puts_failures_before_the_matrix_and_evidence_in_details() -> None:
    markdown = RENDERERS["markdown"](sample(), False)
    assert markdown.startswith("## ❌ stackprobe FAILED: shop-staging\n")
    assert markdown.index("### Failures and errors (3)") < markdown.index("### Coverage 14.3%")
    evidence = markdown[markdown.index("<details><summary>Evidence") :]
    assert json.dumps({"ttl_ms": 800}, indent=2) in evidence
