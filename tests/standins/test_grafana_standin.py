"""The Grafana stand-in against the recorded Grafana 10/11 answers.

Each recorded example (recordings/grafana-11/: bodies from Grafana's docs, tests and source,
and third-party transcripts of real servers) is requested from the stand-in, which starts with
the recorded objects themselves (datasources, dashboards, alert rule, contact point), and the
answer is compared with the recording: status, parsed body with its key order, and, where the
recording is a raw transcript (`/api/health`, the 401 body), the bytes and their length. Then
the behaviour the checks rely on that the recordings only describe, and every fault switch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.standins.grafana import GrafanaStandin, alert_rule, panel, recording
from tests.standins.tempo import TempoStandin
from tests.standins.tempo import recording as tempo_recording

TOKEN = "glsa_standin_test_token"


@pytest.fixture
def grafana() -> Iterator[GrafanaStandin]:
    with GrafanaStandin(tokens=(TOKEN,)) as standin:
        yield standin


@pytest.fixture
def http(grafana: GrafanaStandin) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=grafana.url, headers=headers) as client:
        yield client


def example(file: str, index: int = 0) -> dict[str, Any]:
    examples: list[dict[str, Any]] = recording(file)["examples"]
    return examples[index]


def same(seen: Any, recorded: Any) -> None:
    """Equal, with dict keys in the same order (compared at every level)."""
    assert seen == recorded
    if isinstance(recorded, dict):
        assert list(seen) == list(recorded)
        for key, value in recorded.items():
            same(seen[key], value)
    elif isinstance(recorded, list):
        for s, r in zip(seen, recorded, strict=True):
            same(s, r)


def test_api_health_is_the_recorded_pretty_printed_body() -> None:
    recorded = example("GET_api_health.json", 1)
    with GrafanaStandin(version="9.2.0", commit="NA") as grafana:
        answer = httpx.get(f"{grafana.url}/api/health")
        grafana.database_failing = True
        failing = httpx.get(f"{grafana.url}/api/health")
    assert answer.status_code == 200
    assert answer.content == recorded["body_raw"].encode()  # byte for byte, no auth needed
    for name in ("Content-Type", "X-Content-Type-Options", "X-Frame-Options", "X-Xss-Protection", "Content-Length"):  # fmt: skip
        assert answer.headers[name] == recorded["headers"][name]
    assert failing.status_code == 503
    assert list(failing.json()) == list(example("GET_api_health.json", 2)["body"])
    assert failing.json()["database"] == "failing"


def test_requests_without_credentials_get_the_recorded_401(grafana: GrafanaStandin) -> None:
    recorded = example("GET_api_user.json", 2)
    for path in ("/api/datasources", "/api/user", "/api/org", "/api/ds/query"):
        answer = httpx.get(f"{grafana.url}{path}")
        assert answer.status_code == 401
        same(answer.json(), recorded["body"])
        assert answer.headers["content-length"] == recorded["headers"]["Content-Length"]
    same(httpx.get(f"{grafana.url}/api/datasources").json(), example("GET_api_datasources.json", 1)["body"])  # fmt: skip
    wrong = httpx.get(f"{grafana.url}/api/org", auth=("admin", "wrong"))
    assert wrong.status_code == 401
    same(wrong.json(), example("POST_login.json", 2)["body"])
    bad_token = httpx.get(f"{grafana.url}/api/org", headers={"Authorization": "Bearer nope"})
    assert bad_token.status_code == 401


def test_datasources_are_the_recorded_ones(http: httpx.Client) -> None:
    listed = http.get("/api/datasources").json()
    same(listed[0], example("GET_api_datasources.json")["body"][0])
    assert list(listed[1]) == list(listed[0])  # every item in the recorded list shape
    recorded = example("GET_api_datasources_uid_uid.json")
    same(http.get("/api/datasources/uid/kLtEtcRGk").json(), recorded["body"])
    missing = http.get("/api/datasources/uid/nope")
    assert missing.status_code == 404
    same(missing.json(), example("GET_api_datasources_uid_uid.json", 1)["body"])


def test_datasource_health_follows_the_recorded_status_rules(
    grafana: GrafanaStandin, http: httpx.Client
) -> None:
    grafana.add_datasource("prom", "Prometheus", "prometheus", "http://prom:9090")
    grafana.add_datasource("traces", "Tempo", "tempo", "http://tempo:3200")
    recorded = example("GET_api_datasources_uid_uid_health.json")
    ok = http.get("/api/datasources/uid/prom/health")
    assert ok.status_code == 200
    assert list(ok.json()) == list(recorded["body"]) and ok.json()["status"] == "OK"
    grafana.fail_datasource("prom", 'Post "http://prom:9090/api/v1/query": connection refused')
    failing = http.get("/api/datasources/uid/prom/health")
    assert failing.status_code == 400  # any status other than OK: 400 with the same shape
    assert failing.json() == {
        "message": 'Post "http://prom:9090/api/v1/query": connection refused',
        "status": "ERROR",
    }
    no_check = http.get("/api/datasources/uid/traces/health")
    assert (no_check.status_code, no_check.json()) == (404, {"message": "Not found"})
    unknown = http.get("/api/datasources/uid/nope/health")
    assert (unknown.status_code, unknown.json()) == (500, {"message": "Unable to load datasource metadata"})  # fmt: skip


def test_proxy_forwards_to_the_datasource(grafana: GrafanaStandin, http: httpx.Client) -> None:
    with TempoStandin() as tempo:
        grafana.add_datasource("traces", "Tempo", "tempo", tempo.url)
        echo = http.get("/api/datasources/proxy/uid/traces/api/echo")
        assert (echo.status_code, echo.content) == (200, tempo_recording("echo.txt"))
    gone = http.get("/api/datasources/proxy/uid/traces/api/echo")  # Tempo stopped
    assert (gone.status_code, gone.json()) == (502, {"message": "Bad Gateway"})


def test_search_and_dashboards_are_the_recorded_ones(http: httpx.Client) -> None:
    hits = http.get("/api/search", params={"type": "dash-db"}).json()
    same(hits[0], example("GET_api_search_type_dash-db.json", 1)["body"][0])  # CPU
    same(hits[1], example("GET_api_search_type_dash-db.json", 0)["body"][0])  # Production...
    found = http.get("/api/search", params={"type": "dash-db", "query": "production"}).json()
    assert [h["title"] for h in found] == ["Production Overview"]
    folders = http.get("/api/search", params={"type": "dash-folder"}).json()
    assert {h["type"] for h in folders} == {"dash-folder"}
    same(http.get("/api/dashboards/uid/cIBgcSjkk").json(), example("GET_api_dashboards_uid_uid.json")["body"])  # fmt: skip
    missing = http.get("/api/dashboards/uid/nope")
    assert missing.status_code == 404
    same(missing.json(), example("GET_api_dashboards_uid_uid.json", 1)["body"])


def test_added_dashboards_come_back_with_their_panels(
    grafana: GrafanaStandin, http: httpx.Client
) -> None:
    panels = [panel(1, "Requests", "prom"), {"type": "row", "title": "More", "panels": [panel(2, "Errors", "gone")]}]  # fmt: skip
    grafana.add_dashboard("stack", "Stack Overview", panels)
    hit = next(h for h in http.get("/api/search").json() if h["uid"] == "stack")
    assert list(hit) == list(example("GET_api_search_type_dash-db.json", 1)["body"][0])
    assert http.get("/api/dashboards/uid/stack").json()["dashboard"]["panels"] == panels


def _query(http: httpx.Client, uid: str, expr: str) -> httpx.Response:
    query = {"refId": "A", "datasource": {"type": "prometheus", "uid": uid}, "expr": expr, "instant": True}  # fmt: skip
    return http.post("/api/ds/query", json={"queries": [query], "from": "now-5m", "to": "now"})


def test_ds_query_answers_in_the_recorded_frame_shape(
    grafana: GrafanaStandin, http: httpx.Client
) -> None:
    grafana.add_datasource("prom", "Prometheus", "prometheus", "http://prom:9090")
    recorded_frame = example("POST_api_ds_query.json", 1)["body"]["results"]["A"]["frames"][0]
    up = _query(http, "prom", "up")
    assert up.status_code == 200
    frame = up.json()["results"]["A"]["frames"][0]
    assert up.json()["results"]["A"]["status"] == 200
    # the real plugin path adds schema.refId and meta.executedQueryString (recording's note)
    assert frame["schema"].pop("refId") == "A"
    assert frame["schema"]["meta"].pop("executedQueryString") == "Expr: up\nStep: 15s"
    same(frame, recorded_frame)
    value = _query(http, "prom", "vector(123456)").json()["results"]["A"]["frames"][0]
    assert value["data"]["values"][1] == [123456.0]
    assert "labels" not in value["schema"]["fields"][1]
    grafana.query_error = example("POST_api_ds_query.json", 2)["body"]["results"]["A"]["error"]
    failed = _query(http, "prom", "up")
    assert failed.status_code == 400
    same(failed.json(), example("POST_api_ds_query.json", 2)["body"])
    grafana.query_error = None
    assert _query(http, "prom", "rate(x[5m])").status_code == 501


def test_alert_rules_round_trip_in_the_recorded_shape(
    grafana: GrafanaStandin, http: httpx.Client
) -> None:
    recorded = example("GET_api_v1_provisioning_alert-rules.json")
    same(http.get("/api/v1/provisioning/alert-rules").json(), recorded["body"])
    created_example = example("GET_api_v1_provisioning_alert-rules.json", 1)["body"]
    grafana.add_datasource("prom", "Prometheus", "prometheus", "http://prom:9090")
    request = alert_rule("r-1", "probe", "prom", "000000163")
    for key in ("id", "updated", "provenance", "notification_settings", "record"):
        del request[key]
    answer = http.post("/api/v1/provisioning/alert-rules", json=request, headers={"X-Disable-Provenance": "true"})  # fmt: skip
    assert answer.status_code == 201
    assert list(answer.json()) == list(created_example)
    assert answer.json()["provenance"] == ""  # editable in the UI
    same(http.get("/api/v1/provisioning/alert-rules/r-1").json(), answer.json())
    other = http.post("/api/v1/provisioning/alert-rules", json={**request, "uid": "r-2"})
    assert other.json()["provenance"] == "api"
    deleted = http.delete("/api/v1/provisioning/alert-rules/r-1")
    assert (deleted.status_code, deleted.content) == (204, b"")
    gone = http.get("/api/v1/provisioning/alert-rules/r-1")
    assert (gone.status_code, gone.content) == (404, b"")  # 404 bodies can be empty
    bad = http.post("/api/v1/provisioning/alert-rules", json={**request, "uid": "r-3", "folderUID": "nope"})  # fmt: skip
    assert bad.status_code == 400


def test_contact_points_and_rule_state_are_in_the_recorded_shape(
    grafana: GrafanaStandin, http: httpx.Client
) -> None:
    same(
        http.get("/api/v1/provisioning/contact-points").json(),
        example("GET_api_v1_provisioning_contact-points.json")["body"],
    )
    state = http.get("/api/prometheus/grafana/api/v1/rules").json()
    recorded = example("GET_api_prometheus_grafana_api_v1_rules.json")["body"]
    assert list(state) == list(recorded)
    group, recorded_group = state["data"]["groups"][0], recorded["data"]["groups"][0]
    assert list(group) == list(recorded_group)
    rule, recorded_rule = group["rules"][0], recorded_group["rules"][0]
    assert list(rule) == [k for k in recorded_rule if k != "alerts"]  # alerts: omitempty
    assert (rule["state"], rule["health"], rule["type"]) == ("inactive", "ok", "alerting")
    grafana.rule_errors[rule["uid"]] = "failed to execute query A: data source not found"
    broken = http.get("/api/prometheus/grafana/api/v1/rules").json()["data"]["groups"][0]["rules"][0]  # fmt: skip
    assert (broken["health"], broken["lastError"]) == ("error", "failed to execute query A: data source not found")  # fmt: skip


def test_user_org_and_anonymous_modes(grafana: GrafanaStandin, http: httpx.Client) -> None:
    same(http.get("/api/org/").json(), example("GET_api_org.json")["body"])
    admin = httpx.get(f"{grafana.url}/api/user", auth=("admin", grafana.admin_password))
    same(admin.json(), example("GET_api_user.json")["body"])
    forbidden = http.get("/api/user")  # a service account is not a user (10.x)
    assert forbidden.status_code == 403
    expected = {
        "forbidden": (403, example("GET_api_user.json", 3)["body"]),
        "not-found": (404, {"message": "user not found"}),
        "viewer": (200, None),
        "admin": (200, example("GET_api_user.json")["body"]),
        "disabled": (401, example("GET_api_user.json", 2)["body"]),
    }
    for mode, (status, body) in expected.items():
        grafana.anonymous = mode
        answer = httpx.get(f"{grafana.url}/api/user")
        assert answer.status_code == status, mode
        if body is not None:
            same(answer.json(), body)
    grafana.anonymous = "viewer"
    profile = httpx.get(f"{grafana.url}/api/user").json()
    assert profile["id"] == 0 and set(profile) == {"isGrafanaAdmin", "orgId", "uid", "name", "email", "login", "id"}  # fmt: skip


def test_login_answers_and_cookies_are_the_recorded_ones(grafana: GrafanaStandin) -> None:
    refused = httpx.post(f"{grafana.url}/login", json={"user": "admin", "password": "admin"})
    assert refused.status_code == 401
    recorded_refusal = example("POST_login.json", 1)
    same(refused.json(), recorded_refusal["body"])
    for name in ("Cache-Control", "Content-Type", "Content-Length"):
        assert refused.headers[name] == recorded_refusal["headers"][name]
    grafana.admin_password = "admin"
    with httpx.Client(base_url=grafana.url) as browser:
        accepted = browser.post("/login", json={"user": "admin", "password": "admin"})
        assert accepted.status_code == 200
        same(accepted.json(), example("POST_login.json")["body"])
        cookies = accepted.headers.get_list("set-cookie")
        recorded = example("POST_login.json")["headers"]["Set-Cookie"]
        pattern = [re.escape(c).replace("b5d0de3e6207352472f2ba3183a0563d", "[0-9a-f]{32}").replace("1782874944", r"\d+") for c in recorded]  # fmt: skip
        assert [bool(re.fullmatch(p, c)) for p, c in zip(pattern, cookies, strict=True)] == [True, True]  # fmt: skip
        assert browser.get("/api/user").json()["login"] == "admin"  # the session works
        assert grafana.sessions() == 1
        assert browser.get("/logout").status_code == 302
        assert grafana.sessions() == 0


def test_unsupported_requests_say_they_come_from_the_standin(http: httpx.Client) -> None:
    answer = http.get("/api/annotations")
    assert answer.status_code == 501
    assert answer.json()["message"].startswith("grafana stand-in:")


def test_requests_are_logged_with_their_authorization(
    grafana: GrafanaStandin, http: httpx.Client
) -> None:
    http.get("/api/org")
    httpx.get(f"{grafana.url}/api/health")
    assert grafana.requests[-2:] == [
        ("GET", "/api/org", f"Bearer {TOKEN}"),
        ("GET", "/api/health", ""),
    ]


def test_library_elements_are_the_recorded_shapes(grafana: GrafanaStandin, http: httpx.Client) -> None:  # fmt: skip
    model = panel(0, "Heap", "prom")
    grafana.add_library_panel("lib-heap", "Heap in use", model)
    found = http.get("/api/library-elements/lib-heap")
    assert found.status_code == 200
    recorded = example("GET_api_library-elements_uid.json")["body"]["result"]
    result = found.json()["result"]
    assert list(result) == list(recorded) and list(result["meta"]) == list(recorded["meta"])
    assert (result["uid"], result["name"], result["kind"], result["model"]) == ("lib-heap", "Heap in use", 1, model)  # fmt: skip
    missing = http.get("/api/library-elements/nope")
    assert missing.status_code == 404
    same(missing.json(), example("GET_api_library-elements_uid.json", 1)["body"])


def test_provisioned_dashboards_are_served_as_written(grafana: GrafanaStandin, http: httpx.Client) -> None:  # fmt: skip
    written = {
        "__inputs": [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}],
        "title": "Old  rows", "schemaVersion": 14, "id": None,
        "rows": [{"panels": [{"id": 1, "datasource": "${DS_PROMETHEUS}", "targets": [{"expr": "up"}]}]}],
    }  # fmt: skip
    uid = grafana.provision_dashboard(written, file="old.json")
    served = http.get(f"/api/dashboards/uid/{uid}").json()
    assert {k: v for k, v in served["dashboard"].items() if k not in ("id", "uid", "version")} == {k: v for k, v in written.items() if k != "id"}  # fmt: skip
    assert served["meta"]["provisionedExternalId"] == "old.json"
    assert [h["title"] for h in http.get("/api/search", params={"type": "dash-db", "query": "old"}).json()] == ["Old  rows"]  # fmt: skip


def test_prometheus_queries_go_to_a_local_datasource_as_grafana_sends_them(
    grafana: GrafanaStandin, http: httpx.Client
) -> None:
    """A fake Prometheus on this machine answers the recorded range (matrix) answer; the stand-in
    turns it into the recorded frames, with the step, alignment and $__ macros Grafana uses."""
    from tests.standins._http import Answer, Request, Served

    seen: list[str] = []

    class FakePrometheus(Served):
        def route(self, request: Request) -> Answer:
            seen.append(request.target)
            if "nonsense" in request.target:
                return Answer(400, b'{"status":"error","errorType":"bad_data","error":"1:9: parse error: unexpected end of input"}')  # fmt: skip
            return Answer(200, json.dumps(example("POST_api_ds_query.json", 7)["prometheus_answer"]).encode())  # fmt: skip

    with FakePrometheus() as prom:
        grafana.add_datasource("local", "Local", "prometheus", prom.url)
        query = {"refId": "A", "datasource": {"type": "prometheus", "uid": "local"}, "expr": "rate(x[$__rate_interval])", "intervalMs": 30000, "maxDataPoints": 100}  # fmt: skip
        answer = http.post(
            "/api/ds/query", json={"queries": [query], "from": "now-1h", "to": "now"}
        )
        bad = http.post("/api/ds/query", json={"queries": [{**query, "expr": "nonsense("}], "from": "now-1h", "to": "now"})  # fmt: skip
    assert answer.status_code == 200
    [frame] = answer.json()["results"]["A"]["frames"]
    recorded = example("POST_api_ds_query.json", 7)["body"]["results"]["A"]["frames"][0]
    assert frame["data"] == recorded["data"] and frame["schema"]["fields"] == recorded["schema"]["fields"]  # fmt: skip
    assert frame["schema"]["meta"]["executedQueryString"] == "Expr: rate(x[60s])\nStep: 30s"
    assert "/api/v1/query_range?query=rate%28x%5B60s%5D%29&start=" in seen[0] and "step=30.0" in seen[0]  # fmt: skip
    assert bad.status_code == 400
    result = bad.json()["results"]["A"]
    assert (result["status"], result["errorSource"]) == (400, "downstream")
    assert result["error"] == "bad_data: 1:9: parse error: unexpected end of input"
