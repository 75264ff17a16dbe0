"""What you need to write, and unit-test, checks of your own (as structlog ships `testing.py`).

    from stackprobe.testing import check_context, run_check

    async def check_greeting(ctx):                      # a check: async, raises CheckFailed
        if await ctx.client.get("greeting") != b"hello":
            raise CheckFailed("greeting: expected b'hello'")
        return "greeted"

    def test_my_check_fails_on_a_wrong_greeting():
        ctx = check_context("redis", client=FakeRedis({"greeting": b"bye"}))
        result = run_check(check_greeting, ctx)
        assert result.outcome == "failed" and "expected b'hello'" in result.message

`run_flow(stack)` runs the end-to-end flow (`stackprobe flow`) on a stack and returns its
result, hops in `evidence["hops"]` (with `rate=` and `duration=`, flows under load).

`run_check` runs the check as the runner does (timeout, outcome rules, cleanups afterwards);
`eventually` polls a synchronous condition instead of sleeping a fixed time; the OTLP helpers
build traces and metrics for tests that send telemetry through a real collector and read a
trace back through a configured trace store (`fetch_trace(trace_store_handle, trace_id)`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from stackprobe.catalog import known_kinds
from stackprobe.check import CheckContext, CheckFn, call_check
from stackprobe.config import ServiceConfig, Stack, StackConfig
from stackprobe.errors import Outcome
from stackprobe.ids import new_run_id, service_namespace
from stackprobe.results import CheckResult
from stackprobe.runner import CLEANUP_TIMEOUT, DEFAULT_TIMEOUT, Runner, Selection, stack_plan
from stackprobe.services.stack_flow import flow_spec

T = TypeVar("T")

__all__ = [
    "Span",
    "check_context",
    "eventually",
    "fetch_trace",
    "new_span_id",
    "new_trace_id",
    "otlp_gauge",
    "otlp_traces",
    "run_check",
]


def check_context(
    kind: str,
    client: Any,
    *,
    service: str = "svc",
    config: dict[str, Any] | None = None,
    stack: Stack | None = None,
    run_id: str | None = None,
) -> CheckContext[Any]:
    """A CheckContext for one service of `kind` around `client` (yours or a fake), with the
    kind's typed options and expectations parsed from `config` (the stack file's fields)."""
    svc = ServiceConfig.model_validate({"kind": kind, **(config or {})})
    if stack is None:
        stack = Stack(path=Path("stackprobe.yaml"), config=StackConfig(services={service: svc}))
    typed = known_kinds()[kind].typed(svc) if kind in known_kinds() else None
    run_id = run_id or new_run_id()
    return CheckContext(
        client=client,
        service_name=service,
        service=svc,
        stack=stack,
        ns=service_namespace(run_id, service),
        run_id=run_id,
        options=typed.options if typed else None,
        expectations=typed.expectations if typed else None,
    )


def run_check(
    fn: CheckFn, ctx: CheckContext[Any], *, timeout: float = DEFAULT_TIMEOUT
) -> CheckResult:
    """Run `fn` on `ctx` as the runner would: bounded, outcome by the same rules, cleanups
    always run afterwards (their failures land in evidence["cleanup_problems"])."""

    async def run() -> tuple[Outcome, str, float]:
        started = time.monotonic()
        try:
            outcome, message = await call_check(fn, ctx, timeout)
        finally:
            problems = await ctx.run_cleanups(CLEANUP_TIMEOUT)
            if problems:
                ctx.evidence["cleanup_problems"] = problems
        return outcome, message, time.monotonic() - started

    outcome, message, took = asyncio.run(run())
    return CheckResult(
        check=f"{ctx.service.kind}.test.{getattr(fn, '__name__', 'check')}",
        service=ctx.service_name,
        kind=ctx.service.kind,
        capability="test",
        outcome=outcome,
        duration_s=round(took, 3),
        message=message,
        evidence=dict(ctx.evidence),
    )


def eventually(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call `fn` until it returns something other than None; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen after {timeout:g} s")
        time.sleep(interval)


# --- OTLP/JSON payloads and traces read back ------------------------------------------------


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    span_id: str
    parent_id: str | None


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def otlp_traces(trace_id: str, spans: list[Span]) -> dict[str, Any]:
    """An OTLP/JSON ExportTraceServiceRequest: one resource per service."""
    now = time.time_ns()
    by_service: dict[str, list[dict[str, Any]]] = {}
    for i, span in enumerate(spans):
        body: dict[str, Any] = {
            "traceId": trace_id,
            "spanId": span.span_id,
            "name": span.name,
            "kind": 2 if span.parent_id is None else 3,
            "startTimeUnixNano": str(now + i * 1_000_000),
            "endTimeUnixNano": str(now + (i + 2) * 1_000_000),
        }
        if span.parent_id:
            body["parentSpanId"] = span.parent_id
        by_service.setdefault(span.service, []).append(body)
    return {"resourceSpans": [_resource(service, "scopeSpans", {"spans": items}) for service, items in by_service.items()]}  # fmt: skip


def otlp_gauge(name: str, value: float, service: str) -> dict[str, Any]:
    """An OTLP/JSON ExportMetricsServiceRequest with one gauge point."""
    point = {"asDouble": value, "timeUnixNano": str(time.time_ns())}
    metric = {"name": name, "gauge": {"dataPoints": [point]}}
    return {"resourceMetrics": [_resource(service, "scopeMetrics", {"metrics": [metric]})]}


def _resource(service: str, scopes_key: str, scope_body: dict[str, Any]) -> dict[str, Any]:
    return {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        scopes_key: [{"scope": {"name": "stackprobe-tests"}, **scope_body}],
    }


def fetch_trace(store: Any, trace_id: str) -> list[Span] | None:
    """The trace's spans as a configured trace store returns them (through its kind's own
    adapter), or None while it is not there yet. `store` is the `trace_store` fixture."""
    run: Callable[[Awaitable[Any]], Any] = store.run
    spans = run(store.aclient.get_trace(trace_id))
    if not spans:
        return None
    return [Span(s.service, s.name, s.span_id, s.parent_span_id or None) for s in spans]


def run_flow(
    stack: Stack,
    *,
    rate: float | None = None,
    duration: float | None = None,
    allow_disruption: bool = False,
) -> CheckResult:
    """The end-to-end flow on `stack` through the runner, as `stackprobe flow` runs it: one
    synthetic transaction (or flows open-loop at `rate` for `duration` s); the check's result,
    each hop's status, latency and message in `evidence["hops"]`."""
    selection = Selection(allow_disruption=allow_disruption)
    plan = stack_plan(stack, [flow_spec(rate, duration)], selection)
    return asyncio.run(Runner(plan).run()).results[0]
