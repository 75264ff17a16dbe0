"""Distributed tracing: traces are collected, stored, correlated across services and queried.

`trace_store` is the stack's Tempo or Jaeger. Spans are sent straight to its OTLP/HTTP
receiver; service names carry the run's prefix, so nothing here mixes with real traces.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from stackprobe.pytest_plugin import ServiceHandle
from stackprobe.testing import Span, eventually, fetch_trace, new_trace_id, otlp_traces

VISIBLE_WITHIN_S = 20  # Tempo searches blocks after its idle period; Jaeger is near-immediate


def send(store: ServiceHandle[Any], trace_id: str, spans: list[Span]) -> None:
    answer = store.http.post(
        f"{store.endpoint('otlp_http')}/v1/traces", json=otlp_traces(trace_id, spans)
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.stackprobe(kind="tempo", capability="readiness")
@pytest.mark.stackprobe(kind="jaeger", capability="readiness")
def test_trace_store_is_ready(trace_store: ServiceHandle[Any]) -> None:
    if trace_store.kind == "jaeger":
        answer = trace_store.http.get(trace_store.endpoint("health"))
        assert answer.status_code == 200 and answer.json()["status"] == "StatusOK"
    else:
        assert trace_store.http.get("/ready").status_code == 200


@pytest.mark.stackprobe(kind="tempo", capability="ingest")
@pytest.mark.stackprobe(kind="jaeger", capability="ingest")
def test_a_trace_sent_is_the_trace_read_back(trace_store: ServiceHandle[Any]) -> None:
    trace_id = new_trace_id()
    span = Span(trace_store.name("checkout"), "GET /cart", secrets.token_hex(8), None)
    sent = time.monotonic()
    send(trace_store, trace_id, [span])
    spans = eventually(lambda: fetch_trace(trace_store, trace_id), VISIBLE_WITHIN_S, "trace by id")
    assert spans == [span]
    assert time.monotonic() - sent < VISIBLE_WITHIN_S


@pytest.mark.stackprobe(kind="tempo", capability="correlation")
@pytest.mark.stackprobe(kind="jaeger", capability="correlation")
def test_spans_of_two_services_join_into_one_trace(trace_store: ServiceHandle[Any]) -> None:
    trace_id = new_trace_id()
    parent = Span(trace_store.name("frontend"), "POST /checkout", secrets.token_hex(8), None)
    child = Span(trace_store.name("payments"), "charge card", secrets.token_hex(8), parent.span_id)
    send(trace_store, trace_id, [parent, child])

    def both() -> list[Span] | None:
        spans = fetch_trace(trace_store, trace_id)
        return spans if spans and len(spans) == 2 else None

    spans = eventually(both, VISIBLE_WITHIN_S, "both spans of the trace")
    by_service = {s.service: s for s in spans}
    assert by_service[child.service].parent_id == parent.span_id
    assert by_service[parent.service].parent_id is None


@pytest.mark.stackprobe(kind="tempo", capability="query")
@pytest.mark.stackprobe(kind="jaeger", capability="query")
def test_traces_are_found_by_service(trace_store: ServiceHandle[Any]) -> None:
    trace_id = new_trace_id()
    service = trace_store.name("search")
    send(trace_store, trace_id, [Span(service, "GET /search", secrets.token_hex(8), None)])

    def found() -> list[str] | None:
        if trace_store.kind == "jaeger":
            answer = trace_store.http.get("/api/traces", params={"service": service, "limit": 5})
            ids = [t["traceID"] for t in answer.json().get("data") or []]
        else:
            query = f'{{ resource.service.name = "{service}" }}'
            answer = trace_store.http.get("/api/search", params={"q": query, "limit": 5})
            ids = [t["traceID"].rjust(32, "0") for t in answer.json().get("traces", [])]
        return ids or None

    assert eventually(found, VISIBLE_WITHIN_S, f"a trace of {service}") == [trace_id]
