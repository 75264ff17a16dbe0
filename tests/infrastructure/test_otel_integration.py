"""The OpenTelemetry Collector: health, the trace pipeline to the trace store, metrics collected
and exported to Prometheus, and Prometheus' alerting rules.

Data goes in through the collector's OTLP/HTTP receiver, as an instrumented service sends it;
metric and service names carry the run's prefix.
"""

from __future__ import annotations

import random
import secrets
from typing import Any

import pytest

from stackprobe.pytest_plugin import ServiceHandle
from stackprobe.testing import (
    Span,
    eventually,
    fetch_trace,
    new_trace_id,
    otlp_gauge,
    otlp_traces,
)


def metric_name(handle: ServiceHandle[Any]) -> str:
    """A Prometheus-safe metric name under the run's prefix."""
    return handle.name("probe-gauge").replace("-", "_")


@pytest.mark.stackprobe(kind="otel-collector", capability="health")
def test_collector_reports_server_available(otel_collector: ServiceHandle[Any]) -> None:
    answer = otel_collector.http.get(otel_collector.endpoint("health"))
    assert answer.status_code == 200
    assert answer.json()["status"] == "Server available"


@pytest.mark.stackprobe(kind="otel-collector", capability="trace-pipeline")
def test_spans_sent_to_the_collector_reach_the_trace_store(
    otel_collector: ServiceHandle[Any], trace_store: ServiceHandle[Any]
) -> None:
    trace_id = new_trace_id()
    span = Span(otel_collector.name("orders"), "POST /orders", secrets.token_hex(8), None)
    answer = otel_collector.http.post(
        f"{otel_collector.endpoint('otlp_http')}/v1/traces", json=otlp_traces(trace_id, [span])
    )
    assert answer.status_code == 200, answer.text
    spans = eventually(lambda: fetch_trace(trace_store, trace_id), 20, "trace via the collector")
    assert spans == [span]


@pytest.mark.stackprobe(kind="otel-collector", capability="metrics-collection")
def test_a_metric_sent_is_exposed_by_the_collector(otel_collector: ServiceHandle[Any]) -> None:
    name, value = metric_name(otel_collector), round(random.uniform(1, 1000), 3)
    answer = otel_collector.http.post(
        f"{otel_collector.endpoint('otlp_http')}/v1/metrics",
        json=otlp_gauge(name, value, otel_collector.name("billing")),
    )
    assert answer.status_code == 200, answer.text

    def exposed() -> list[str] | None:
        text = otel_collector.http.get(otel_collector.endpoint("prometheus")).text
        lines = [line for line in text.splitlines() if line.startswith(name)]
        return lines or None

    (line,) = eventually(exposed, 10, f"{name} on the collector's Prometheus exporter")
    assert float(line.rsplit(" ", 1)[1]) == value


@pytest.mark.stackprobe(kind="otel-collector", capability="metrics-export")
@pytest.mark.stackprobe(kind="prometheus", capability="query")
def test_a_metric_sent_to_the_collector_is_queryable_in_prometheus(
    otel_collector: ServiceHandle[Any], prometheus_api: ServiceHandle[Any]
) -> None:
    name, value = metric_name(otel_collector), round(random.uniform(1, 1000), 3)
    otel_collector.http.post(
        f"{otel_collector.endpoint('otlp_http')}/v1/metrics",
        json=otlp_gauge(name, value, otel_collector.name("billing")),
    ).raise_for_status()

    def queried() -> list[dict[str, Any]] | None:
        answer = prometheus_api.http.get("/api/v1/query", params={"query": name}).json()
        return answer["data"]["result"] or None

    (series,) = eventually(queried, 30, f"{name} in Prometheus")
    assert float(series["value"][1]) == value


@pytest.mark.stackprobe(kind="prometheus", capability="scrape-targets")
def test_every_scrape_target_is_up(prometheus_api: ServiceHandle[Any]) -> None:
    targets = prometheus_api.http.get("/api/v1/targets").json()["data"]["activeTargets"]
    assert targets, "Prometheus scrapes nothing"
    down = {t["scrapeUrl"]: t["lastError"] for t in targets if t["health"] == "down"}
    assert down == {}


@pytest.mark.stackprobe(kind="prometheus", capability="alerting-thresholds")
def test_alerting_rules_are_loaded_and_evaluate(prometheus_api: ServiceHandle[Any]) -> None:
    groups = prometheus_api.http.get("/api/v1/rules", params={"type": "alert"}).json()["data"]
    rules = [r for g in groups["groups"] for r in g["rules"]]
    assert rules, "no alerting rule is loaded"
    assert {r["name"]: r["health"] for r in rules if r["health"] != "ok"} == {}
    assert all(r["state"] in ("inactive", "pending", "firing") for r in rules)


@pytest.mark.stackprobe(kind="otel-collector", capability="trace-metric-correlation")
def test_spans_become_request_metrics_of_the_same_service(
    otel_collector: ServiceHandle[Any], prometheus_api: ServiceHandle[Any]
) -> None:
    """The collector's span metrics (calls per service) let a dashboard jump from rate to trace."""
    service = otel_collector.name("inventory")
    spans = [Span(service, "GET /stock", secrets.token_hex(8), None) for _ in range(3)]
    for span in spans:
        otel_collector.http.post(
            f"{otel_collector.endpoint('otlp_http')}/v1/traces",
            json=otlp_traces(new_trace_id(), [span]),
        ).raise_for_status()
    query = f'sum({{__name__=~".*calls(_total)?", service_name="{service}"}})'

    def calls() -> float | None:
        result = prometheus_api.http.get("/api/v1/query", params={"query": query}).json()
        values = [float(r["value"][1]) for r in result["data"]["result"]]
        return values[0] if values and values[0] >= len(spans) else None

    assert eventually(calls, 30, f"span metrics of {service} in Prometheus") == len(spans)


@pytest.mark.stackprobe(kind="prometheus", capability="health")
def test_prometheus_is_healthy_and_ready(prometheus_api: ServiceHandle[Any]) -> None:
    assert prometheus_api.http.get("/-/healthy").status_code == 200
    assert prometheus_api.http.get("/-/ready").status_code == 200
