"""JUnit XML: one testcase per check, classname = service, failures carry message and evidence."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from stackprobe.check import Outcome
from stackprobe.report.hops import hop_lines
from stackprobe.results import RunResult


def _log(case: ET.Element, result: RunResult, service: str) -> None:
    """The service's log tail, where CI shows a test's output."""
    info = result.services.get(service)
    if info is not None and info.logs is not None:
        out = ET.SubElement(case, "system-out")
        out.text = f"log of {service} ({info.logs.source}):\n" + "\n".join(info.logs.lines)


def render_junit(result: RunResult, color: bool = False) -> str:
    del color
    s = result.summary
    suites = ET.Element("testsuites", name=f"stackprobe {result.stack}")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=result.stack,
        tests=str(len(result.results)),
        failures=str(s.failed),
        errors=str(s.error),
        skipped=str(s.skipped),
        time=f"{result.duration_s:.3f}",
        timestamp=result.started_at,
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="run_id", value=result.run_id)
    ET.SubElement(props, "property", name="coverage_percent", value=f"{result.coverage.percent}")
    for r in result.results:
        case = ET.SubElement(
            suite, "testcase", classname=r.service, name=r.check, time=f"{r.duration_s:.3f}"
        )
        evidence = json.dumps(r.evidence, indent=2, sort_keys=True)
        if hops := hop_lines(r):
            evidence = "hops:\n" + "\n".join(f"  {line}" for line in hops) + "\n\n" + evidence
        if r.outcome is Outcome.FAILED:
            tag = "failure"
            node = ET.SubElement(case, tag, message=r.message, type=f"{r.severity.value}")
            node.text = f"{r.message}\n\nevidence:\n{evidence}"
            _log(case, result, r.service)
        elif r.outcome is Outcome.ERROR:
            node = ET.SubElement(case, "error", message=r.message, type="error")
            node.text = f"{r.message}\n\nevidence:\n{evidence}"
            _log(case, result, r.service)
        elif r.outcome is Outcome.SKIPPED:
            ET.SubElement(case, "skipped", message=r.message)
        else:
            out = ET.SubElement(case, "system-out")
            out.text = evidence
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )
