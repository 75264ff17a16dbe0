"""The catalog: stable capability ids, well-formed check ids, every check discoverable."""

from __future__ import annotations

import json
import re

import pytest

from stackprobe.catalog import all_checks, known_kinds
from stackprobe.cli import _invoke

# DESIGN.md "Capability ids": reports, coverage and pytest markers depend on these staying put
DESIGN_CAPABILITIES = {
    "otel-collector": (
        "health",
        "trace-pipeline",
        "metrics-collection",
        "metrics-export",
        "trace-metric-correlation",
    ),
    "prometheus": ("health", "scrape-targets", "query", "alerting-thresholds"),
    "jaeger": ("readiness", "ingest", "correlation", "query", "retention"),
    "tempo": ("readiness", "ingest", "correlation", "query", "retention"),
    "redis": (
        "connectivity",
        "operations",
        "sessions",
        "celery-queue",
        "cache-invalidation",
        "persistence",
    ),
    "celery": ("workers",),
    "compose": ("healthchecks", "startup-order", "networking", "volumes"),
    "arangodb": ("connectivity", "metadata-storage", "graph-relationships", "query-performance"),
    "grafana": ("health", "datasources", "dashboards", "alerting", "query-performance", "security"),
    "consul": ("cluster", "registration", "health-checks", "kv", "discovery"),
    "stack": ("service-health", "dependencies", "failover", "recovery", "e2e-flow", "load"),
}


def test_capability_ids_are_the_documented_ones() -> None:
    for name, kind in known_kinds().items():
        if name == "stack":  # declared as its checks land, in DESIGN's order
            design = DESIGN_CAPABILITIES[name]
            assert kind.capabilities == tuple(c for c in design if c in kind.capabilities)
            continue
        assert kind.capabilities == DESIGN_CAPABILITIES[name]


def test_every_capability_has_a_check_and_ids_follow_the_scheme() -> None:
    for kind in known_kinds().values():
        assert {c.capability for c in kind.checks} == set(kind.capabilities), kind.name
    for spec in all_checks():
        assert re.fullmatch(r"[a-z-]+\.[a-z0-9-]+\.[a-z0-9_]+", spec.id), spec.id  # e2e-flow


def test_every_check_is_listed_with_its_capability(capsys: pytest.CaptureFixture[str]) -> None:
    assert _invoke(["list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)["kinds"]
    pairs = {(c["id"], c["capability"]) for k in listed.values() for c in k["checks"]}
    assert pairs == {(c.id, c.capability) for c in all_checks()}
