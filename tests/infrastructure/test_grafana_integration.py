"""Grafana: health, data sources, dashboards and alerting, through its documented HTTP API.

A dashboard created here has a uid under the run's prefix and is deleted after the test.
Skips when the stack has no Grafana.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from stackprobe.pytest_plugin import ServiceHandle


@pytest.mark.stackprobe(kind="grafana", capability="health")
def test_grafana_and_its_database_are_healthy(grafana_api: ServiceHandle[Any]) -> None:
    answer = grafana_api.http.get("/api/health")
    assert answer.status_code == 200
    assert answer.json()["database"] == "ok"


@pytest.mark.stackprobe(kind="grafana", capability="datasources")
def test_every_data_source_passes_its_health_check(grafana_api: ServiceHandle[Any]) -> None:
    sources = grafana_api.http.get("/api/datasources").json()
    assert sources, "Grafana has no data source"
    unhealthy = {}
    for source in sources:
        answer = grafana_api.http.get(f"/api/datasources/uid/{source['uid']}/health")
        if answer.status_code != 404 and answer.json().get("status") != "OK":  # 404: no health API
            unhealthy[source["name"]] = answer.json().get("message")
    assert unhealthy == {}


@pytest.mark.stackprobe(kind="grafana", capability="dashboards")
def test_a_dashboard_saved_is_found_by_search(grafana_api: ServiceHandle[Any]) -> None:
    uid = grafana_api.name("dash")[-40:]  # Grafana uids are at most 40 characters
    grafana_api.cleanup(lambda: grafana_api.http.delete(f"/api/dashboards/uid/{uid}"))
    body = {"dashboard": {"uid": uid, "title": uid, "panels": []}, "overwrite": False}
    assert grafana_api.http.post("/api/dashboards/db", json=body).status_code == 200
    found = grafana_api.http.get("/api/search", params={"type": "dash-db", "query": uid}).json()
    assert [d["uid"] for d in found] == [uid]


@pytest.mark.stackprobe(kind="grafana", capability="alerting")
def test_alert_rules_are_provisioned(grafana_api: ServiceHandle[Any]) -> None:
    answer = grafana_api.http.get("/api/v1/provisioning/alert-rules")
    assert answer.status_code == 200
    assert all(rule["condition"] for rule in answer.json())


@pytest.mark.stackprobe(kind="grafana", capability="query-performance")
def test_a_prometheus_query_through_grafana_is_fast(grafana_api: ServiceHandle[Any]) -> None:
    sources = grafana_api.http.get("/api/datasources").json()
    prometheus = next((s for s in sources if s["type"] == "prometheus"), None)
    if prometheus is None:
        pytest.skip("Grafana has no Prometheus data source")
    query = {"refId": "A", "datasource": {"type": "prometheus", "uid": prometheus["uid"]},
             "expr": "up", "instant": True}  # fmt: skip
    started = time.perf_counter()
    answer = grafana_api.http.post(
        "/api/ds/query", json={"queries": [query], "from": "now-5m", "to": "now"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"]["A"]["frames"]
    assert time.perf_counter() - started < 2.0


@pytest.mark.stackprobe(kind="grafana", capability="security")
def test_anonymous_requests_cannot_read_data_sources(grafana_api: ServiceHandle[Any]) -> None:
    import httpx

    with httpx.Client(base_url=grafana_api.url, timeout=5) as anonymous:
        assert anonymous.get("/api/datasources").status_code in (401, 403)
