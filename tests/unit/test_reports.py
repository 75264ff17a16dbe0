"""Reporters render one fixed result; the output is compared with reviewed golden files.

Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/unit/test_reports.py`
and review the diff.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stackprobe.check import Outcome, Severity
from stackprobe.coverage import compute
from stackprobe.report import RENDERERS
from stackprobe.results import CheckResult, RunResult, ServiceInfo, summarize

GOLDEN = Path(__file__).parent / "golden"


def sample() -> RunResult:
    def r(
        check: str, service: str, outcome: Outcome, message: str = "", **kw: object
    ) -> CheckResult:
        kind, cap, _ = check.split(".")
        return CheckResult(
            check=check, service=service, kind=kind, capability=cap, title=f"title of {check}",
            outcome=outcome, duration_s=0.123, message=message, **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    results = [
        r("redis.connectivity.ping", "cache", Outcome.PASSED, "Redis 7.0.15 (master)", evidence={"ping_ms_p50": 0.4}),
        r("redis.sessions.sliding_expiry", "cache", Outcome.FAILED, "session gone at 1.01 s: reading did not extend it",
          evidence={"ttl_ms": 800}),
        r("redis.persistence.configured", "cache", Outcome.FAILED, "nothing is persisted", severity=Severity.WARNING),
        r("redis.celery-queue.round_trip", "cache", Outcome.ERROR, "redis: Connection refused"),
        r("celery.workers.ping", "worker", Outcome.SKIPPED, "disruptive: run with --allow-disruption"),
    ]  # fmt: skip
    services = {
        "cache": ("redis", ("connectivity", "operations", "sessions", "celery-queue", "cache-invalidation", "persistence")),
        "worker": ("celery", ("workers",)),
    }  # fmt: skip
    return RunResult(
        stackprobe="0.1.0",
        run_id="20261125T115700Z-a1b2c3",
        stack="shop-staging",
        started_at="2026-11-25T11:57:00+00:00",
        services={
            "cache": ServiceInfo(kind="redis", version="7.0.15"),
            "worker": ServiceInfo(kind="celery"),
        },
        duration_s=1.9,
        summary=summarize(results),
        results=results,
        coverage=compute(services, results),
    )


@pytest.mark.parametrize(("fmt", "suffix"), [("text", "txt"), ("json", "json"), ("junit", "xml")])
def test_report_matches_golden(fmt: str, suffix: str) -> None:
    rendered = RENDERERS[fmt](sample(), False)
    golden = GOLDEN / f"report.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_junit_has_one_testcase_per_check_with_failure_evidence() -> None:
    root = ET.fromstring(RENDERERS["junit"](sample(), False))
    cases = root.findall("./testsuite/testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        (r.service, r.check) for r in sample().results
    ]
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "session gone at 1.01 s: reading did not extend it"
    assert '"ttl_ms": 800' in (failure.text or "")
    assert cases[3].find("error") is not None and cases[4].find("skipped") is not None
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("failures"), suite.get("errors")) == ("2", "1")


def test_result_json_round_trips_and_exit_code_ignores_failed_warnings() -> None:
    result = sample()
    again = RunResult.model_validate_json(result.to_json())
    assert again == result
    assert result.exit_code == 1  # the failed error-severity check and the error
    assert result.coverage.services["cache"].capabilities["persistence"] == "failed"
    assert result.coverage.services["cache"].capabilities["operations"] == "not run"
    assert result.coverage.percent == pytest.approx(14.3)


def test_text_report_prints_messages_verbatim_even_with_brackets() -> None:
    result = sample()
    odd = result.results[1].model_copy(
        update={"message": "expected [b'y', b'z'], saw [/api] [bold]x"}
    )
    result = result.model_copy(update={"results": [result.results[0], odd, *result.results[2:]]})
    text = RENDERERS["text"](result, False)
    assert "expected [b'y', b'z'], saw [/api] [bold]x" in " ".join(text.split())
    assert text.count("cache (redis") == 1
