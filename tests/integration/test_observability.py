"""OpenTelemetry Collector, Prometheus and Jaeger checks against the real sandbox services.

Each capability is shown passing on the sandbox's healthy pipeline and failing, with what was
seen, on real services of the test's own that are configured to misbehave: a collector whose
trace exporter points at a closed port and whose metrics Prometheus never scrapes, a
Prometheus with a dead target, a rule that errors, a dead alert rule and a broken rule file,
and a Prometheus that scrapes nothing. A stopped collector makes its checks error, quickly.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stackprobe.results import RunResult
from stackprobe.sandbox.component import Layout
from stackprobe.sandbox.components import observability as obs
from stackprobe.sandbox.manager import Sandbox
from stackprobe.services import otel_collector, prometheus, tracestore
from tests.conftest import RunningSandbox, free_port
from tests.faults.http_proxy import HttpFaultProxy, HttpRequest, HttpResponse
from tests.integration import prometheus_instance
from tests.integration.helpers import run_stack, write_stack
from tests.integration.prometheus_instance import PrometheusBuild

PIPELINE_KINDS = ("otel-collector", "prometheus", "jaeger")


def need_file(path: Path, install: str) -> None:
    if not path.exists():
        message = f"{path} is not installed: run {install}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def by_check(result: RunResult) -> dict[str, Any]:
    return {r.check: r for r in result.results}


def test_every_pipeline_capability_passes_on_the_sandbox(sandbox: RunningSandbox) -> None:
    result = run_stack(sandbox.sandbox.stack_file, kinds=PIPELINE_KINDS)
    not_passed = {
        r.check: (r.outcome.value, r.message) for r in result.results if r.outcome.value != "passed"
    }
    assert not_passed == {
        "prometheus.alerting-thresholds.canary_fires": (
            "skipped",
            "disruptive: run with --allow-disruption",
        )
    }
    for service in ("otel", "metrics", "tracing"):
        assert result.coverage.services[service].percent == 100.0, service
    r = by_check(result)
    counters = r["otel-collector.trace-pipeline.accepted_and_sent"].evidence["counters"]
    assert (counters["accepted_http"], counters["accepted_grpc"], counters["send_failed"]) == (
        5,
        5,
        0,
    )
    assert set(counters["sent"].values()) == {10}
    exemplar = r["otel-collector.trace-metric-correlation.exemplar_resolves"].evidence
    assert len(exemplar["trace_id"]) == 32 and exemplar["trace_store"] == "tracing"
    assert r["jaeger.correlation.traceparent_hops"].evidence["services"] == [
        "stackprobe-api", "stackprobe-db", "stackprobe-frontend",
    ]  # fmt: skip
    assert r["jaeger.retention.configured"].evidence["max_traces"] == 100000
    assert result.services["otel"].version == "0.165.0"


def test_canary_alert_goes_pending_firing_resolved(sandbox: RunningSandbox) -> None:
    result = run_stack(
        sandbox.sandbox.stack_file,
        capabilities=("alerting-thresholds",),
        kinds=("prometheus",),
        allow_disruption=True,
        sandbox=True,
    )
    canary = by_check(result)["prometheus.alerting-thresholds.canary_fires"]
    assert canary.outcome.value == "passed", canary.message
    seen = canary.evidence["seconds_since_push"]
    assert seen["firing"] < seen["resolved"]
    assert seen.get("pending", seen["firing"]) <= seen["firing"]


def test_jaeger_retention_fails_when_expectations_are_not_met(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    tracing = dict(sandbox.stack.service("tracing").model_dump(exclude_none=True))
    tracing.pop("links")
    for expectations, seen in (
        ({"max_traces": 200000}, "memory max_traces: expected at least 200000, saw 100000"),
        (
            {"retention": "72h"},
            "memory storage keeps traces by count (max_traces 100000), not by age",
        ),
    ):
        path = write_stack(tmp_path, {"tracing": {**tracing, "expectations": expectations}})
        [r] = run_stack(path, capabilities=("retention",)).results
        assert r.outcome.value == "failed" and seen in r.message


# --- a collector of the test's own that misbehaves ----------------------------------------------


@pytest.fixture
def broken_collector(tmp_path: Path, sandbox: RunningSandbox) -> Iterator[Path]:
    """A real collector whose trace exporter targets a closed port and whose Prometheus exporter
    nobody scrapes, next to the sandbox's own Prometheus and Jaeger."""
    need_file(obs.CACHE_BIN / "otelcol-stackprobe", "scripts/install-services otelcol")
    closed = free_port()

    def command(layout: Layout) -> list[str]:
        config = obs.otelcol_config(
            Layout(layout.dir, {**layout.ports, "jaeger.otlp_grpc": closed})
        )
        config["exporters"]["otlp_grpc/jaeger"]["retry_on_failure"] = {"enabled": False}
        path = layout.dir / "otelcol.yaml"
        layout.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        return [str(obs.CACHE_BIN / "otelcol-stackprobe"), f"--config=file:{path}"]

    component = dataclasses.replace(obs.OTELCOL, command=command, requires=())
    box = Sandbox(root=tmp_path / "broken", components=(component,))
    box.up()
    try:
        services = yaml.safe_load(sandbox.sandbox.stack_file.read_text())["services"]
        otel = component.services(box.layout(component))["otel"]
        otel.pop("depends_on")
        yield write_stack(
            tmp_path, {"otel": otel, "metrics": services["metrics"], "tracing": services["tracing"]}
        )
    finally:
        box.down()


def test_collector_checks_fail_with_what_they_saw_on_a_broken_pipeline(
    broken_collector: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otel_collector, "PIPELINE_TIMEOUT", 3.0)
    monkeypatch.setattr(otel_collector, "EXPORT_TIMEOUT", 3.0)
    result = run_stack(broken_collector, kinds=("otel-collector",))
    r = by_check(result)
    assert r["otel-collector.health.health_check"].outcome.value == "passed"
    assert r["otel-collector.metrics-collection.points_accepted"].outcome.value == "passed"
    pipeline = r["otel-collector.trace-pipeline.accepted_and_sent"]
    assert pipeline.outcome.value == "failed"
    assert "sent spans (otlp_grpc/jaeger) moved by 0, expected 10" in pipeline.message
    export = r["otel-collector.metrics-export.probe_metric_in_prometheus"]
    assert export.outcome.value == "failed" and "stackprobe_probe_value" in export.message
    exemplar = r["otel-collector.trace-metric-correlation.exemplar_resolves"]
    assert exemplar.outcome.value == "failed" and "none with one of the" in exemplar.message


def test_stopped_collector_makes_its_checks_error_quickly(tmp_path: Path) -> None:
    port = free_port()
    endpoints = {
        "otlp_http": f"http://127.0.0.1:{port}",
        "otlp_grpc": f"127.0.0.1:{port}",
        "health": f"http://127.0.0.1:{port}/",
        "metrics": f"http://127.0.0.1:{port}/metrics",
    }
    path = write_stack(tmp_path, {"otel": {"kind": "otel-collector", "endpoints": endpoints}})
    started = time.monotonic()
    result = run_stack(path)
    assert time.monotonic() - started < 15
    outcomes = {r.check: r.outcome.value for r in result.results}
    assert outcomes["otel-collector.health.health_check"] == "error"
    assert outcomes["otel-collector.trace-pipeline.accepted_and_sent"] == "error"
    for r in result.results:
        assert r.outcome.value in ("error", "skipped"), (r.check, r.message)
        assert "\n" not in r.message and r.message
    assert (
        "cannot connect to 127.0.0.1"
        in by_check(result)["otel-collector.health.health_check"].message
    )
    assert result.exit_code == 1


# --- Prometheus instances of the test's own that misbehave -------------------------------------


@pytest.fixture
def troubled_prometheus(
    tmp_path: Path, prometheus_build: PrometheusBuild, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A real Prometheus with a dead target, an erroring rule, a dead alert and a bad rule file
    (each build's server, and its promtool for stackprobe's promtool check)."""
    prometheus_instance.promtool_on_path(prometheus_build, monkeypatch)
    ghost = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "self", "static_configs": [{"targets": ["SELF"]}]},
            {"job_name": "ghost", "static_configs": [{"targets": [f"127.0.0.1:{ghost}"]}]},
        ],
    }
    rules = {
        "groups": [
            {
                "name": "troubled",
                "rules": [
                    {"record": "job:broken:many_to_many", "expr": "up + on() up"},
                    {"alert": "NeverFires", "expr": "stackprobe_metric_nobody_exports > 1"},
                    {"alert": "SelfDown", "expr": 'up{job="self"} == 0'},
                ],
            }
        ]
    }
    box, component = prometheus_instance.prometheus(
        tmp_path, "troubled", config, {"rules.yml": rules}, prometheus_build
    )
    box.up()
    bad_rules = tmp_path / "bad-rules.yml"
    bad_rules.write_text("groups:\n- name: bad\n  rules:\n  - alert: Broken\n    expr: sum((\n")
    try:
        svc = prometheus_instance.service_entry(box, component)
        svc["options"] = {"rule_files": [str(bad_rules)]}
        svc["expectations"] = {"jobs": ["self", "ghost", "blackbox"]}
        yield write_stack(tmp_path, {"metrics": svc})
    finally:
        box.down()


def _wait_for_rule_error(stack: Path) -> None:
    """Poll (no fixed sleep) until the ghost target was scraped and the bad rule evaluated."""
    url = yaml.safe_load(stack.read_text())["services"]["metrics"]["url"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        groups = httpx.get(f"{url}/api/v1/rules", timeout=2).json()["data"]["groups"]
        if any(r.get("health") == "err" for g in groups for r in g["rules"]):
            return
        time.sleep(0.2)
    pytest.fail("the troubled Prometheus never evaluated its erroring rule")


def test_prometheus_checks_fail_on_real_misconfigurations(
    troubled_prometheus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prometheus, "UP_TIMEOUT", 2.0)
    _wait_for_rule_error(troubled_prometheus)
    result = run_stack(troubled_prometheus)
    r = by_check(result)
    assert r["prometheus.health.ready"].outcome.value == "passed"
    assert r["prometheus.query.instant_and_range"].outcome.value == "passed"
    targets = r["prometheus.scrape-targets.all_up"]
    assert targets.outcome.value == "failed"
    assert (
        "1 of 2 targets not up: ghost" in targets.message
        and "connection refused" in targets.message
    )
    healthy = r["prometheus.alerting-thresholds.rules_healthy"]
    assert healthy.outcome.value == "failed" and "job:broken:many_to_many" in healthy.message
    dead = r["prometheus.alerting-thresholds.no_dead_rules"]
    assert (dead.outcome.value, dead.severity.value) == ("failed", "warning")
    assert "NeverFires (no series for metric stackprobe_metric_nobody_exports)" in dead.message
    assert "SelfDown" not in dead.message
    promtool = r["prometheus.alerting-thresholds.promtool_check_rules"]
    assert promtool.outcome.value == "failed" and "promtool check rules failed" in promtool.message


def test_prometheus_query_fails_when_nothing_is_scraped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prometheus_build: PrometheusBuild
) -> None:
    monkeypatch.setattr(prometheus, "UP_TIMEOUT", 2.0)
    box, component = prometheus_instance.prometheus(
        tmp_path, "empty", {"global": {"evaluation_interval": "1s"}}, build=prometheus_build
    )
    box.up()
    try:
        svc = component.services(box.layout(component))["metrics"]
        path = write_stack(tmp_path, {"metrics": {"kind": "prometheus", "url": svc["url"]}})
        [r] = run_stack(path, capabilities=("query",)).results
    finally:
        box.down()
    assert r.outcome.value == "failed"
    assert r.message.endswith("instant query `up` returned no series: nothing is scraped")


def _jaeger_behind(proxy_url: str, sandbox: RunningSandbox, tmp_path: Path) -> Path:
    tracing = dict(sandbox.stack.service("tracing").model_dump(exclude_none=True))
    tracing.pop("links")
    return write_stack(tmp_path, {"tracing": {**tracing, "url": proxy_url}})


def _drop_last_span(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if not request.path.startswith("/api/traces/") or response.status != 200:
        return response
    doc = response.json()
    for trace in doc.get("data") or []:
        trace["spans"] = trace["spans"][:-1]
    return response.with_json(doc)


def _break_parent(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if not request.path.startswith("/api/traces/") or response.status != 200:
        return response
    doc = response.json()
    for trace in doc.get("data") or []:
        for span in trace["spans"]:
            for ref in span.get("references", []):
                ref["spanID"] = "00000000deadbeef"
    return response.with_json(doc)


def _search_finds_nothing(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if request.path != "/api/traces":
        return response
    return response.with_json({"data": [], "total": 0, "limit": 0, "offset": 0, "errors": None})


def _services_unavailable(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if request.path != "/api/services":
        return response
    return HttpResponse(503, b"query service unavailable", {"Content-Type": "text/plain"})


@pytest.mark.parametrize(
    ("on_response", "capability", "seen"),
    [
        (
            _services_unavailable,
            "readiness",
            "jaeger: HTTP 503 from GET /api/services: query service unavailable",
        ),
        (_search_finds_nothing, "query", "returned 0 trace(s), not the probe trace"),
        (_drop_last_span, "ingest", "found 2 of 3 spans"),
        (_drop_last_span, "correlation", "found 4 of 5 spans"),
        (_break_parent, "correlation", "expected name/service/parent"),
    ],
)
def test_jaeger_checks_fail_when_jaeger_returns_a_damaged_trace(
    tmp_path: Path, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch,
    on_response: Any, capability: str, seen: str,
) -> None:  # fmt: skip
    """The real Jaeger behind a proxy that damages its trace answers (tests/faults/http_proxy.py)."""
    monkeypatch.setattr(tracestore, "VISIBLE_TIMEOUT", 2.0)
    url = sandbox.stack.service("tracing").url
    assert url is not None
    with HttpFaultProxy(url, on_response=on_response).running() as proxy:
        [r] = run_stack(
            _jaeger_behind(proxy.url, sandbox, tmp_path), capabilities=(capability,)
        ).results
    assert r.outcome.value == "failed", r.message
    assert seen in r.message


def test_health_checks_fail_when_the_real_servers_say_not_ready(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    """Prometheus starting (/-/ready 503) and a collector whose health_check says not
    available, each through a proxy in front of the real sandbox server."""

    def not_ready(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if request.path == "/-/ready":
            return HttpResponse(503, b"Service Unavailable", {"Content-Type": "text/plain"})
        if request.path == "/":
            return HttpResponse(
                503, b'{"status":"Server not available","upSince":"0001-01-01T00:00:00Z"}'
            )
        return response

    services = yaml.safe_load(sandbox.sandbox.stack_file.read_text())["services"]
    prom_url = services["metrics"]["url"]
    health = services["otel"]["endpoints"]["health"].rstrip("/")
    with (
        HttpFaultProxy(prom_url, on_response=not_ready).running() as prom_proxy,
        HttpFaultProxy(health, on_response=not_ready).running() as health_proxy,
    ):
        otel = {"kind": "otel-collector", "endpoints": {"health": health_proxy.url + "/"}}
        path = write_stack(
            tmp_path, {"metrics": {"kind": "prometheus", "url": prom_proxy.url}, "otel": otel}
        )
        result = run_stack(path, capabilities=("health",))
    r = by_check(result)
    assert r["prometheus.health.ready"].outcome.value == "failed"
    assert (
        "GET /-/ready: expected 200, saw 503: Service Unavailable"
        in r["prometheus.health.ready"].message
    )
    assert r["otel-collector.health.health_check"].outcome.value == "failed"
    assert "Server not available" in r["otel-collector.health.health_check"].message


# --- the sandbox's pipeline with Prometheus 3 ----------------------------------------------------


@contextmanager
def pipeline_on(root: Path, binary: str, *, exemplars: bool = True) -> Iterator[Path]:
    """The sandbox's collector, Jaeger and Prometheus, that Prometheus being `binary` on the
    sandbox's own command line (exemplar storage unless `exemplars` is false); its stack file."""
    need_file(obs.CACHE_BIN / "otelcol-stackprobe", "scripts/install-services otelcol")
    need_file(obs.CACHE_BIN / "jaeger", "scripts/install-services jaeger")

    def command(layout: Layout) -> list[str]:
        argv = obs.PROMETHEUS.command(layout)
        assert argv[0] == "prometheus" and "--enable-feature=exemplar-storage" in argv
        return [binary, *(a for a in argv[1:] if exemplars or a != "--enable-feature=exemplar-storage")]  # fmt: skip

    prom = dataclasses.replace(obs.PROMETHEUS, binary=binary, command=command)
    box = Sandbox(root=root / "sandbox", components=(obs.JAEGER, obs.OTELCOL, prom))
    path = box.up()
    try:
        yield path
    finally:
        box.down()


@pytest.fixture(scope="module")
def pipeline_on_prometheus_3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The pipeline with Prometheus 3.x started on the sandbox's own command line (exemplar
    storage, remote-write receiver, rule file): the session sandbox runs Debian's 2.42, so
    this is what shows the pipeline checks on 3.x."""
    build = prometheus_instance.checked(prometheus_instance.BUILDS[1])
    with pipeline_on(tmp_path_factory.mktemp("p3"), build.paths()[0]) as path:
        yield path


def test_every_pipeline_capability_passes_on_prometheus3(pipeline_on_prometheus_3: Path) -> None:
    result = run_stack(
        pipeline_on_prometheus_3, kinds=PIPELINE_KINDS, allow_disruption=True, sandbox=True
    )
    not_passed = {
        r.check: (r.outcome.value, r.message) for r in result.results if r.outcome.value != "passed"
    }
    assert not_passed == {}
    assert (result.services["metrics"].version or "").startswith("3.")
    r = by_check(result)
    exemplar = r["otel-collector.trace-metric-correlation.exemplar_resolves"].evidence
    assert len(exemplar["trace_id"]) == 32  # read back from 3.x's exemplar storage
    assert r["otel-collector.metrics-export.probe_metric_in_prometheus"].outcome.value == "passed"
    canary = r["prometheus.alerting-thresholds.canary_fires"].evidence["seconds_since_push"]
    assert canary["firing"] < canary["resolved"]


def test_exemplar_check_says_when_prometheus_stores_no_exemplars(
    tmp_path: Path, prometheus_build: PrometheusBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commonest reason for no exemplar: Prometheus runs without exemplar storage (a
    feature flag on 2.42 and 3.x alike). The failure says so, on both."""
    monkeypatch.setattr(otel_collector, "EXPORT_TIMEOUT", 4.0)
    with pipeline_on(tmp_path, prometheus_build.paths()[0], exemplars=False) as path:
        result = run_stack(path, capabilities=("trace-metric-correlation",))
    exemplar = by_check(result)["otel-collector.trace-metric-correlation.exemplar_resolves"]
    assert exemplar.outcome.value == "failed"
    assert exemplar.message.endswith(
        "; metrics stores no exemplars: it runs without --enable-feature=exemplar-storage"
    ), exemplar.message
    assert exemplar.evidence["exemplar_storage"] is False


def test_exemplar_storage_is_read_from_the_flags_of_both_versions(
    pipeline_on_prometheus_3: Path, sandbox: RunningSandbox
) -> None:
    result = run_stack(pipeline_on_prometheus_3, capabilities=("trace-metric-correlation",))
    [r] = [x for x in result.results if x.check.endswith("exemplar_resolves")]
    assert (r.outcome.value, r.evidence["exemplar_storage"]) == ("passed", True)
    result = run_stack(sandbox.sandbox.stack_file, capabilities=("trace-metric-correlation",))
    [r] = [x for x in result.results if x.check.endswith("exemplar_resolves")]
    assert (r.outcome.value, r.evidence["exemplar_storage"]) == ("passed", True)  # 2.42
