"""The end-to-end flow against the real sandbox (Consul, Redis, an instrumented Celery worker,
the collector, Jaeger, Prometheus), with faults of the tests' own: a stopped worker, a
collector that drops what it is sent; and its ArangoDB and Grafana hops against their stand-ins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from stackprobe.results import CheckResult, RunResult
from tests.conftest import CliRunner, RunningSandbox
from tests.faults.http_proxy import HttpFaultProxy, HttpRequest, HttpResponse
from tests.integration.helpers import run_stack, write_stack
from tests.standins.arangodb import ArangoStandin
from tests.standins.grafana import GrafanaStandin
from tests.standins.tempo import TempoStandin

pytestmark = pytest.mark.integration
ARANGO_PASSWORD = "flow-pw"
GRAFANA_TOKEN = "glsa_flow_token"


def hops(result: CheckResult) -> dict[str, dict[str, Any]]:
    return {h["hop"]: h for h in result.evidence["hops"]}


def statuses(result: CheckResult) -> dict[str, str]:
    return {name: h["status"] for name, h in hops(result).items()}


def flow_of(result: RunResult) -> CheckResult:
    return next(r for r in result.results if r.capability == "e2e-flow")


def sandbox_services(sandbox: RunningSandbox) -> dict[str, Any]:
    doc = yaml.safe_load(sandbox.sandbox.stack_file.read_text())
    services: dict[str, Any] = doc["services"]
    return services


def test_the_flow_passes_every_sandbox_hop_with_spans_from_three_processes(
    sandbox: RunningSandbox, cli: CliRunner
) -> None:
    cli.use_sandbox(sandbox)
    run = cli("flow", "--sandbox", "--format", "json")
    assert run.code == 0, run.stderr + run.stdout
    result = json.loads(run.stdout)["results"][0]
    seen = {h["hop"]: h for h in result["evidence"]["hops"]}
    assert {n: h["status"] for n, h in seen.items()} == {
        "consul": "passed", "http": "passed", "redis": "passed", "celery": "passed",
        "arangodb": "skipped", "trace": "passed", "prometheus": "passed", "grafana": "skipped",
    }  # fmt: skip
    assert seen["arangodb"]["message"] == "no arangodb service configured"
    assert seen["grafana"]["message"] == "no grafana service configured"
    # the CLI, the probe service and the worker: three processes, three service.names
    assert seen["trace"]["services"] == [
        "stackprobe-flow", "stackprobe-flow-api", "stackprobe-sandbox-worker",
    ]  # fmt: skip
    assert seen["trace"]["span_count"] == seen["trace"]["expected_span_count"] == 11
    assert seen["celery"]["trace_assertion"] == "passed"
    assert seen["prometheus"]["exemplar_trace_id"] == result["evidence"]["trace_id"]
    assert all(h["latency_ms"] > 0 for h in seen.values() if h["status"] == "passed")


def test_the_flow_leaves_nothing_behind_in_redis_and_consul(sandbox: RunningSandbox) -> None:
    client = redis.Redis.from_url(sandbox.redis_url)
    result = run_stack(sandbox.sandbox.stack_file, capabilities=("e2e-flow",))
    assert flow_of(result).outcome.value == "passed", flow_of(result).message
    assert client.keys(f"*{result.run_id}*") == []
    import httpx

    consul = sandbox.stack.service("discovery").url
    services = httpx.get(f"{consul}/v1/agent/services", timeout=5).json()
    assert [s for s in services if result.run_id in s] == []
    client.close()


@pytest.fixture
def stopped_worker(sandbox: RunningSandbox) -> Iterator[None]:
    worker = sandbox.sandbox.process("worker")
    worker.stop()
    try:
        yield
    finally:
        worker.start()


def test_a_stopped_worker_fails_the_flow_at_the_celery_hop_with_its_cause(
    sandbox: RunningSandbox, stopped_worker: None
) -> None:
    started = time.monotonic()
    result = run_stack(sandbox.sandbox.stack_file, capabilities=("e2e-flow",))
    took = time.monotonic() - started
    flow = flow_of(result)
    assert flow.outcome.value == "failed"
    assert flow.evidence["first_broken_hop"] == "celery"
    assert flow.message.startswith("flow broke at the celery hop (worker): no live Celery worker consumes queue 'celery'")  # fmt: skip
    assert statuses(flow)["redis"] == "passed" and statuses(flow)["trace"] == "skipped"
    assert took < 30  # well within the check's timeout


def test_a_collector_that_drops_spans_fails_the_trace_hop_naming_the_missing_spans(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    services = sandbox_services(sandbox)
    otlp = services["otel"]["endpoints"]["otlp_http"]

    def drop(request: HttpRequest) -> HttpRequest | HttpResponse:
        # accepted, then lost: what a collector with a broken pipeline does
        return HttpResponse(200, b"", {"content-type": "application/x-protobuf"})

    with HttpFaultProxy(otlp, on_request=drop).running() as proxy:
        services["otel"]["endpoints"]["otlp_http"] = proxy.url
        services["stack"] = {"kind": "stack", "options": {"flow": {"trace_timeout": 3, "worker_span_grace": 0}}}  # fmt: skip
        result = run_stack(write_stack(tmp_path, services), capabilities=("e2e-flow",))
    flow = flow_of(result)
    assert flow.outcome.value == "failed"
    assert flow.evidence["first_broken_hop"] == "trace"
    message = hops(flow)["trace"]["message"]
    assert "expected 10 spans of stackprobe's processes, found 0" in message
    assert "GET /checkout (stackprobe-flow-api, http hop)" in message
    assert "stackprobe flow (stackprobe-flow, flow hop)" in message
    assert statuses(flow)["celery"] == "passed"


@pytest.fixture
def arango() -> Iterator[ArangoStandin]:
    with ArangoStandin(password=ARANGO_PASSWORD) as standin:
        yield standin


def test_the_arangodb_and_grafana_hops_pass_against_their_stand_ins(
    sandbox: RunningSandbox, tmp_path: Path, arango: ArangoStandin
) -> None:
    services = sandbox_services(sandbox)
    with GrafanaStandin(tokens=(GRAFANA_TOKEN,)) as grafana:
        # Grafana 10/11's Jaeger datasource reads traces through the datasource proxy
        grafana.add_datasource("jaeger", "Jaeger", "jaeger", services["tracing"]["url"])
        services["graph"] = {"kind": "arangodb", "url": arango.url, "password": ARANGO_PASSWORD}
        services["dashboards"] = {"kind": "grafana", "url": grafana.url, "token": GRAFANA_TOKEN}
        result = run_stack(write_stack(tmp_path, services), capabilities=("e2e-flow",))
    flow = flow_of(result)
    assert flow.outcome.value == "passed", flow.message
    assert set(statuses(flow).values()) == {"passed"}
    assert hops(flow)["grafana"]["span_count"] == 13  # the ArangoDB write and traversal add two
    assert "read back by traversal" in hops(flow)["arangodb"]["message"]
    assert [d for d in arango.databases() if result.run_id in d] == []  # dropped by name


def test_the_grafana_hop_reads_a_tempo_trace_through_ds_query(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    """Tempo as the trace store, no collector: spans go to Tempo's own receiver; the sandbox
    worker exports to the sandbox collector, so its span never reaches this Tempo and the
    Celery hop's trace assertion is skipped with the reason (as on a user's own workers)."""
    sandboxed = sandbox_services(sandbox)
    with TempoStandin() as tempo, GrafanaStandin(tokens=(GRAFANA_TOKEN,)) as grafana:
        grafana.add_datasource("tempo", "Tempo", "tempo", tempo.url)
        services = {
            "discovery": sandboxed["discovery"], "cache": sandboxed["cache"], "worker": sandboxed["worker"],
            "traces": {"kind": "tempo", "url": tempo.url, "endpoints": {"otlp_http": tempo.otlp_url}},
            "dashboards": {"kind": "grafana", "url": grafana.url, "token": GRAFANA_TOKEN},
            "stack": {"kind": "stack", "options": {"flow": {"worker_span_grace": 1}}},
        }  # fmt: skip
        result = run_stack(write_stack(tmp_path, services), capabilities=("e2e-flow",))
    flow = flow_of(result)
    assert flow.outcome.value == "passed", flow.message
    seen = hops(flow)
    assert seen["grafana"]["status"] == "passed" and seen["grafana"]["datasource"] == "tempo"
    assert seen["grafana"]["span_count"] == 10
    assert seen["celery"]["trace_assertion"] == "skipped"
    assert "the worker sent no run/celery.accumulate span" in seen["celery"]["message"]
    assert seen["prometheus"]["message"] == "no prometheus service configured"
