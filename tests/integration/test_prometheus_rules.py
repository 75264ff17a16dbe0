"""Dead-rule analysis, rule health and promtool lint on rule files loaded into a real Prometheus.

The rule files are written here in the shapes published collections use (exporter alert
collections, monitoring mixins): absence alerts, recording rules read by alerts of another
file, numbers and offsets that the rules API reformats (`1e+07`, `offset 1w`), subqueries,
`@`, `__name__` regexes, vector matching, histogram families. The Prometheus scrapes itself, so
its own metrics (prometheus_http_requests_total{handler,code}, ..._bucket, up{job}) are the
series that exist. The check sees the expressions as Prometheus serves them: every test runs
on Debian's 2.42 and on 3.x built from its Go module (test ids prometheus2, prometheus3).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stackprobe.results import CheckResult, RunResult
from stackprobe.services import prometheus
from tests.integration.helpers import run_stack, write_stack
from tests.integration.prometheus_instance import (
    PrometheusBuild,
    promtool_on_path,
    rules_of,
    running_prometheus,
    wait_for,
)

CONFIG = {
    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
    "scrape_configs": [{"job_name": "prometheus", "static_configs": [{"targets": ["SELF"]}]}],
}


def group(name: str, *rules: dict[str, Any], interval: str = "1s") -> dict[str, Any]:
    return {"name": name, "interval": interval, "rules": list(rules)}


def alert(name: str, expr: str, **labels: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "labels": labels or {"severity": "warning"}}


# built to fire on absence, on other alerts, and on series recorded elsewhere: never dead
ABSENCE = {
    "groups": [
        group(
            "absence",
            alert("TargetAbsent", 'absent(up{job="node-exporter"})'),
            alert("HeartbeatGone", "absent_over_time(stackprobe_heartbeat_seconds[5m])"),
            alert(
                "RedisMissingMaster", '(count(redis_instance_info{role="master"}) or vector(0)) < 1'
            ),
            alert(
                "NodeDownOrGone", 'up{job="node-exporter"} == 0 or absent(up{job="node-exporter"})'
            ),
            alert("NoReplicas", "count(redis_connected_slaves) == 0"),
            alert("BuildWithoutNode", 'prometheus_build_info unless on() up{job="node-exporter"}'),
            alert("Watchdog", "vector(1)"),
            alert("WatchdogFiring", 'ALERTS{alertname="Watchdog", alertstate="firing"} == 1'),
            alert("JobScrapesLow", 'job:up:sum{job="prometheus"} < 1'),
            alert("SlowRecordedHigh", "slow:stackprobe_records:sum > 0"),
        ),
    ]
}
# recording rules the absence file's alerts read: one evaluated each second, one every hour
RECORDED = {
    "groups": [
        group("recorded-fast", {"record": "job:up:sum", "expr": "sum by (job) (up)"}),
        group(
            "recorded-slow",
            {"record": "slow:stackprobe_records:sum", "expr": "sum(prometheus_tsdb_head_series)"},
            interval="1h",
        ),
    ]
}
# every number notation, durations, offsets, @, subqueries, __name__ regexes, label_replace,
# vector matching, histogram and counter families: all over series that exist
SYNTAX = {
    "groups": [
        group(
            "syntax",
            alert("BigCounter", "prometheus_http_requests_total > 10000000"),
            alert("WeekAgo", "rate(prometheus_http_requests_total[5m] offset 7d) > 0.5e-3"),
            alert("TwoHoursAgo", "prometheus_http_requests_total offset 2h > 1.5e-3"),
            alert("TenMinutes", "increase(prometheus_http_requests_total[10m]) > 0x1F"),
            alert("AtStart", "prometheus_tsdb_head_series @ start() > Inf"),
            alert("AtTime", "prometheus_tsdb_head_series @ 1609746000 > -Inf"),
            alert(
                "Subquery", "max_over_time(rate(prometheus_http_requests_total[1m])[30m:1m]) > 1e3"
            ),
            alert("NameRegex", '{__name__=~"prometheus_tsdb_head_(series|chunks)"} > 123456789012'),
            alert("Relabelled", 'label_replace(up, "host", "$1", "instance", "(.*):\\\\d+") == 0'),
            alert(
                "Joined",
                "prometheus_http_requests_total * on (instance) group_left (version) prometheus_build_info > 1e9",
            ),
            alert(
                "Ignoring",
                "sum by (code) (prometheus_http_requests_total) / ignoring (code) group_left sum(prometheus_http_requests_total) > 2",
            ),
            alert(
                "SlowHandlers",
                'histogram_quantile(0.99, sum by (le, handler) (rate(prometheus_http_request_duration_seconds_bucket{handler=~"/api.*"}[5m]))) > 10',
            ),
            alert(
                "MeanLatency",
                "rate(prometheus_http_request_duration_seconds_sum[5m]) / rate(prometheus_http_request_duration_seconds_count[5m]) > 5",
            ),
            alert("Smoothed", "SMOOTHING(prometheus_tsdb_head_series[10m], 0.5, 0.5) > 1e12"),
            alert("Predicted", "predict_linear(process_resident_memory_bytes[1h], 4 * 3600) < 0"),
            alert("Bool", '(up{job="prometheus"} > bool 0) == 2'),
            alert(
                "Quoted",
                'up{job="prometheus",instance!~"tab\\there|\\"quoted\\"|back\\\\slash"} == 0',
            ),
        ),
    ]
}
# truly dead: a metric nobody exports, matchers that select nothing, an alert per severity
DEAD = {
    "groups": [
        group(
            "k8s",
            alert("PrometheusK8sDown", 'up{job="prometheus-k8s"} == 0', severity="critical"),
            alert("NodeLoadHigh", "node_load1 > 10", severity="warning"),
            alert("NodeLoadHigh", "node_load1 > 20", severity="critical"),
            alert(
                "HandlerErrors",
                'rate(prometheus_http_requests_total{handler="/api/v1/nope",code=~"5.."}[5m]) > 1',
            ),
            alert("ErrorRateHigh", "job:http_errors:rate5m > 0.1"),
            alert("InhibitorFiring", 'ALERTS{alertname="NoSuchAlert"} == 1'),
        ),
        group(
            "dead-records",
            {
                "record": "job:http_errors:rate5m",
                "expr": "sum by (job) (rate(http_server_errors_total[5m]))",
            },
        ),
    ]
}


def _stack(tmp_path: Path, url: str, **extra: Any) -> Path:
    return write_stack(tmp_path, {"metrics": {"kind": "prometheus", "url": url, **extra}})


def _check(result: RunResult, name: str) -> CheckResult:
    return next(r for r in result.results if r.check == f"prometheus.alerting-thresholds.{name}")


@pytest.fixture(scope="module")
def published(
    tmp_path_factory: pytest.TempPathFactory, prometheus_build: PrometheusBuild
) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("published")
    # holt_winters is double_exponential_smoothing on 3.x (an experimental function there)
    smoothing = "holt_winters" if prometheus_build.major == 2 else "double_exponential_smoothing"
    files = {
        "absence.yml": ABSENCE,
        "recorded.yml": RECORDED,
        "syntax.yml": yaml.safe_dump(SYNTAX).replace("SMOOTHING", smoothing),
        "dead.yml": DEAD,
    }
    with running_prometheus(tmp, "published", dict(CONFIG), files, prometheus_build) as (
        url,
        folder,
    ):
        # polled: the self-scrape and the 1 s groups have run once (the 1 h group has not)
        wait_for(url, "the fast groups evaluated", lambda u: any(r["name"] == "job:up:sum" and r["health"] == "ok" for r in rules_of(u)))  # fmt: skip
        yield url, folder


def test_the_rules_api_serves_reformatted_expressions(
    published: tuple[str, Path], prometheus_build: PrometheusBuild
) -> None:
    """What the check reads: numbers, durations and offsets as each version prints them (3.x
    writes large numbers in full where 2.42 writes `1e+07`)."""
    served = {r["name"]: r["query"] for r in rules_of(published[0])}
    v2 = prometheus_build.major == 2
    assert served["BigCounter"] == "prometheus_http_requests_total > " + ("1e+07" if v2 else "10000000")  # fmt: skip
    assert "offset 1w" in served["WeekAgo"] and "0.0005" in served["WeekAgo"]
    assert served["TenMinutes"].endswith("> 31")
    assert "@ 1609746000.000" in served["AtTime"]
    assert served["NameRegex"].endswith("> 1.23456789012e+11" if v2 else "> 123456789012")
    assert served["Smoothed"].endswith("> 1e+12" if v2 else "> 1000000000000")


def test_published_shapes_give_no_false_dead_rule_and_name_each_dead_one(
    tmp_path: Path, published: tuple[str, Path]
) -> None:
    url, _ = published
    result = run_stack(_stack(tmp_path, url), capabilities=("alerting-thresholds",))
    dead = _check(result, "no_dead_rules")
    assert (dead.outcome.value, dead.severity.value) == ("failed", "warning"), dead.message
    entries = dead.evidence["dead"]
    named = sorted((e["rule"], e["labels"].get("severity")) for e in entries)
    assert named == [
        ("ErrorRateHigh", "warning"),
        ("HandlerErrors", "warning"),
        ("InhibitorFiring", "warning"),
        ("NodeLoadHigh", "critical"),
        ("NodeLoadHigh", "warning"),
        ("PrometheusK8sDown", "critical"),
    ]  # every other rule of the four files can fire
    assert {e["group"] for e in entries} == {"k8s"}
    assert all(e["file"].endswith("dead.yml") for e in entries)
    message = dead.message
    assert message.startswith("6 of 33 alert rule(s) can never fire, in 1 group(s) of 1 file(s): dead.yml › k8s: PrometheusK8sDown (")  # fmt: skip
    assert message.endswith("; 1 count()==0 test(s) never fire (evidence.never_fires)")
    assert (
        'PrometheusK8sDown (up{job="prometheus-k8s"}: job="prometheus-k8s" selects nothing (job has "prometheus"))'
        in message
    )
    assert "NodeLoadHigh[severity=warning] (no series for metric node_load1)" in message
    assert "NodeLoadHigh[severity=critical] (no series for metric node_load1)" in message
    assert 'handler="/api/v1/nope" selects nothing (handler has "/' in message
    assert "ErrorRateHigh (job:http_errors:rate5m is recorded by dead-records/job:http_errors:rate5m, which can return nothing)" in message  # fmt: skip
    reasons = {e["rule"]: [m["reason"] for m in e["missing"]] for e in entries}
    assert reasons["InhibitorFiring"] == ['ALERTS{alertname="NoSuchAlert"}: no alerting rule named "NoSuchAlert" is loaded']  # fmt: skip
    assert len(message) < 900
    handler = next(e for e in entries if e["rule"] == "HandlerErrors")["missing"][0]
    assert 'handler="/api/v1/nope"' in handler["matcher"] and "/api/v1/rules" in handler["values"]["handler"]  # fmt: skip
    assert dead.evidence["never_fires"][0]["rule"] == "NoReplicas"
    summary = dead.evidence["summary"]
    assert (summary["alert_rules"], summary["not_parsed"], summary["dead"]) == (33, 0, 6)
    # batched: one query per pass (again only for what selected nothing) and two to diagnose
    assert summary["queries"] <= summary["passes"] + 3 < summary["selectors"]
    healthy = _check(result, "rules_healthy")
    assert healthy.outcome.value == "passed", healthy.message
    assert "1 not evaluated yet" in healthy.message and "recorded-slow/slow:stackprobe_records:sum, group interval 3600 s" in healthy.message  # fmt: skip
    assert healthy.evidence["not_evaluated_yet"] == [
        {
            "rule": "slow:stackprobe_records:sum",
            "group": "recorded-slow",
            "file": healthy.evidence["not_evaluated_yet"][0]["file"],
            "interval_s": 3600.0,
        }
    ]


def test_a_firing_rule_is_never_dead(tmp_path: Path, prometheus_build: PrometheusBuild) -> None:
    """`vector(1) and on() node_load1` cannot be read as alive from its selectors, yet an
    alert Prometheus shows firing is alive: here the state wins over the analysis."""
    files = {"f.yml": {"groups": [group("g", alert("FiresAnyway", "vector(1)"), alert("Dead", "node_load1 > 1"))]}}  # fmt: skip
    with running_prometheus(tmp_path, "firing", dict(CONFIG), files, prometheus_build) as (url, _):
        wait_for(url, "FiresAnyway firing", lambda u: any(r.get("state") == "firing" for r in rules_of(u)))  # fmt: skip
        result = run_stack(_stack(tmp_path, url), capabilities=("alerting-thresholds",))
    dead = _check(result, "no_dead_rules")
    assert [e["rule"] for e in dead.evidence["dead"]] == ["Dead"]
    assert dead.evidence["summary"]["firing_or_pending"] == 1


def test_promtool_lint_findings_are_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prometheus_build: PrometheusBuild
) -> None:
    duplicate = tmp_path / "duplicate.yml"
    duplicate.write_text(
        "groups:\n- name: g\n  rules:\n"
        "  - {record: job:up:sum, expr: sum by (job) (up)}\n"
        "  - {record: job:up:sum, expr: sum by (job) (up)}\n"
    )
    promtool_on_path(prometheus_build, monkeypatch)
    with running_prometheus(
        tmp_path, "lint", dict(CONFIG), {"ok.yml": RECORDED}, prometheus_build
    ) as (url, _):
        result = run_stack(
            _stack(tmp_path, url, options={"rule_files": [str(duplicate)]}),
            capabilities=("alerting-thresholds",),
        )
    valid = _check(result, "promtool_check_rules")
    assert valid.outcome.value == "passed"
    assert valid.message == "promtool check rules: 1 file(s) valid; 1 lint finding(s) (see promtool_lint)"  # fmt: skip
    lint = _check(result, "promtool_lint")
    assert (lint.outcome.value, lint.severity.value) == ("failed", "warning")
    assert lint.message.startswith("promtool reports 1 lint finding(s) (it still exits 0): lint error 1 duplicate rule(s) found. Metric: job:up:sum")  # fmt: skip
    assert result.exit_code == 0  # warnings do not fail the run


def _large_rule_set(count: int) -> dict[str, Any]:
    """`count` alert rules in the shapes of a large collection plus mixins: mostly alive,
    every tenth reading a handler that does not exist, every 50th a metric nobody exports;
    grouped by 25, one file per 200 rules."""
    rules = []
    for i in range(count):
        if i % 50 == 0:
            expr = f"rate(exporter_{i}_errors_total[5m]) > {i}"
        elif i % 10 == 0:
            expr = f'rate(prometheus_http_requests_total{{handler="/nope/{i}"}}[5m]) > 1'
        elif i % 3 == 0:
            expr = f'histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket{{handler="/api/v1/query"}}[5m]))) > {i}'
        elif i % 3 == 1:
            expr = f'sum by (job) (rate(prometheus_http_requests_total{{code=~"2.."}}[5m])) / sum by (job) (rate(prometheus_http_requests_total[5m])) > 0.{i:04d}'
        else:
            expr = f'up{{job="prometheus"}} == 0 or absent(up{{job="prometheus"}}) or prometheus_tsdb_head_series > {i * 1000}'
        rules.append(
            alert(f"Collection{i // 2}", expr, severity="critical" if i % 2 else "warning")
        )
    return {"groups": [group(f"collection-{g}", *rules[g : g + 25], interval="15s") for g in range(0, count, 25)]}  # fmt: skip


def test_a_thousand_rules_finish_within_the_timeout_with_a_readable_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prometheus_build: PrometheusBuild
) -> None:
    count = 1200
    files = {"collection.yml": _large_rule_set(count)}
    with running_prometheus(tmp_path, "large", dict(CONFIG), files, prometheus_build) as (url, _):
        wait_for(url, f"{count} rules loaded", lambda u: len(rules_of(u)) == count)
        started = time.monotonic()
        # just started: what selects nothing is asked again each second for UP_TIMEOUT
        result = run_stack(_stack(tmp_path, url), capabilities=("alerting-thresholds",))
        took = time.monotonic() - started
        monkeypatch.setattr(prometheus, "WARMUP_S", 0.0)  # as on a Prometheus up for a while
        steady = _check(run_stack(_stack(tmp_path, url), capabilities=("alerting-thresholds",)), "no_dead_rules")  # fmt: skip
    assert steady.outcome.value == "failed" and steady.evidence["summary"]["passes"] == 1
    assert steady.duration_s < 5, steady.evidence["summary"]
    print(f"steady no_dead_rules on {count} rules: {steady.duration_s:.2f} s, {steady.evidence['summary']}")  # fmt: skip
    dead = _check(result, "no_dead_rules")
    assert dead.outcome.value == "failed", dead.message
    assert dead.duration_s < 20 and took < 30, (dead.duration_s, took)
    print(f"no_dead_rules on {count} rules: {dead.duration_s:.2f} s, {dead.evidence['summary']}")
    assert dead.message.startswith(f"120 of {count} alert rule(s) can never fire, in 48 group(s) of 1 file(s): collection.yml › collection-0: Collection0[severity=warning] (no series for metric exporter_0_errors_total); ")  # fmt: skip
    assert len(dead.message) < 1000 and "more (evidence.dead)" in dead.message
    assert len(dead.evidence["dead"]) == 120
    summary = dead.evidence["summary"]
    batches = -(-summary["selectors"] // prometheus.PROBE_BATCH)  # per pass, at most
    assert summary["queries"] <= summary["passes"] * batches + 10, summary


def test_what_differs_on_prometheus_3_is_named(
    tmp_path: Path, prometheus_build: PrometheusBuild
) -> None:
    """`le="1"` selects buckets on 2.42 but nothing on 3.x, which stores `le="1.0"`: the finding
    says so. A recorded metric asked with a label value it never has is dead (on both). On 3.x, UTF-8 names (OpenTelemetry's dots, quoted) are asked and diagnosed in
    queries that parse: a dead matcher on `"http.route"` names the values it has."""
    v3 = prometheus_build.major == 3
    bucket = alert("BucketAtOne", 'prometheus_http_request_duration_seconds_bucket{le="1"} > 1e12')
    # on both: a recorded metric that exists, asked with a label value it never has
    recorded = {"record": "job:up:sum", "expr": "sum by (job) (up)"}
    rules: list[dict[str, Any]] = [bucket, recorded, alert("RecordedNope", 'job:up:sum{job="nope"} > 0')]  # fmt: skip
    if v3:  # 2.42 refuses these names
        rules += [
            {
                "record": "stackprobe.utf8.requests",
                "expr": "sum(prometheus_http_requests_total)",
                "labels": {"http.route": "/api"},
            },
            alert("Utf8Alive", '{"stackprobe.utf8.requests", "http.route"="/api"} > 1e12'),
            alert("Utf8Dead", '{"stackprobe.utf8.requests", "http.route"="/nope"} > 0'),
        ]
    files = {"v.yml": {"groups": [group("versions", *rules)]}}
    with running_prometheus(tmp_path, "versions", dict(CONFIG), files, prometheus_build) as (url, _):  # fmt: skip
        wait_for(url, "the group evaluated", lambda u: all(r["health"] == "ok" for r in rules_of(u)))  # fmt: skip
        for query in ["count(prometheus_http_request_duration_seconds_bucket)", "job:up:sum", *(['{"stackprobe.utf8.requests"}'] if v3 else [])]:  # fmt: skip
            wait_for(url, f"{query} answered", lambda u, q=query: httpx.get(f"{u}/api/v1/query", params={"query": q}).json()["data"]["result"])  # fmt: skip
        result = run_stack(_stack(tmp_path, url), capabilities=("alerting-thresholds",))
    dead = _check(result, "no_dead_rules")
    found = {e["rule"]: e for e in dead.evidence["dead"]}
    assert dead.evidence["summary"]["not_parsed"] == 0
    assert dead.outcome.value == "failed", dead.message
    assert 'RecordedNope (job:up:sum{job="nope"}: job="nope" selects nothing (job has "prometheus"))' in dead.message  # fmt: skip
    if not v3:  # le="1" is what 2.42 stores
        assert sorted(found) == ["RecordedNope"], dead.message
        return
    assert sorted(found) == ["BucketAtOne", "RecordedNope", "Utf8Dead"]
    assert 'le="1" selects nothing: this Prometheus stores le="1.0" (3.x normalises le to a float)' in dead.message  # fmt: skip
    assert '"http.route"="/nope" selects nothing ("http.route" has "/api")' in dead.message
    assert dead.evidence["summary"]["queries"] > 0 and not dead.evidence["not_asked"]
