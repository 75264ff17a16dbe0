"""End to end: one request crosses every component of the stack, with real processes, real
network hops and real W3C trace context (the flow of `stackprobe flow`), and the flow holds up
under a bounded, open-loop rate.

Written as a user of the plugin writes it: the stack comes from `stackprobe_stack`, the flow
from `stackprobe.testing.run_flow`, and the markers say which capability a passing test proves.
"""

from __future__ import annotations

from typing import Any

import pytest

from stackprobe.config import Stack
from stackprobe.testing import run_flow


def hops(evidence: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["hop"]: h for h in evidence["hops"]}


@pytest.mark.stackprobe(kind="stack", capability="e2e-flow")
def test_a_checkout_flows_through_discovery_http_cache_queue_and_tracing(
    stackprobe_stack: Stack,
) -> None:
    result = run_flow(stackprobe_stack)
    assert result.outcome.value == "passed", result.message
    seen = hops(result.evidence)
    # every component the stack has was crossed; the others say why they were skipped
    for name in ("consul", "http", "redis", "celery", "trace"):
        assert seen[name]["status"] == "passed", seen[name]
    assert all(h["message"] for h in seen.values() if h["status"] == "skipped")
    # the trace joins the caller, the probe service and the worker: three processes
    trace = seen["trace"]
    assert {"stackprobe-flow", "stackprobe-flow-api"} <= set(trace["services"])
    assert len(trace["services"]) >= 3
    assert trace["span_count"] == trace["expected_span_count"]


@pytest.mark.stackprobe(kind="stack", capability="e2e-flow")
def test_the_flow_at_a_bounded_rate_keeps_every_trace_complete(stackprobe_stack: Stack) -> None:
    """2 flows per second for 3 s, open-loop (bounded, loopback): no flow breaks, every trace
    is complete, and the end-to-end p99 stays within a few seconds on a healthy stack."""
    result = run_flow(stackprobe_stack, rate=2, duration=3)
    load = result.evidence["load"]
    assert result.outcome.value == "passed", result.message
    assert load["flows_sent"] == 6 and load["trace_completeness"] == 1.0
    assert load["e2e_ms"]["p99"] < 5000, load["e2e_ms"]
    assert set(load["hops_ms"]) >= {"consul", "http", "redis", "celery", "trace"}
