"""The grafana kind's checks, run by stackprobe's own engine, against the Grafana stand-in.

The kind (`stackprobe.services.grafana`) is verified here against `tests/standins/grafana.py`,
a stand-in built from Grafana's recorded schemas and example answers (see its tests), not
against a live Grafana: Grafana cannot be installed on these machines. The stand-in's Tempo
datasource points at the Tempo stand-in, so the proxy health probe crosses two stand-ins; the
Prometheus datasource's queries are evaluated by the Grafana stand-in itself.

Every capability passes on a healthy stand-in and fails with what it saw when the stand-in
misbehaves: a failing database, a datasource whose health check fails or that was deleted (so
panels and rules dangle), a missing dashboard, a rule reading a missing datasource or failing
to evaluate, no contact points, a query error or slow queries, anonymous requests acting as
a real user, the default admin password. The token is redacted everywhere, and after every
run the stand-in holds the alert rules and sessions it held before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackprobe.catalog import known_kinds
from stackprobe.ids import service_namespace
from stackprobe.report import RENDERERS
from stackprobe.results import CheckResult, RunResult
from tests.conftest import CliRunner
from tests.integration.helpers import outcomes, run_stack, write_stack
from tests.standins.grafana import GrafanaStandin, alert_rule, panel
from tests.standins.tempo import TempoStandin

GRAFANA_CAPS = known_kinds()["grafana"].capabilities
TOKEN = "glsa_s3cretServiceAccountToken_0123456789"
FOLDER = "000000163"  # the recorded "Folder"


@pytest.fixture
def tempo() -> Iterator[TempoStandin]:
    with TempoStandin() as standin:
        yield standin


@pytest.fixture
def grafana(tempo: TempoStandin) -> Iterator[GrafanaStandin]:
    rules = [alert_rule("rule-errors", "HighErrorRate", "prom", FOLDER)]
    with GrafanaStandin(tokens=(TOKEN,), alert_rules=rules) as standin:
        standin.add_datasource("prom", "Prometheus", "prometheus", "http://prom:9090", is_default=True)  # fmt: skip
        standin.add_datasource("traces", "Tempo", "tempo", tempo.url)
        panels = [
            panel(1, "Requests", "prom"),
            {  # its query is hidden: the stand-in runs only Prometheus queries
                **panel(2, "Traces", "traces", "tempo"),
                "targets": [
                    {
                        "refId": "A",
                        "datasource": {"type": "tempo", "uid": "traces"},
                        "queryType": "traceql",
                        "query": "{}",
                        "hide": True,
                    }
                ],
            },
            {**panel(3, "By name", None), "datasource": "Prometheus"},  # an older dashboard
            {
                **panel(4, "Templated", None),
                "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
            },
            {"type": "row", "title": "Details", "panels": [panel(5, "Latency", "prom")]},
            {
                **panel(6, "Annotations", None),
                "datasource": {"type": "datasource", "uid": "grafana"},
            },
        ]
        variable = {"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus", "current": {}}  # fmt: skip
        standin.provision_dashboard(
            {
                "uid": "stack-overview",
                "title": "Stack Overview",
                "schemaVersion": 39,
                "panels": panels,
                "templating": {"list": [variable]},
            }
        )
        yield standin


def _stack(tmp_path: Path, grafana: GrafanaStandin, **service: Any) -> Path:
    (tmp_path / "grafana.token").write_text(TOKEN + "\n")
    config: dict[str, Any] = {
        "kind": "grafana",
        "url": grafana.url,
        "token_file": "grafana.token",
        "options": {"alert_folder": FOLDER, "check_default_admin": True},
        "expectations": {
            "datasources": ["prom", "traces"],
            "dashboards": ["Stack Overview", "cIBgcSjkk"],
            "contact_points": ["email receiver"],
        },
    }
    return write_stack(tmp_path, {"ui": {**config, **service}})


def _state(grafana: GrafanaStandin) -> tuple[list[dict[str, Any]], int]:
    return grafana.alert_rules(), grafana.sessions()


def _run(tmp_path: Path, grafana: GrafanaStandin, *caps: str, **service: Any) -> RunResult:
    before = _state(grafana)
    result = run_stack(_stack(tmp_path, grafana, **service), capabilities=caps)
    assert _state(grafana) == before, "the run left an alert rule or a session behind"
    return result


def _by_check(result: RunResult) -> dict[str, CheckResult]:
    return {r.check: r for r in result.results}


def _failed(result: RunResult, check: str) -> str:
    found = _by_check(result)[check]
    assert found.outcome.value == "failed", (found.outcome, found.message)
    return found.message


def test_every_capability_passes_with_evidence_and_leaves_nothing(
    tmp_path: Path, grafana: GrafanaStandin
) -> None:
    result = _run(tmp_path, grafana)
    assert {r.check: r.message for r in result.results if r.outcome.value != "passed"} == {}
    cov = result.coverage.services["ui"]
    assert (cov.percent, set(cov.capabilities)) == (100.0, set(GRAFANA_CAPS))
    assert result.services["ui"].version == "11.3.0"
    r = _by_check(result)
    assert r["grafana.health.api_health"].evidence["database"] == "ok"
    datasources = r["grafana.datasources.healthy"]
    assert datasources.message == "2 datasource(s) healthy: Prometheus, Tempo"
    assert set(datasources.evidence["healthy_ms"]) == {"Prometheus", "Tempo"}
    dashboards = r["grafana.dashboards.panels_resolve"]
    assert dashboards.message == "2 dashboard(s) load; 6 panel(s), 6 datasource reference(s), all resolve"  # fmt: skip
    assert dashboards.evidence["templated_refs"] == 1
    assert r["grafana.alerting.rules_and_contact_points"].message == (
        "1 rule(s) read existing datasources and evaluate; 1 contact point(s)"
    )
    probe = r["grafana.alerting.probe_rule_round_trip"].evidence
    assert probe["uid"] == f"{service_namespace(result.run_id, 'ui')}r" and len(probe["uid"]) <= 40
    assert probe["provenance"] == ""  # sent with X-Disable-Provenance: editable in the UI
    query = r["grafana.query-performance.prometheus_instant"].evidence
    assert (query["datasource"], query["queries"], query["threshold_ms"]) == ("prom", 5, 1000.0)
    assert r["grafana.security.anonymous_not_a_user"].message == "anonymous access is off (401)"
    assert r["grafana.security.default_admin_refused"].outcome.value == "passed"
    assert r["grafana.security.credential_works"].message == (
        "service account token accepted (org 'Main Org.'); without it: HTTP 401 Unauthorized (auth.unauthorized)"
    )


def test_health_fails_while_grafanas_database_fails(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    grafana.database_failing = True
    result = _run(tmp_path, grafana, "health")
    assert _failed(result, "grafana.health.api_health") == (
        "GET /api/health: expected 200 with database ok, saw 503 with database 'failing'"
    )


def test_datasources_fail_with_the_health_message(tmp_path: Path, grafana: GrafanaStandin, tempo: TempoStandin) -> None:  # fmt: skip
    grafana.fail_datasource("prom", 'Post "http://prom:9090/api/v1/query": dial tcp: connection refused')  # fmt: skip
    tempo.stop()
    result = _run(tmp_path, grafana, "datasources")
    assert _failed(result, "grafana.datasources.healthy") == (
        '2 unhealthy: Prometheus (prometheus, prom): ERROR Post "http://prom:9090/api/v1/query": '
        "dial tcp: connection refused; Tempo (tempo, traces): proxy GET /api/echo answered HTTP 502 Bad Gateway"
    )


def test_a_deleted_datasource_is_missing_and_leaves_panels_and_rules_dangling(
    tmp_path: Path, grafana: GrafanaStandin
) -> None:
    grafana.remove_datasource("prom")
    result = _run(tmp_path, grafana, "datasources", "dashboards", "alerting", "query-performance")
    assert _failed(result, "grafana.datasources.healthy").startswith(
        "expected datasource(s) prom (expectations.datasources) missing; have: H8joYFVGz, kLtEtcRGk, traces"
    )
    assert _failed(result, "grafana.dashboards.panels_resolve") == (
        "4 reference(s) in 1 dashboard(s) do not resolve: "
        "dashboard 'Stack Overview' (uid stack-overview) panel 1 'Requests' → datasource 'prom' does not exist; "
        "dashboard 'Stack Overview' (uid stack-overview) panel 3 'By name' → datasource 'Prometheus' does not exist; "
        "dashboard 'Stack Overview' (uid stack-overview) panel 4 'Templated' → datasource '${DS_PROMETHEUS}' is variable "
        "$DS_PROMETHEUS (datasources of type 'prometheus'), which has no datasource to pick; and 1 more (evidence.broken)"
    )
    assert _failed(result, "grafana.alerting.rules_and_contact_points") == (
        "1 alert rule quer(y/ies) read a missing datasource: 'HighErrorRate' (rule-errors) query A "
        "reads datasource 'prom', which does not exist"
    )
    r = _by_check(result)
    assert (r["grafana.query-performance.prometheus_instant"].outcome.value, r["grafana.query-performance.prometheus_instant"].message) == ("skipped", "no Prometheus datasource to query through")  # fmt: skip
    assert r["grafana.alerting.probe_rule_round_trip"].outcome.value == "skipped"


def test_expected_datasources_may_be_named_by_name_or_uid(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    result = _run(tmp_path, grafana, "datasources", expectations={"datasources": ["Prometheus", "traces", "Loki"]})  # fmt: skip
    assert _failed(result, "grafana.datasources.healthy") == (
        "expected datasource(s) Loki (expectations.datasources) missing; have: H8joYFVGz, kLtEtcRGk, prom, traces"
    )
    assert _by_check(result)["grafana.datasources.healthy"].evidence["healthy_ms"].keys() == {"Prometheus", "Tempo"}  # fmt: skip


def test_dashboards_fail_when_an_expected_one_is_missing(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    expectations = {"dashboards": ["Stack Overview", "Payments"]}
    result = _run(tmp_path, grafana, "dashboards", expectations=expectations)
    assert _failed(result, "grafana.dashboards.panels_resolve") == (
        "expected dashboard(s) Payments (expectations.dashboards) not found by /api/search"
    )


def test_alerting_fails_on_the_recorded_rule_and_without_contact_points(tmp_path: Path) -> None:
    # the recorded TEST-API_1 rule reads datasource XXXXXXXXX-XXXXXXXXX-XXXXXXXXXX, which no
    # Grafana here has: exactly the finding the check exists for
    with GrafanaStandin(tokens=(TOKEN,), contact_points=[]) as grafana:
        result = _run(tmp_path, grafana, "alerting", expectations={})
    assert _failed(result, "grafana.alerting.rules_and_contact_points") == (
        "no contact points: a firing alert notifies nobody; 1 alert rule quer(y/ies) read a missing "
        "datasource: 'TEST-API_1' (XXXXXXXXX) query A reads datasource 'XXXXXXXXX-XXXXXXXXX-XXXXXXXXXX', "
        "which does not exist"
    )


def test_alerting_fails_when_a_rule_does_not_evaluate(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    grafana.rule_errors["rule-errors"] = "failed to execute query A: context deadline exceeded"
    result = _run(tmp_path, grafana, "alerting")
    assert _failed(result, "grafana.alerting.rules_and_contact_points") == (
        "1 alert rule(s) fail to evaluate: 'HighErrorRate': failed to execute query A: context deadline exceeded"
    )


def test_probe_rule_fails_and_leaves_nothing_when_grafana_refuses_it(
    tmp_path: Path, grafana: GrafanaStandin
) -> None:
    result = _run(tmp_path, grafana, "alerting", options={"alert_folder": "no-such-folder"})
    assert _failed(result, "grafana.alerting.probe_rule_round_trip") == (
        "POST /api/v1/provisioning/alert-rules: expected 201, saw HTTP 400 folder does not exist: no-such-folder"
    )


def test_probe_rule_is_skipped_without_a_folder(tmp_path: Path, grafana: GrafanaStandin) -> None:
    result = _run(tmp_path, grafana, "alerting", options={})
    probe = _by_check(result)["grafana.alerting.probe_rule_round_trip"]
    assert (probe.outcome.value, probe.message) == (
        "skipped",
        "set options.alert_folder (an existing folder uid) to round-trip a probe rule",
    )
    assert not [t for m, t, _ in grafana.requests if m == "POST" and "alert-rules" in t]


def test_query_performance_fails_with_grafanas_query_error(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    grafana.query_error = 'Post "http://grafana-prom:9999/api/v1/query_range": dial tcp 192.168.16.4:9999: connect: connection refused'  # fmt: skip
    result = _run(tmp_path, grafana, "query-performance")
    message = _failed(result, "grafana.query-performance.prometheus_instant")
    assert message.startswith("query vector(") and message.endswith(
        ") through Prometheus (prom): HTTP 400, results.A.error: Post "
        '"http://grafana-prom:9999/api/v1/query_range": dial tcp 192.168.16.4:9999: connect: connection refused'
    )


def test_query_performance_fails_above_the_threshold(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    grafana.query_delay_s = 0.05
    result = _run(tmp_path, grafana, "query-performance", expectations={"query_ms": 20})
    message = _failed(result, "grafana.query-performance.prometheus_instant")
    assert message.startswith("query through Prometheus: expected a median at most 20 ms (expectations.query_ms), saw ")  # fmt: skip
    assert message.endswith(" ms over 5 queries")


def test_security_fails_when_anonymous_requests_act_as_a_user(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    grafana.anonymous = "admin"
    result = _run(tmp_path, grafana, "security")
    assert _failed(result, "grafana.security.anonymous_not_a_user") == (
        "anonymous GET /api/user: expected no user (401/403/404, or id 0), saw user 'admin' "
        "(id 1, Grafana admin True): requests without credentials act as a real account"
    )


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (
            "forbidden",
            "anonymous access is on but not signed in as a user (HTTP 403 Endpoint only available for users)",
        ),
        (
            "not-found",
            "anonymous access is on but not signed in as a user (HTTP 404 user not found)",
        ),
        ("viewer", "anonymous access is on as a non-user identity (id 0, org 1)"),
    ],
)
def test_anonymous_access_that_is_not_a_user_passes(
    tmp_path: Path, grafana: GrafanaStandin, mode: str, message: str
) -> None:
    grafana.anonymous = mode
    result = _run(tmp_path, grafana, "security")
    check = _by_check(result)["grafana.security.anonymous_not_a_user"]
    assert (check.outcome.value, check.message) == ("passed", message)
    credential = _by_check(result)["grafana.security.credential_works"]
    assert credential.outcome.value == "passed"  # anonymous viewers still cannot list datasources


def test_security_fails_on_the_default_admin_password_and_logs_out(
    tmp_path: Path, grafana: GrafanaStandin
) -> None:
    grafana.admin_password = "admin"
    result = _run(tmp_path, grafana, "security")  # also asserts no session is left open
    assert _failed(result, "grafana.security.default_admin_refused") == (
        "POST /login admin/admin: expected 401, saw 200 'Logged in': the default admin password was never changed"
    )


def test_default_admin_login_is_not_tried_unless_asked(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    result = _run(tmp_path, grafana, "security", options={})
    assert _by_check(result)["grafana.security.default_admin_refused"].outcome.value == "skipped"
    assert not [t for m, t, _ in grafana.requests if t == "/login"]


def test_basic_auth_works_and_no_credential_is_only_anonymous(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    result = _run(tmp_path, grafana, "security", "datasources", token_file=None, password=grafana.admin_password)  # fmt: skip
    assert set(outcomes(result).values()) == {"passed"}
    assert _by_check(result)["grafana.security.credential_works"].evidence["credential"] == "basic as admin"  # fmt: skip
    result = _run(tmp_path, grafana, "security", token_file=None)
    credential = _by_check(result)["grafana.security.credential_works"]
    assert (credential.outcome.value, credential.message) == (
        "skipped",
        "no token or password configured: only anonymous access is checked",
    )


def test_a_refused_token_is_an_error_that_never_shows_the_token(tmp_path: Path, grafana: GrafanaStandin) -> None:  # fmt: skip
    grafana.tokens = ("another-token",)
    result = _run(tmp_path, grafana, "datasources", "security")
    r = _by_check(result)
    assert r["grafana.datasources.healthy"].outcome.value == "error"
    assert r["grafana.datasources.healthy"].message == (
        "grafana: HTTP 401 from GET /api/datasources: Unauthorized (auth.unauthorized): check token, or username and password"
    )
    assert r["grafana.security.credential_works"].outcome.value == "error"
    for fmt, render in RENDERERS.items():
        assert TOKEN not in render(result, False), fmt


def test_the_token_is_redacted_even_where_grafana_repeats_it(
    tmp_path: Path, grafana: GrafanaStandin
) -> None:
    # a datasource that forwards the caller's identity may quote the header it got in its error
    grafana.fail_datasource("prom", f"upstream refused Authorization: Bearer {TOKEN}")
    result = _run(tmp_path, grafana, "datasources")
    message = _failed(result, "grafana.datasources.healthy")
    assert message == "1 unhealthy: Prometheus (prometheus, prom): ERROR upstream refused Authorization: Bearer ***"  # fmt: skip
    assert _by_check(result)["grafana.datasources.healthy"].evidence["unhealthy"] == [
        "Prometheus (prometheus, prom): ERROR upstream refused Authorization: Bearer ***"
    ]
    for fmt, render in RENDERERS.items():
        rendered = render(result, False)
        assert TOKEN not in rendered, fmt
    # and the token only ever travelled in the Authorization header
    sent = [(t, auth) for _, t, auth in grafana.requests if TOKEN in t or TOKEN in auth]
    assert sent and all(auth == f"Bearer {TOKEN}" and TOKEN not in t for t, auth in sent)


def test_clean_removes_only_probe_rules_of_old_runs(
    tmp_path: Path, grafana: GrafanaStandin, cli: CliRunner
) -> None:
    old, recent = (
        "stackprobe-20200101T000000Z-aaaaaa-abc-",
        "stackprobe-29990101T000000Z-bbbbbb-abc-",
    )
    for prefix in (old, recent):  # named as the probe check names them
        grafana.add_alert_rule(alert_rule(f"{prefix}r", f"{prefix}grafana-probe-rule", "prom", FOLDER))  # fmt: skip
    done = cli("clean", "-c", str(_stack(tmp_path, grafana)))
    assert done.code == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ui: removed 1 leftover(s)",
        f"  alert rule {old}grafana-probe-rule ({old}r)",
    ]
    assert sorted(r["uid"] for r in grafana.alert_rules()) == ["rule-errors", f"{recent}r"]
