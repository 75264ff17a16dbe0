"""Dashboards as people publish them, provisioned into the Grafana stand-in as Grafana holds
provisioned files (the JSON as written), through `panels_resolve` and `panel_queries`.

Written here in the shapes found in the wild: the current schema with a Mixed panel and a
query naming another datasource than its (non-Mixed) panel; the pre-schema-16 `rows` layout
with datasources given by name; collapsed rows and a library panel; datasource template
variables (type, regex, current value) used by panels, a query variable and an annotation; an
export from grafana.com (`__inputs`, `${DS_PROMETHEUS}`) provisioned with the datasource
variable people add for it. Each passes; then the same dashboards with one panel pointed at a
missing uid, with the inputs unfilled, with the datasource their variable needs removed, or
with a library panel gone, fail naming the dashboard, the panel and the reference.

`panel_queries` then runs a dashboard's own queries against a real Prometheus (the stand-in
forwards a local datasource's queries to it as Grafana's Prometheus plugin does).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackprobe.results import CheckResult, RunResult
from tests.integration.helpers import run_stack, write_stack
from tests.integration.prometheus_instance import PrometheusBuild, running_prometheus, wait_for
from tests.standins.grafana import GrafanaStandin

TOKEN = "glsa_dashboards_test_token"
PROM = {"type": "prometheus", "uid": "prom"}


def target(expr: str, ref: str = "A", datasource: Any = PROM) -> dict[str, Any]:
    return {"refId": ref, "datasource": datasource, "expr": expr, "range": True}


def ts(id_: int, title: str, datasource: Any, *targets: dict[str, Any]) -> dict[str, Any]:
    return {"id": id_, "type": "timeseries", "title": title, "datasource": datasource, "targets": list(targets), "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0}}  # fmt: skip


def modern() -> dict[str, Any]:
    """Schema 39: a panel whose query names a datasource that is gone, on a non-Mixed panel
    (Grafana runs it on the panel's), a Mixed panel, a default-datasource panel, -- Grafana --
    annotations, a text panel, a -- Dashboard -- panel, an untitled panel."""
    return {
        "uid": "modern", "title": "Service  Overview\t(prod)", "schemaVersion": 39, "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "name": "Annotations & Alerts"}]},
        "panels": [
            ts(1, "Requests", PROM, target("sum(rate(prometheus_http_requests_total[$__rate_interval]))", datasource={"type": "loki", "uid": "loki-gone"})),
            ts(2, "Mixed", {"type": "datasource", "uid": "-- Mixed --"}, target("up", "A"), target("count(up)", "B", {"type": "prometheus", "uid": "prom2"})),
            ts(3, "Default", None, {"refId": "A", "expr": "prometheus_tsdb_head_series"}),
            {"id": 4, "type": "text", "title": "Notes", "options": {"content": "hello"}},
            ts(5, "Same as Requests", {"type": "datasource", "uid": "-- Dashboard --"}, {"refId": "A", "panelId": 1}),
            ts(6, "", PROM, target("go_goroutines")),
        ],
    }  # fmt: skip


def old_rows() -> dict[str, Any]:
    """Schema 14: rows of panels, datasources by name, -- Grafana -- annotations by name."""
    return {
        "uid": "old-rows", "title": "Prometheus 2.0 Stats", "schemaVersion": 14, "version": 3,
        "annotations": {"list": [{"builtIn": 1, "datasource": "-- Grafana --", "enable": True, "name": "Annotations & Alerts"}]},
        "rows": [
            {"title": "Overview", "collapse": False, "panels": [
                {"id": 1, "type": "singlestat", "title": "Uptime", "datasource": "Prometheus", "targets": [{"refId": "A", "expr": "time() - process_start_time_seconds{job=\"prometheus\"}"}]},
                {"id": 2, "type": "graph", "title": "Samples", "datasource": "Prometheus", "targets": [{"refId": "A", "expr": "rate(prometheus_tsdb_head_samples_appended_total[1m])"}]},
            ]},
            {"title": "Storage", "collapse": True, "panels": [
                {"id": 3, "type": "graph", "title": "Head series", "datasource": None, "targets": [{"refId": "A", "expr": "prometheus_tsdb_head_series"}]},
            ]},
        ],
    }  # fmt: skip


def collapsed() -> dict[str, Any]:
    """Collapsed rows keep their panels nested; one of them is a library panel."""
    return {
        "uid": "collapsed", "title": "Collapsed rows", "schemaVersion": 38,
        "panels": [
            {"id": 1, "type": "row", "title": "Go runtime", "collapsed": True, "panels": [
                ts(2, "Goroutines", PROM, target("go_goroutines")),
                {"id": 3, "gridPos": {"h": 8, "w": 12, "x": 12, "y": 1}, "libraryPanel": {"uid": "lib-heap", "name": "Heap in use"}},
            ]},
            {"id": 4, "type": "row", "title": "Expanded", "collapsed": False, "panels": []},
            ts(5, "GC", PROM, target("rate(go_gc_duration_seconds_count[5m])")),
        ],
    }  # fmt: skip


def templated() -> dict[str, Any]:
    """A datasource variable (type, regex, current value) used by panels ($ds and ${ds}), a
    query variable reading through it, an annotation on it, and a multi-value job variable."""
    return {
        "uid": "templated", "title": "Templated", "schemaVersion": 39,
        "annotations": {"list": [{"datasource": {"type": "prometheus", "uid": "${ds}"}, "enable": True, "name": "Restarts", "expr": "changes(process_start_time_seconds[5m]) > 0"}]},
        "templating": {"list": [
            {"name": "ds", "type": "datasource", "query": "prometheus", "regex": "/^Prom/", "current": {"text": "Prometheus", "value": "prom"}},
            {"name": "job", "type": "query", "datasource": {"type": "prometheus", "uid": "${ds}"}, "query": "label_values(up, job)", "multi": True, "includeAll": True,
             "current": {"text": ["prometheus"], "value": ["prometheus"]}},
        ]},
        "panels": [
            ts(1, "Up by job", {"type": "prometheus", "uid": "${ds}"}, target('up{job=~"$job"}', datasource={"type": "prometheus", "uid": "${ds}"})),
            ts(2, "Old style", "$ds", {"refId": "A", "expr": 'sum by (job) (up{job=~"$job"})'}),
        ],
    }  # fmt: skip


def exported(with_variable: bool = True) -> dict[str, Any]:
    """An export: `__inputs` and `${DS_PROMETHEUS}`; provisioned people add the variable."""
    board: dict[str, Any] = {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [{"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "uid": "exported", "title": "Node Exporter Full", "schemaVersion": 39, "id": None,
        "panels": [ts(7, "CPU Busy", {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, target("count(up)", datasource={"type": "prometheus", "uid": "${DS_PROMETHEUS}"}))],
        "templating": {"list": []},
    }  # fmt: skip
    if with_variable:
        board["templating"]["list"].append({"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus", "hide": 2, "current": {}})  # fmt: skip
    return board


BOARDS = {"modern": modern, "old-rows": old_rows, "collapsed": collapsed, "templated": templated, "exported": exported}  # fmt: skip


def standin(
    prom_url: str = "http://prom:9090", replace: dict[str, dict[str, Any]] | None = None
) -> GrafanaStandin:
    """The stand-in with every dashboard of BOARDS provisioned (`replace`: uid -> a variant)."""
    grafana = GrafanaStandin(tokens=(TOKEN,), alert_rules=[])
    grafana.add_datasource("prom", "Prometheus", "prometheus", prom_url, is_default=True)
    grafana.add_datasource("prom2", "Prometheus Two", "prometheus", prom_url)
    grafana.add_library_panel("lib-heap", "Heap in use", ts(0, "Heap in use", PROM, target("go_memstats_heap_inuse_bytes")))  # fmt: skip
    for uid, build in BOARDS.items():
        grafana.provision_dashboard((replace or {}).get(uid) or build(), file=f"{uid}.json")
    return grafana


@pytest.fixture
def grafana() -> Iterator[GrafanaStandin]:
    with standin() as running:
        yield running


def _run(tmp_path: Path, grafana: GrafanaStandin, *caps: str, **expectations: Any) -> RunResult:
    (tmp_path / "token").write_text(TOKEN)
    config = {"kind": "grafana", "url": grafana.url, "token_file": "token", "expectations": {"dashboards": list(BOARDS), **expectations}}  # fmt: skip
    return run_stack(write_stack(tmp_path, {"ui": config}), capabilities=caps or ("dashboards",))


def _check(result: RunResult, check: str) -> CheckResult:
    return next(r for r in result.results if r.check == check)


def test_published_shapes_resolve(tmp_path: Path, grafana: GrafanaStandin) -> None:
    r = _check(_run(tmp_path, grafana), "grafana.dashboards.panels_resolve")
    assert r.outcome.value == "passed", r.message
    # panels: modern 6 (its text panel reads nothing), old rows 3, collapsed 3, templated 2, exported 1
    assert r.message == "5 dashboard(s) load; 15 panel(s), 15 datasource reference(s), all resolve"
    assert (r.evidence["library_panels"], r.evidence["templated_refs"]) == (1, 3)


def test_the_stand_in_holds_the_files_as_written(grafana: GrafanaStandin) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    for uid, build in BOARDS.items():
        served = httpx.get(f"{grafana.url}/api/dashboards/uid/{uid}", headers=headers).json()
        written = build()
        id_ = served["dashboard"].pop("id")
        assert isinstance(id_, int) and served["dashboard"].pop("version") == 1
        written.pop("id", None), written.pop("version", None)
        assert served["dashboard"] == written  # rows, __inputs, nulls and whitespace untouched
        assert served["meta"]["provisioned"] is True
        assert served["meta"]["provisionedExternalId"] == f"{uid}.json"


@pytest.mark.parametrize(
    ("uid", "broken", "seen"),
    [
        (
            "modern",
            lambda d: d["panels"][0].update(datasource={"type": "prometheus", "uid": "prom-gone"}),
            "dashboard 'Service  Overview\\t(prod)' (uid modern) panel 1 'Requests' → datasource 'prom-gone' does not exist",
        ),
        (
            "modern",
            lambda d: d["panels"][1]["targets"][1].update(datasource={"type": "prometheus", "uid": "prom-gone"}),
            "dashboard 'Service  Overview\\t(prod)' (uid modern) panel 2 'Mixed' query B → datasource 'prom-gone' does not exist",
        ),
        (
            "modern",
            lambda d: d["panels"][5].update(datasource="prom-gone"),
            "dashboard 'Service  Overview\\t(prod)' (uid modern) panel 6 (timeseries, untitled) → datasource 'prom-gone' does not exist",
        ),
        (
            "modern",
            lambda d: d["panels"][4]["targets"][0].update(panelId=99),
            "dashboard 'Service  Overview\\t(prod)' (uid modern) panel 5 'Same as Requests' → -- Dashboard -- shows panel 99's results, and the dashboard has no panel 99",
        ),
        (
            "old-rows",
            lambda d: d["rows"][1]["panels"][0].update(datasource="Prometheus Old"),
            "dashboard 'Prometheus 2.0 Stats' (uid old-rows) panel 3 'Head series' → datasource 'Prometheus Old' does not exist",
        ),
        (
            "collapsed",
            lambda d: d["panels"][0]["panels"][1]["libraryPanel"].update(uid="lib-gone"),
            "dashboard 'Collapsed rows' (uid collapsed) panel 3 'Heap in use' → library panel 'Heap in use' (uid lib-gone) does not exist",
        ),
        (
            "templated",
            lambda d: d["templating"]["list"][0].update(regex="/^Thanos/"),
            "dashboard 'Templated' (uid templated) panel 1 'Up by job' → datasource '${ds}' is variable $ds (datasources of type 'prometheus', regex /^Thanos/), which has no datasource to pick",
        ),
        (
            "exported",
            lambda d: d["templating"].update(list=[]),
            "dashboard 'Node Exporter Full' (uid exported) panel 7 'CPU Busy' → datasource '${DS_PROMETHEUS}' was not found: the dashboard was provisioned without its inputs filled (__inputs DS_PROMETHEUS, a prometheus datasource: an import replaces it, file provisioning does not)",
        ),
    ],
)  # fmt: skip
def test_one_broken_reference_fails_naming_dashboard_panel_and_reference(
    tmp_path: Path, uid: str, broken: Any, seen: str
) -> None:
    board = BOARDS[uid]()
    broken(board)
    with standin(replace={uid: board}) as grafana:
        r = _check(_run(tmp_path, grafana), "grafana.dashboards.panels_resolve")
    assert r.outcome.value == "failed"
    count = 4 if uid == "templated" else 1  # the variable breaks both panels, $job, the annotation
    said = f"{count} reference(s) in 1 dashboard(s) do not resolve: {seen}"
    assert r.message == f"{said} (evidence.broken)" if count == 1 else r.message.startswith(said)
    entry = r.evidence["broken"][0]
    assert entry["dashboard_uid"] == uid and entry["why"] in seen


def test_a_removed_datasource_breaks_its_variable_query_variable_and_annotation(tmp_path: Path) -> None:  # fmt: skip
    with standin() as grafana:
        grafana.remove_datasource("prom")
        grafana.remove_datasource("prom2")
        r = _check(_run(tmp_path, grafana, dashboards=["templated"]), "grafana.dashboards.panels_resolve")  # fmt: skip
    assert r.outcome.value == "failed"
    assert r.message.startswith("4 reference(s) in 1 dashboard(s) do not resolve: ")
    where = sorted((b["where"], b["panel_id"]) for b in r.evidence["broken"])
    assert where == [("annotation", None), ("panel datasource", 1), ("panel datasource", 2), ("variable", None)]  # fmt: skip
    assert all("which has no datasource to pick" in b["why"] for b in r.evidence["broken"])


def test_every_broken_reference_is_in_evidence_while_the_message_stays_short(tmp_path: Path) -> None:  # fmt: skip
    board = modern()
    board["panels"] = [ts(i, f"Panel {i}", {"type": "prometheus", "uid": f"gone-{i}"}, target("up")) for i in range(1, 41)]  # fmt: skip
    with standin(replace={"modern": board}) as grafana:
        r = _check(_run(tmp_path, grafana, dashboards=["modern"]), "grafana.dashboards.panels_resolve")  # fmt: skip
    assert len(r.evidence["broken"]) == 40 and "and 37 more (evidence.broken)" in r.message
    assert len(r.message) < 600


# --- panel queries against a real Prometheus ----------------------------------------------------

CONFIG = {
    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
    "scrape_configs": [{"job_name": "prometheus", "static_configs": [{"targets": ["SELF"]}]}],
}


@pytest.fixture(scope="module")
def real_prometheus(
    tmp_path_factory: pytest.TempPathFactory, prometheus_build: PrometheusBuild
) -> Iterator[str]:
    """A real Prometheus behind the stand-in's datasource: 2.42 and 3.x in turn."""
    with running_prometheus(tmp_path_factory.mktemp("panels"), "panels", copy.deepcopy(CONFIG), build=prometheus_build) as (url, _):  # fmt: skip
        wait_for(url, "its own series", lambda u: __import__("httpx").get(f"{u}/api/v1/query", params={"query": "up"}).json()["data"]["result"])  # fmt: skip
        yield url


def test_panel_queries_report_per_panel_latency_against_a_real_prometheus(
    tmp_path: Path, real_prometheus: str
) -> None:
    with standin(real_prometheus) as grafana:
        result = _run(tmp_path, grafana, "query-performance", panel_p95_ms=5000)
    r = _check(result, "grafana.query-performance.panel_queries")
    assert r.outcome.value == "passed", r.message
    per_panel = r.evidence["per_panel"]
    # every panel with queries on a real datasource: modern 1, 2, 3, 6; old rows 1-3;
    # collapsed 2, 3 (library), 5; templated 1, 2; exported 7 (-- Dashboard -- runs in the browser)
    assert len(per_panel) == 13 and all("error" not in p and p["ms"] > 0 for p in per_panel)
    assert r.evidence["not_run"] == {"no queries": 1, "only built-in or hidden queries": 1}
    assert r.evidence["budget_p95_ms"] == 5000 and r.evidence["p95_ms"] <= 5000
    assert r.message.startswith("13 panel(s) of 5 dashboard(s): p95 ")
    assert "slowest dashboard '" in r.message
    # the template variables reached Prometheus with their current values
    exprs = {q.get("expr") for q in grafana.ds_queries}
    assert {'up{job=~"prometheus"}', 'sum by (job) (up{job=~"prometheus"})'} <= exprs
    instant = _check(result, "grafana.query-performance.prometheus_instant")
    assert instant.outcome.value == "passed"  # the vector(N) round trip still proves the pipeline


def test_panel_queries_fail_naming_each_panel_whose_query_errors(
    tmp_path: Path, real_prometheus: str
) -> None:
    board = templated()
    board["panels"][1]["targets"][0]["expr"] = 'sum by (job) (up{job=~"$job"}'  # unclosed
    with standin(real_prometheus, replace={"templated": board}) as grafana:
        r = _check(_run(tmp_path, grafana, "query-performance", dashboards=["templated"]), "grafana.query-performance.panel_queries")  # fmt: skip
    assert r.outcome.value == "failed"
    assert r.message.startswith(
        "1 of 2 panel(s) answer with an error: dashboard 'Templated' (uid templated) panel 2 'Old style': A: bad_data: "
    )
    [error] = r.evidence["errors"]
    assert (error["panel_id"], error["queries"]) == (2, 1) and "parse error" in error["error"]


def test_panel_queries_fail_over_the_budget(tmp_path: Path, real_prometheus: str) -> None:
    with standin(real_prometheus) as grafana:
        grafana.query_delay_s = 0.03
        r = _check(_run(tmp_path, grafana, "query-performance", panel_p95_ms=10), "grafana.query-performance.panel_queries")  # fmt: skip
    assert r.outcome.value == "failed"
    assert (
        " ms over the 10 ms budget (expectations.panel_p95_ms); slowest: dashboard '" in r.message
    )
    assert r.evidence["p95_ms"] > 10 and len(r.evidence["slowest"]) == 5
