"""Every report shows a flow check's hops readably: hop, service, status, latency, message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stackprobe.check import Outcome
from stackprobe.coverage import compute
from stackprobe.report import RENDERERS
from stackprobe.report.hops import hop_lines
from stackprobe.results import CheckResult, RunResult, ServiceInfo, summarize

HOPS: list[dict[str, Any]] = [
    {"hop": "consul", "service": "discovery", "status": "passed", "latency_ms": 8.07,
     "message": "registered, passed and discovered at 127.0.0.1:40879"},
    {"hop": "celery", "service": "worker", "status": "failed", "latency_ms": 10003.2,
     "message": "expected the worker's result within 10 s, saw none"},
    {"hop": "trace", "service": "tracing", "status": "skipped", "latency_ms": None,
     "message": "not reached: the flow broke at celery"},
]  # fmt: skip


def flow_result() -> RunResult:
    result = CheckResult(
        check="stack.e2e-flow.synthetic_transaction", service="stack", kind="stack",
        capability="e2e-flow", title="one synthetic transaction", outcome=Outcome.FAILED,
        duration_s=10.5, message="flow broke at the celery hop (worker): expected ...",
        evidence={"trace_id": "ab" * 16, "hops": HOPS},
    )  # fmt: skip
    services = {"stack": ("stack", ("service-health", "dependencies", "e2e-flow"))}
    return RunResult(
        stackprobe="0.1.0", run_id="20261125T115700Z-a1b2c3", stack="sandbox",
        started_at="2026-11-25T11:57:00+00:00", services={"stack": ServiceInfo(kind="stack")},
        duration_s=10.6, summary=summarize([result]), results=[result],
        coverage=compute(services, [result]),
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["text", "markdown", "html", "junit"])
def test_each_report_lists_every_hop_with_status_and_latency(fmt: str) -> None:
    document = RENDERERS[fmt](flow_result(), False)
    for hop in HOPS:
        assert hop["hop"] in document
    assert "8.07 ms" in document and "10003.2 ms" in document
    assert "not reached: the flow broke at celery" in document


def test_the_text_report_has_a_hop_table_in_flow_order() -> None:
    text = RENDERERS["text"](flow_result(), False)
    assert "stack.e2e-flow.synthetic_transaction hops" in text
    rows = [line for line in text.splitlines() if line.startswith("│ ") and " ms " in line]
    assert [r.split("│")[1].strip() for r in rows[:2]] == ["consul", "celery"]


def test_hop_lines_are_one_per_hop_and_json_keeps_the_evidence() -> None:
    lines = hop_lines(flow_result().results[0])
    assert len(lines) == 3 and lines[1].startswith("celery     failed")
    assert (
        json.loads(RENDERERS["json"](flow_result(), False))["results"][0]["evidence"]["hops"]
        == HOPS
    )
