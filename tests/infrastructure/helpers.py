"""Small helpers a user's infrastructure suite would keep next to its tests: OTLP/JSON payloads,
reading a trace back from Jaeger or Tempo, and polling instead of sleeping.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from stackprobe.pytest_plugin import ServiceHandle

T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call `fn` until it returns something other than None; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen after {timeout:g} s")
        time.sleep(interval)


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    span_id: str
    parent_id: str | None


def new_trace_id() -> str:
    return secrets.token_hex(16)


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
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [{"scope": {"name": "infra-tests"}, "spans": items}],
            }
            for service, items in by_service.items()
        ]
    }


def otlp_gauge(name: str, value: float, service: str) -> dict[str, Any]:
    """An OTLP/JSON ExportMetricsServiceRequest with one gauge point."""
    return {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeMetrics": [
                    {
                        "scope": {"name": "infra-tests"},
                        "metrics": [
                            {
                                "name": name,
                                "gauge": {
                                    "dataPoints": [
                                        {"asDouble": value, "timeUnixNano": str(time.time_ns())}
                                    ]
                                },
                            }
                        ],
                    }
                ],
            }
        ]
    }


def _hex(span_id: str) -> str:
    """Span ids come back hex (Jaeger) or base64 (Tempo's JSON)."""
    if len(span_id) == 16:
        try:
            int(span_id, 16)
            return span_id.lower()
        except ValueError:
            pass
    try:
        return base64.b64decode(span_id).hex()
    except (binascii.Error, ValueError):
        return span_id


def fetch_trace(store: ServiceHandle[Any], trace_id: str) -> list[Span] | None:
    """The trace's spans as the store returns them, or None while it is not there yet."""
    if store.kind == "jaeger":
        answer = store.http.get(f"/api/traces/{trace_id}")
        if answer.status_code == 404 or not answer.json().get("data"):
            return None
        answer.raise_for_status()
        trace = answer.json()["data"][0]
        return [
            Span(
                service=trace["processes"][s["processID"]]["serviceName"],
                name=s["operationName"],
                span_id=s["spanID"],
                parent_id=next(
                    (r["spanID"] for r in s.get("references", []) if r["refType"] == "CHILD_OF"),
                    None,
                ),
            )
            for s in trace["spans"]
        ]
    answer = store.http.get(f"/api/v2/traces/{trace_id}")  # Tempo: 200 with {"trace": {}} if absent
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    found: list[Span] = []
    for rs in answer.json().get("trace", {}).get("resourceSpans", []):
        service = next(
            (
                a["value"].get("stringValue", "")
                for a in rs.get("resource", {}).get("attributes", [])
                if a["key"] == "service.name"
            ),
            "",
        )
        for ss in rs.get("scopeSpans", []):
            found += [
                Span(
                    service=service,
                    name=s["name"],
                    span_id=_hex(s["spanId"]),
                    parent_id=_hex(s["parentSpanId"]) if s.get("parentSpanId") else None,
                )
                for s in ss.get("spans", [])
            ]
    return found or None
