"""A stand-in for Grafana 10/11's HTTP API, for tests only.

Why it exists: Grafana cannot be installed on the machines that run these tests (DESIGN.md,
"Services available to tests"), yet the grafana kind (`stackprobe.services.grafana`) has to be
exercised end to end. DESIGN.md rule 1 allows a stand-in under tests/standins/ for such kinds,
provided its answers follow recorded real responses.

What it is faithful to: `recordings/grafana-11/` (a copy of the project's shared recordings:
Grafana's OpenAPI schemas, the example bodies of its docs and tests, and a few third-party
transcripts of real servers; see its README). Status codes and bodies, errors included,
follow them, and the objects it starts with are the recorded examples themselves (the
elasticsearch and graphite datasources, the "Production Overview" and "CPU" dashboards, the
TEST-API_1 alert rule, the default email contact point); `test_grafana_standin.py` compares
its answers with the recordings. Where the recordings are silent the behaviour follows
Grafana's source or docs and is marked "(not recorded)". What is valid for Grafana but not
implemented here answers 501 with a message starting "grafana stand-in:", so it is never
mistaken for a Grafana answer.

It serves what it was sent: alert rules posted through the provisioning API are listed, read
and deleted; the datasource proxy forwards to the datasource's own URL (a Tempo stand-in, in
the tests); `/api/ds/query` evaluates `vector(<number>)` itself, as the Prometheus behind it
would, so the number sent is the number read back.

Modelled behaviour (recorded unless marked):
- Auth: `Authorization: Bearer <token>` (a service account) or basic `admin:<password>`; a
  session cookie from `POST /login`. No credentials → 401 `auth.unauthorized` body; a wrong
  basic password → 401 `password-auth.failed`. `GET /api/health` needs none.
- `GET /api/health`: 200 pretty-printed `{database, version, commit}`; `database_failing` →
  503 `"database":"failing"` (source).
- Datasources: list (DataSourceListItemDTO), by uid (DataSource; 404 `Data source not
  found`), health by uid: 200 `{status:"OK", message}`, 400 with `{status:"ERROR", message}`
  when failing, 404 `{"message":"Not found"}` for a plugin without a health check (Tempo,
  older versions' text), 500 `Unable to load datasource metadata` for an unknown uid.
  Health message texts are not recorded.
- `GET /api/datasources/proxy/uid/<uid>/<path>` forwards a GET to `<datasource url>/<path>`
  and passes the answer through; an unreachable datasource → 502 `{"message":"Bad Gateway"}`
  (not recorded).
- `GET /api/search` (`type`, `query`, `limit`): hits sorted by title; a recorded dashboard is
  listed with its recorded hit; `GET /api/dashboards/uid/<uid>` → `{dashboard, meta}`, 404
  `{"message":"Dashboard not found"}`.
- `POST /api/ds/query`: Prometheus `vector(N)` and `up` (the recorded vector frames) → 200
  `results.A.frames`; `query_error` → 400 with `results.A.error` (the recorded unreachable
  datasource answer). A Tempo `queryType: traceId` query fetches `<tempo>/api/traces/<id>` as
  protobuf from the datasource's URL and answers one `Trace` frame, a row per span; a Tempo
  that does not answer 200 → 400 with `results.A.error` "failed to get trace with id: ..."
  (source, not recorded: no recorded success body exists). Other expressions and datasource
  types → 501.
- Alerting provisioning: alert rules GET list, POST → 201 (`X-Disable-Provenance: true` →
  `provenance:""`, else `"api"`), GET/DELETE `<uid>` → 200/204, 404 with an empty body;
  a rule whose folder does not exist or whose data names an unknown datasource → 400
  `{"message": ...}` (not recorded); contact points GET list; rule state
  `GET /api/prometheus/grafana/api/v1/rules` in the recorded group/rule shape, health `ok`
  (or `error` with `lastError`, Prometheus' convention, not recorded).
- `GET /api/user` (the signed-in user's recorded profile), `GET /api/org/`, `POST /login`
  (recorded bodies and cookies), `GET /logout` (revokes the session, 302; not recorded).

Fault switches (attributes, settable while running): `database_failing`, `anonymous`
("disabled": 401, "forbidden": `/api/user` 403 `Endpoint only available for users`,
"not-found": 404, "viewer": 200 with id 0, "admin": 200 as the admin user, id 1),
`admin_password` ("admin" makes the default login work), `fail_datasource(uid, message)`,
`remove_datasource(uid)` (panels and rules that use it dangle), `query_error`,
`query_delay_s`, `rule_errors` (rule uid → lastError).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from opentelemetry.proto.trace.v1 import trace_pb2

from tests.standins._http import Answer, Request, Served

RECORDINGS = Path(__file__).parent / "recordings" / "grafana-11"
EXPRESSION_UIDS = ("__expr__", "-100")  # server-side expressions, not datasources
HEALTH_OK = {
    "prometheus": "Successfully queried the Prometheus API.",  # (Grafana's text, not recorded)
}
DEFAULT_HEALTH_OK = "Data source is working"  # (not recorded)
# the Trace frame's fields and types (source, not recorded: pkg/tsdb/tempo/trace_transform.go)
TRACE_FIELDS = {
    "traceID": "string", "spanID": "string", "parentSpanID": "string", "operationName": "string",
    "serviceName": "string", "kind": "string", "statusCode": "number", "statusMessage": "string",
    "instrumentationLibraryName": "string", "instrumentationLibraryVersion": "string",
    "traceState": "string", "serviceTags": "other", "startTime": "number", "duration": "number",
    "logs": "other", "references": "other", "tags": "other",
}  # fmt: skip
_SPAN_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
NO_HEALTH_CHECK = ("tempo",)  # plugins without CheckHealth on 10/11 (API-NOTES)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "deny",
    "X-Xss-Protection": "1; mode=block",
    "Cache-Control": "no-store",
}


def recording(name: str) -> dict[str, Any]:
    """One recorded endpoint file (`{endpoint, schema, examples, source}`)."""
    data: dict[str, Any] = json.loads((RECORDINGS / name).read_text())
    return data


def recorded_body(name: str, index: int = 0) -> Any:
    return copy.deepcopy(recording(name)["examples"][index]["body"])


def _json(
    status: int,
    body: Any,
    *,
    newline: bool = False,
    content_type: str = "application/json; charset=UTF-8",
    **headers: str,
) -> Answer:
    """Compact JSON; `newline` for bodies written by Go's json.Encoder (it appends one)."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False) + ("\n" if newline else "")
    return Answer(status, text.encode(), content_type, {**SECURITY_HEADERS, **headers})


UNAUTHORIZED = recorded_body("GET_api_user.json", 2)  # {"extra":null,"message":"Unauthorized",...}
BAD_PASSWORD = recorded_body("POST_login.json", 1)  # POST /login
BAD_BASIC_AUTH = recorded_body("POST_login.json", 2)  # basic auth on /api/*: other key order


class GrafanaFailure(Exception):
    def __init__(self, status: int, body: Any = None) -> None:
        super().__init__(str(body))
        self.status, self.body = status, body

    def answer(self) -> Answer:
        if self.body is None:  # provisioning 404s may have no body (README 8)
            return Answer(self.status, b"", "text/plain; charset=utf-8", dict(SECURITY_HEADERS))
        # the auth middleware's 401 is 102 bytes for a 101-byte object: encoded with a newline
        return _json(self.status, self.body, newline=self.body is UNAUTHORIZED)


def not_implemented(what: str) -> GrafanaFailure:
    return GrafanaFailure(501, {"message": f"grafana stand-in: {what} is not implemented"})


# --- objects in their recorded shapes ----------------------------------------------------------

_LIST_KEYS = list(recorded_body("GET_api_datasources.json")[0])  # DataSourceListItemDTO order
_FULL_KEYS = list(recorded_body("GET_api_datasources_uid_uid.json"))  # DataSource order


def datasource(
    uid: str, name: str, type_: str, url: str, *, id_: int, is_default: bool = False
) -> dict[str, Any]:
    """A datasource in the recorded DataSource shape (GET /api/datasources/uid/<uid>)."""
    full: dict[str, Any] = dict.fromkeys(_FULL_KEYS, "")
    full.update(
        id=id_,
        uid=uid,
        orgId=1,
        name=name,
        type=type_,
        typeLogoUrl=f"public/app/plugins/datasource/{type_}/img/{type_}_logo.svg",
        access="proxy",
        url=url,
        basicAuth=False,
        withCredentials=False,
        isDefault=is_default,
        jsonData={},
        secureJsonFields={},
        version=1,
        readOnly=True,
    )
    return full


def _listed(full: dict[str, Any]) -> dict[str, Any]:
    return {key: copy.deepcopy(full.get(key, "")) for key in _LIST_KEYS}


def panel(
    id_: int, title: str, datasource_uid: str | None, type_: str = "prometheus"
) -> dict[str, Any]:
    """A panel of the current dashboard model: datasource {type, uid} and one target."""
    ref = None if datasource_uid is None else {"type": type_, "uid": datasource_uid}
    return {
        "id": id_,
        "type": "timeseries",
        "title": title,
        "datasource": ref,
        "targets": [{"refId": "A", "datasource": ref, "expr": "up"}],
        "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
    }


def alert_rule(
    uid: str, title: str, datasource_uid: str, folder_uid: str, group: str = "stack"
) -> dict[str, Any]:
    """An alert rule in the recorded provisioning shape, reading `up` from a datasource."""
    rule: dict[str, Any] = recorded_body("GET_api_v1_provisioning_alert-rules.json")[0]
    rule.update(uid=uid, title=title, folderUID=folder_uid, ruleGroup=group, provenance="file")
    rule["data"][0]["datasourceUid"] = datasource_uid
    return rule


def _time_ms(text: str, now_ms: int) -> int:
    """Grafana's from/to: epoch milliseconds, `now`, or `now-<n><unit>`."""
    if text.isdigit():
        return int(text)
    match = re.fullmatch(r"now(?:-(\d+)([smhdw]))?", text)
    if match is None:
        raise GrafanaFailure(400, {"message": f"invalid time range: {text}"})  # (not recorded)
    if not match.group(1):
        return now_ms
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return now_ms - int(match.group(1)) * unit * 1000


def _local(url: str) -> bool:
    """A datasource URL served on this machine (a test's real Prometheus): queries go there."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms" if seconds < 1 else f"{int(seconds)}s"


def _prometheus_query(
    url: str, ref: str, query: dict[str, Any], start_ms: int, end_ms: int
) -> dict[str, Any]:
    """What Grafana's Prometheus plugin (pkg/promlib) does with one query: the step from
    intervalMs, the datasource's 15 s scrape interval and the range (at most 11000 points), the
    range aligned to the step, $__interval, $__rate_interval and $__range replaced, then
    /api/v1/query_range (or /api/v1/query for instant queries) and the answer as data frames
    (recorded vector and matrix frames); a Prometheus error is the query's error, status 400,
    and a refused connection the recorded unreachable answer."""
    scrape = 15.0
    minimum = _seconds(str(query.get("interval") or "")) or scrape
    range_s = max((end_ms - start_ms) / 1000, 1.0)
    step = max(float(query.get("intervalMs") or 0) / 1000, minimum, range_s / 11000)
    step = float(int(step)) if step >= 1 else step
    start = (start_ms / 1000 // step) * step
    end = (end_ms / 1000 // step) * step
    expr = str(query.get("expr") or "")
    rate_interval = max(step + scrape, 4 * scrape)
    for name, value in (
        ("$__rate_interval", _duration(rate_interval)), ("$__interval_ms", str(int(step * 1000))),
        ("$__interval", _duration(step)), ("$__range_ms", str(int(range_s * 1000))),
        ("$__range_s", str(int(range_s))), ("$__range", _duration(range_s)),
    ):  # fmt: skip
        expr = expr.replace(name, value).replace("${" + name[1:] + "}", value)
    instant = bool(query.get("instant")) and not query.get("range")
    path = "/api/v1/query" if instant else "/api/v1/query_range"
    params = {"query": expr, "time": str(end)} if instant else {"query": expr, "start": str(start), "end": str(end), "step": str(step)}  # fmt: skip
    target = url.rstrip("/") + path
    executed = f"Expr: {expr}\nStep: {_duration(step)}"
    try:
        address = f"{target}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(address, timeout=10) as upstream:  # noqa: S310 - the test's own URL
            body = json.loads(upstream.read())
    except urllib.error.HTTPError as exc:
        said = json.loads(exc.read() or b"{}")
        empty = {"schema": {"refId": ref, "meta": {"custom": {"calculatedMinStep": int(step * 1000)}, "executedQueryString": executed}, "fields": []}, "data": {"values": []}}  # fmt: skip
        return {"error": f"{said.get('errorType', 'error')}: {said.get('error', '')}", "errorSource": "downstream", "status": 400, "frames": [empty]}  # fmt: skip
    except OSError as exc:
        answer: dict[str, Any] = recorded_body("POST_api_ds_query.json", 2)["results"]["A"]
        reason = getattr(exc, "reason", exc)
        answer["error"] = f'Post "{target}": dial tcp {urllib.parse.urlsplit(url).netloc}: connect: {reason}'  # fmt: skip
        return answer
    data = body.get("data") or {}
    frames = []
    kind = data.get("resultType")
    for series in data.get("result") or []:
        if kind == "matrix":
            frame: dict[str, Any] = recorded_body("POST_api_ds_query.json", 7)["results"]["A"]["frames"][0]  # fmt: skip
            points = series.get("values") or []
        else:
            frame = recorded_body("POST_api_ds_query.json", 1)["results"]["A"]["frames"][0]
            points = [series.get("value")] if series.get("value") else []
        frame["schema"] = {"refId": ref, **frame["schema"]}
        frame["schema"]["meta"]["executedQueryString"] = executed
        frame["schema"]["fields"][1]["labels"] = dict(series.get("metric") or {})
        values = [_number(v) for _, v in points]
        frame["data"] = {"values": [[int(float(t) * 1000) for t, _ in points], values]}
        frames.append(frame)
    if not frames:  # no data: one frame without fields, as Grafana answers
        frames = [{"schema": {"refId": ref, "meta": {"typeVersion": [0, 0], "executedQueryString": executed}, "fields": []}, "data": {"values": []}}]  # fmt: skip
    return {"status": 200, "frames": frames}


def _seconds(text: str) -> float | None:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text.strip())
    if match is None:
        return None
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _number(value: str) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None  # (+Inf/NaN: null, entities left out)


class GrafanaStandin(Served):
    """A running stand-in: `with GrafanaStandin(tokens=("t",)) as grafana: ... grafana.url`."""

    def __init__(
        self,
        *,
        version: str = "11.3.0",
        commit: str = "d9455ff7db7",
        admin_password: str = "standin-admin-pw",
        tokens: tuple[str, ...] = (),
        anonymous: str = "disabled",
        alert_rules: list[dict[str, Any]] | None = None,
        contact_points: list[dict[str, Any]] | None = None,
    ) -> None:
        self.version = version
        self.commit = commit
        self.admin_password = admin_password
        self.tokens = tokens
        self.anonymous = anonymous
        self.database_failing = False
        self.query_error: str | None = None
        self.query_delay_s = 0.0
        self.rule_errors: dict[str, str] = {}
        self.requests: list[tuple[str, str, str]] = []  # method, target, Authorization
        self.ds_queries: list[dict[str, Any]] = []  # every query /api/ds/query was sent
        self._lock = threading.RLock()
        self._sessions: set[str] = set()
        self._ids = iter(range(100, 10**6))
        self.folders = {
            "000000163": "Folder",
            "l3KqBxCMz": "Production",
            "d22318e2-bfdb-45f6-b238-4562085ba79c": "YDB",
            "SET_FOLDER_UID": "API",
        }
        # datasources: uid -> (full DTO, list DTO); the recorded examples first
        self._datasources: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._health: dict[str, tuple[str, str]] = {}
        listed = recorded_body("GET_api_datasources.json")[0]
        full = {**datasource(listed["uid"], listed["name"], listed["type"], listed["url"], id_=1), **{k: v for k, v in listed.items() if k in _FULL_KEYS}}  # fmt: skip
        self._datasources[listed["uid"]] = (full, listed)
        graphite = recorded_body("GET_api_datasources_uid_uid.json")
        self._datasources[graphite["uid"]] = (graphite, _listed(graphite))
        # dashboards: uid -> {hit, dashboard, meta}; the recorded examples first
        self._dashboards: dict[str, dict[str, Any]] = {}
        self._library: dict[str, dict[str, Any]] = {}  # library element uid -> element
        recorded_dashboard = recorded_body("GET_api_dashboards_uid_uid.json")
        self._dashboards[recorded_dashboard["dashboard"]["uid"]] = {
            "hit": recorded_body("GET_api_search_type_dash-db.json")[0],
            **recorded_dashboard,
        }
        cpu_hit = recorded_body("GET_api_search_type_dash-db.json", 1)[0]
        self._dashboards[cpu_hit["uid"]] = {
            "hit": cpu_hit,
            "dashboard": {
                "id": cpu_hit["id"],
                "uid": cpu_hit["uid"],
                "title": cpu_hit["title"],
                "tags": cpu_hit["tags"],
                "schemaVersion": 39,
                "version": 1,
                "panels": [],
            },
            "meta": {
                "isStarred": False,
                "url": cpu_hit["url"],
                "folderId": cpu_hit["folderId"],
                "folderUid": cpu_hit["folderUid"],
                "slug": "cpu",
            },
        }
        self._rules: dict[str, dict[str, Any]] = {
            r["uid"]: r
            for r in (
                alert_rules
                if alert_rules is not None
                else recorded_body("GET_api_v1_provisioning_alert-rules.json")
            )
        }
        self.contact_points = (
            contact_points
            if contact_points is not None
            else recorded_body("GET_api_v1_provisioning_contact-points.json")
        )

    # --- test helpers: seed, faults, inspect ---------------------------------------------------

    def add_datasource(
        self, uid: str, name: str, type_: str, url: str, *, is_default: bool = False
    ) -> dict[str, Any]:
        with self._lock:
            full = datasource(uid, name, type_, url, id_=next(self._ids), is_default=is_default)
            self._datasources[uid] = (full, _listed(full))
            return full

    def remove_datasource(self, uid: str) -> None:
        with self._lock:
            del self._datasources[uid]

    def fail_datasource(self, uid: str, message: str) -> None:
        """Its health check answers 400 {status: ERROR, message}."""
        self._health[uid] = ("ERROR", message)

    def add_dashboard(
        self, uid: str, title: str, panels: list[dict[str, Any]], folder_uid: str = "000000163"
    ) -> None:
        """A dashboard of the current schema with these panels, provisioned from a file."""
        model = {"uid": uid, "title": title, "tags": [], "timezone": "browser", "schemaVersion": 39, "panels": panels}  # fmt: skip
        self.provision_dashboard(model, folder_uid)

    def provision_dashboard(
        self, model: dict[str, Any], folder_uid: str = "000000163", file: str | None = None
    ) -> str:
        """A dashboard JSON file as Grafana's file provisioning stores it: the JSON as written
        (old `rows` layout, `__inputs`, templating, library panel references: nothing is
        migrated or filled in; Grafana's frontend does that when it shows it), with only `id`
        (the database id), `uid` (generated when the file has none) and `version` set, as
        Grafana's save does. Its search hit is in the recent recorded shape. Returns the uid."""
        dashboard = copy.deepcopy(model)
        uid = str(dashboard.get("uid") or secrets.token_hex(7))
        title = str(dashboard.get("title") or "")
        if not title:  # (Grafana refuses it: "Dashboard title cannot be empty")
            raise ValueError("a provisioned dashboard needs a title")
        id_ = next(self._ids)
        dashboard.update(id=id_, uid=uid, version=1)
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        with self._lock:
            self._dashboards[uid] = {
                "hit": {
                    "id": id_,
                    "uid": uid,
                    "orgId": 1,
                    "title": title,
                    "uri": f"db/{slug}",
                    "url": f"/d/{uid}/{slug}",
                    "slug": "",
                    "type": "dash-db",
                    "tags": list(dashboard.get("tags") or []),
                    "isStarred": False,
                    "folderId": 2,
                    "folderUid": folder_uid,
                    "folderTitle": self.folders.get(folder_uid, ""),
                    "folderUrl": f"/dashboards/f/{folder_uid}/{slug}",
                    "sortMeta": 0,
                    "isDeleted": False,
                },
                "dashboard": dashboard,
                "meta": {
                    "isStarred": False,
                    "url": f"/d/{uid}/{slug}",
                    "folderId": 2,
                    "folderUid": folder_uid,
                    "slug": slug,
                    "provisioned": True,
                    "provisionedExternalId": file or f"{slug}.json",
                },
            }
        return uid

    def add_library_panel(
        self, uid: str, name: str, model: dict[str, Any], folder_uid: str = ""
    ) -> None:
        """A library panel in the documented LibraryElementDTO shape (kind 1)."""
        element: dict[str, Any] = recorded_body("GET_api_library-elements_uid.json")["result"]
        element.update(id=next(self._ids), uid=uid, name=name, type=str(model.get("type") or ""), model=copy.deepcopy(model))  # fmt: skip
        element["meta"].update(folderUid=folder_uid, folderName=self.folders.get(folder_uid, "General"))  # fmt: skip
        with self._lock:
            self._library[uid] = element

    def remove_library_panel(self, uid: str) -> None:
        with self._lock:
            del self._library[uid]

    def add_alert_rule(self, rule: dict[str, Any]) -> None:
        with self._lock:
            self._rules[rule["uid"]] = copy.deepcopy(rule)

    def alert_rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._rules.values()))

    def sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    # --- routing ---------------------------------------------------------------------------

    def route(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(
                (request.method, request.target, request.headers.get("authorization", ""))
            )
        try:
            return self._route(request)
        except GrafanaFailure as failure:
            return failure.answer()

    def _route(self, request: Request) -> Answer:
        path, method = request.path.rstrip("/") or "/", request.method
        if path == "/api/health" and method in ("GET", "HEAD"):
            return self._api_health()
        if path == "/login" and method == "POST":
            return self._login(request)
        if path == "/logout" and method == "GET":
            return self._logout(request)
        who = self._identify(request)
        if path == "/api/user" and method == "GET":
            return self._user(who)
        if who == "anonymous":
            if path == "/api/org" and method == "GET":
                return _json(200, recorded_body("GET_api_org.json"))
            raise GrafanaFailure(403, {"message": "Permission denied"})  # (not recorded)
        if path == "/api/org" and method == "GET":
            return _json(200, recorded_body("GET_api_org.json"))
        if path == "/api/datasources" and method == "GET":
            with self._lock:
                return _json(200, [copy.deepcopy(listed) for _, listed in self._datasources.values()])  # fmt: skip
        if match := re.fullmatch(r"/api/datasources/uid/([^/]+)(/health)?", path):
            return self._datasource(match.group(1), bool(match.group(2)))
        if match := re.fullmatch(r"/api/datasources/proxy/uid/([^/]+)(/.*)?", path):
            return self._proxy(request, match.group(1), match.group(2) or "/")
        if path == "/api/search" and method == "GET":
            return self._search(request)
        if match := re.fullmatch(r"/api/dashboards/uid/([^/]+)", path):
            with self._lock:
                found = self._dashboards.get(match.group(1))
                if found is None:
                    raise GrafanaFailure(404, {"message": "Dashboard not found"})
                return _json(200, {"dashboard": found["dashboard"], "meta": found["meta"]})
        if match := re.fullmatch(r"/api/library-elements/([^/]+)", path):
            with self._lock:
                element = self._library.get(match.group(1))
                if element is None or method != "GET":
                    if method != "GET":
                        raise not_implemented(f"{method} {path}")
                    raise GrafanaFailure(404, recorded_body("GET_api_library-elements_uid.json", 1))  # fmt: skip
                return _json(200, {"result": copy.deepcopy(element)})
        if path == "/api/ds/query" and method == "POST":
            return self._query(request)
        if path.startswith("/api/v1/provisioning/alert-rules"):
            return self._alert_rules(request, path.removeprefix("/api/v1/provisioning/alert-rules"))  # fmt: skip
        if path == "/api/v1/provisioning/contact-points" and method == "GET":
            return _json(200, copy.deepcopy(self.contact_points))
        if path == "/api/prometheus/grafana/api/v1/rules" and method == "GET":
            return self._rule_state()
        raise not_implemented(f"{method} {path}")

    def _identify(self, request: Request) -> str:
        """'admin', 'service-account', 'anonymous'; or raise the recorded 401."""
        sent = request.headers.get("authorization", "")
        if sent.startswith("Bearer "):
            if sent.removeprefix("Bearer ") in self.tokens:
                return "service-account"
            raise GrafanaFailure(401, UNAUTHORIZED)
        if sent.startswith("Basic "):
            user, _, password = base64.b64decode(sent[6:]).decode().partition(":")
            if user == "admin" and password == self.admin_password:
                return "admin"
            raise GrafanaFailure(401, BAD_BASIC_AUTH)
        cookie = request.headers.get("cookie", "")
        if match := re.search(r"grafana_session=([0-9a-f]+)", cookie):
            with self._lock:
                if match.group(1) in self._sessions:
                    return "admin"
        if self.anonymous == "disabled":
            raise GrafanaFailure(401, UNAUTHORIZED)
        return "anonymous"

    def _api_health(self) -> Answer:
        body: dict[str, Any] = {"database": "failing" if self.database_failing else "ok"}
        if self.version:  # hide_version leaves both out
            body.update(version=self.version, commit=self.commit)
        text = json.dumps(body, indent=2)  # Grafana pretty-prints this one
        return Answer(
            503 if self.database_failing else 200,
            text.encode(),
            "application/json; charset=UTF-8",
            {k: v for k, v in SECURITY_HEADERS.items() if k != "Cache-Control"},
        )

    def _login(self, request: Request) -> Answer:
        body = request.json() or {}
        if body.get("user") != "admin" or body.get("password") != self.admin_password:
            return _json(401, BAD_PASSWORD, content_type="application/json")  # 94 bytes, recorded
        token = secrets.token_hex(16)
        with self._lock:
            self._sessions.add(token)
        expiry = int(time.time()) + 2592000
        answer = _json(200, recorded_body("POST_login.json"))
        return Answer(
            answer.status,
            answer.body,
            answer.content_type,
            answer.headers,
            cookies=(
                f"grafana_session={token}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax",
                f"grafana_session_expiry={expiry}; Path=/; Max-Age=2592000; SameSite=Lax",
            ),
        )

    def _logout(self, request: Request) -> Answer:  # (not recorded)
        if match := re.search(r"grafana_session=([0-9a-f]+)", request.headers.get("cookie", "")):
            with self._lock:
                self._sessions.discard(match.group(1))
        return Answer(302, b"", "text/html; charset=utf-8", {"Location": "/login"})

    def _user(self, who: str) -> Answer:
        if who == "admin" or (who == "anonymous" and self.anonymous == "admin"):
            return _json(200, recorded_body("GET_api_user.json", 0))
        if who == "service-account":  # (10.x getUserID for non-user identities)
            raise GrafanaFailure(403, recorded_body("GET_api_user.json", 3))
        if self.anonymous == "forbidden":
            raise GrafanaFailure(403, recorded_body("GET_api_user.json", 3))
        if self.anonymous == "not-found":  # (text not verified)
            raise GrafanaFailure(404, {"message": "user not found"})
        if self.anonymous == "viewer":  # later 11.x: a minimal profile, id 0
            profile = {"isGrafanaAdmin": False, "orgId": 1, "uid": "", "name": "", "email": "", "login": "", "id": 0}  # fmt: skip
            return _json(200, profile)
        raise GrafanaFailure(401, UNAUTHORIZED)

    # --- datasources -----------------------------------------------------------------------

    def _datasource(self, uid: str, health: bool) -> Answer:
        with self._lock:
            found = self._datasources.get(uid)
        if not health:
            if found is None:
                raise GrafanaFailure(404, {"message": "Data source not found"})
            return _json(200, found[0])
        if found is None:
            raise GrafanaFailure(500, {"message": "Unable to load datasource metadata"})
        type_ = found[0]["type"]
        if uid in self._health:
            status, message = self._health[uid]
        elif type_ in NO_HEALTH_CHECK:
            raise GrafanaFailure(404, {"message": "Not found"})
        else:
            status, message = "OK", HEALTH_OK.get(type_, DEFAULT_HEALTH_OK)
        return _json(200 if status == "OK" else 400, {"message": message, "status": status})

    def _proxy(self, request: Request, uid: str, rest: str) -> Answer:
        if request.method != "GET":
            raise not_implemented(f"{request.method} through the datasource proxy")
        with self._lock:
            found = self._datasources.get(uid)
        if found is None:
            raise GrafanaFailure(404, {"message": "Unable to find datasource"})  # (not recorded)
        query = request.target.partition("?")[2]
        target = found[0]["url"].rstrip("/") + rest + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(target, timeout=5) as upstream:  # noqa: S310 - the test's own URL
                return Answer(
                    upstream.status,
                    upstream.read(),
                    upstream.headers.get("Content-Type", "text/plain"),
                )
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read(), exc.headers.get("Content-Type", "text/plain"))
        except OSError:  # (not recorded)
            raise GrafanaFailure(502, {"message": "Bad Gateway"}) from None

    # --- dashboards ------------------------------------------------------------------------

    def _search(self, request: Request) -> Answer:
        wanted = request.query.get("type", "")
        text = request.query.get("query", "").lower()
        limit = int(request.query.get("limit") or 1000)
        hits: list[dict[str, Any]] = []
        if wanted in ("", "dash-folder"):
            hits += [
                {
                    "id": i,
                    "uid": uid,
                    "title": title,
                    "uri": f"db/{title.lower()}",
                    "url": f"/dashboards/f/{uid}/",
                    "type": "dash-folder",
                    "tags": [],
                    "isStarred": False,
                }
                for i, (uid, title) in enumerate(self.folders.items(), start=2)
            ]
        if wanted in ("", "dash-db"):
            with self._lock:
                hits += [copy.deepcopy(d["hit"]) for d in self._dashboards.values()]
        elif wanted != "dash-folder":
            raise GrafanaFailure(422, {"message": f"invalid type: {wanted}"})  # (not recorded)
        hits = [h for h in hits if text in h["title"].lower()]
        hits.sort(key=lambda h: str(h["title"]).lower())
        return _json(200, hits[:limit])

    # --- queries ---------------------------------------------------------------------------

    def _query(self, request: Request) -> Answer:
        spec = request.json() or {}
        results: dict[str, Any] = {}
        failed = False
        now_ms = int(time.time() * 1000)
        window = (_time_ms(str(spec.get("from") or "now-6h"), now_ms), _time_ms(str(spec.get("to") or "now"), now_ms))  # fmt: skip
        for query in spec.get("queries", []):
            with self._lock:
                self.ds_queries.append(copy.deepcopy(query))
            ref = query.get("refId", "A")
            uid = (query.get("datasource") or {}).get("uid")
            with self._lock:
                found = self._datasources.get(uid or "")
            if found is None:  # (not recorded)
                raise GrafanaFailure(400, {"message": f"data source not found: {uid}"})
            if found[0]["type"] == "tempo" and query.get("queryType") == "traceId":
                answer = self._tempo_trace(ref, found[0]["url"], str(query.get("query", "")))
                failed = failed or "error" in answer
                results[ref] = answer
                continue
            if found[0]["type"] != "prometheus":
                raise not_implemented(f"queries to {found[0]['type']} datasources")
            if self.query_delay_s:
                time.sleep(self.query_delay_s)
            if self.query_error is not None:
                failed = True
                answer = recorded_body("POST_api_ds_query.json", 2)["results"]["A"]
                answer["error"] = self.query_error
                results[ref] = answer
                continue
            url = str(found[0]["url"])
            if _local(url):
                results[ref] = _prometheus_query(url, ref, query, *window)
                failed = failed or "error" in results[ref]
                continue
            results[ref] = {"status": 200, "frames": [self._frame(ref, str(query.get("expr", "")))]}  # fmt: skip
        return _json(400 if failed else 200, {"results": results})

    @staticmethod
    def _tempo_trace(ref: str, url: str, trace_id: str) -> dict[str, Any]:
        """A Tempo `traceId` query (source, not recorded: pkg/tsdb/tempo/trace.go and
        trace_transform.go): Grafana fetches `<tempo>/api/traces/<id>` as protobuf and answers
        one frame named `Trace`, a row per span; a non-200 from Tempo is `results.A.error`."""
        if not trace_id:
            return {"status": 400, "error": "trace id is required", "errorSource": "plugin", "frames": []}  # fmt: skip
        target = f"{url.rstrip('/')}/api/traces/{trace_id}"
        request = urllib.request.Request(target, headers={"Accept": "application/protobuf"})  # noqa: S310 - the test's own URL
        try:
            with urllib.request.urlopen(request, timeout=5) as upstream:  # noqa: S310 - the test's own URL
                body = upstream.read()
        except urllib.error.HTTPError as exc:
            said = exc.read().decode(errors="replace")
            error = f"failed to get trace with id: {trace_id} Status: {exc.code} {exc.reason} Body: {said}"
            return {"status": 500, "error": error, "errorSource": "downstream", "frames": []}
        except OSError as exc:
            return {"status": 500, "error": f"failed get to tempo: {exc}", "errorSource": "downstream", "frames": []}  # fmt: skip
        columns: dict[str, list[Any]] = {name: [] for name in TRACE_FIELDS}
        for batch in trace_pb2.TracesData.FromString(body).resource_spans:
            attrs = {a.key: a.value.string_value for a in batch.resource.attributes}
            for scope in batch.scope_spans:
                for span in scope.spans:
                    row = {
                        "traceID": span.trace_id.hex(), "spanID": span.span_id.hex(),
                        "parentSpanID": span.parent_span_id.hex(), "operationName": span.name,
                        "serviceName": attrs.get("service.name", ""), "kind": _SPAN_KINDS.get(span.kind, ""),
                        "statusCode": int(span.status.code), "statusMessage": span.status.message,
                        "instrumentationLibraryName": scope.scope.name,
                        "instrumentationLibraryVersion": scope.scope.version, "traceState": span.trace_state,
                        "serviceTags": [{"key": k, "value": v} for k, v in attrs.items()],
                        "startTime": span.start_time_unix_nano / 1e6,
                        "duration": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
                        "logs": [], "references": [], "tags": [],
                    }  # fmt: skip
                    for name in TRACE_FIELDS:
                        columns[name].append(row[name])
        fields = [{"name": n, "type": t, "config": {}} for n, t in TRACE_FIELDS.items()]
        frame = {"schema": {"name": "Trace", "refId": ref, "meta": {"preferredVisualisationType": "trace"},
                            "fields": fields}, "data": {"values": list(columns.values())}}  # fmt: skip
        return {"status": 200, "frames": [frame]}

    @staticmethod
    def _frame(ref: str, expr: str) -> dict[str, Any]:
        """A Prometheus instant vector frame, as Grafana's converter makes it (recorded)."""
        frame: dict[str, Any] = recorded_body("POST_api_ds_query.json", 1)["results"]["A"]["frames"][0]  # fmt: skip
        frame["schema"] = {"refId": ref, **frame["schema"]}
        frame["schema"]["meta"]["executedQueryString"] = f"Expr: {expr}\nStep: 15s"
        if expr.strip() == "up":
            return frame
        match = re.fullmatch(r"\s*vector\(\s*(-?\d+(?:\.\d+)?)\s*\)\s*", expr)
        if match is None:
            raise not_implemented(f"PromQL {expr!r} (only vector(<number>) and up)")
        value = float(match.group(1))
        del frame["schema"]["fields"][1]["labels"]  # vector() has no labels
        frame["data"]["values"] = [[int(time.time() * 1000)], [value]]
        return frame

    # --- alerting --------------------------------------------------------------------------

    def _alert_rules(self, request: Request, rest: str) -> Answer:
        method = request.method
        with self._lock:
            if rest == "" and method == "GET":
                return _json(200, copy.deepcopy(list(self._rules.values())))
            if rest == "" and method == "POST":
                return self._create_rule(request)
            uid = rest.lstrip("/")
            rule = self._rules.get(uid)
            if rule is None:
                raise GrafanaFailure(404)
            if method == "GET":
                return _json(200, copy.deepcopy(rule))
            if method == "DELETE":
                del self._rules[uid]
                return Answer(204, b"", headers=dict(SECURITY_HEADERS))
        raise not_implemented(f"{method} /api/v1/provisioning/alert-rules{rest}")

    def _create_rule(self, request: Request) -> Answer:
        body = request.json() or {}
        required = ("folderUID", "ruleGroup", "title", "condition", "data", "noDataState", "execErrState", "for")  # fmt: skip
        missing = [k for k in required if k not in body]
        if missing:  # (not recorded)
            raise GrafanaFailure(400, {"message": f"invalid alert rule: missing {', '.join(missing)}"})  # fmt: skip
        if body["folderUID"] not in self.folders:  # (not recorded)
            raise GrafanaFailure(400, {"message": f"folder does not exist: {body['folderUID']}"})
        for query in body["data"]:
            ds = query.get("datasourceUid")
            if ds not in EXPRESSION_UIDS and ds not in self._datasources:  # (not recorded)
                raise GrafanaFailure(400, {"message": f"invalid alert rule: data source {ds} not found"})  # fmt: skip
        uid = str(body.get("uid") or secrets.token_hex(7))
        if uid in self._rules:  # (not recorded)
            raise GrafanaFailure(409, {"message": "a rule with this UID already exists"})
        rule = {"id": next(self._ids), "uid": uid, "orgID": 1}
        for key in ("folderUID", "ruleGroup", "title", "condition", "data"):
            rule[key] = body[key]
        rule["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        for key in ("noDataState", "execErrState", "for"):
            rule[key] = body[key]
        rule["annotations"] = body.get("annotations") or {}
        rule["labels"] = body.get("labels") or {}
        disabled = request.headers.get("x-disable-provenance", "").lower() == "true"
        rule["provenance"] = "" if disabled else "api"
        rule["isPaused"] = bool(body.get("isPaused", False))
        rule.update(notification_settings=None, record=None)
        self._rules[uid] = rule
        return _json(201, copy.deepcopy(rule))

    def _rule_state(self) -> Answer:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        with self._lock:
            rules = list(self._rules.values())
        for rule in rules:
            expr = next((q["model"].get("expr") for q in rule["data"] if "expr" in q.get("model", {})), "")  # fmt: skip
            error = self.rule_errors.get(rule["uid"])
            state: dict[str, Any] = {
                "state": "inactive",
                "name": rule["title"],
                "folderUid": rule["folderUID"],
                "uid": rule["uid"],
                "query": expr,
                "queriedDatasourceUIDs": [
                    q["datasourceUid"]
                    for q in rule["data"]
                    if q["datasourceUid"] not in EXPRESSION_UIDS
                ],
                "totals": {"normal": 1},
                "totalsFiltered": {"normal": 1},
                "labels": rule.get("labels") or {},
                "health": "error" if error else "ok",
            }
            if error:
                state["lastError"] = error
            state.update(
                isPaused=rule.get("isPaused", False),
                type="alerting",
                lastEvaluation="2024-08-30T15:18:40Z",
                duration=300,
                keepFiringFor=0,
                evaluationTime=0.01,
            )
            groups.setdefault((rule["folderUID"], rule["ruleGroup"]), []).append(state)
        body = {
            "status": "success",
            "data": {
                "groups": [
                    {
                        "name": group,
                        "file": self.folders.get(folder, folder),
                        "folderUid": folder,
                        "rules": states,
                        "totals": {"inactive": len(states)},
                        "interval": 60,
                        "lastEvaluation": "2024-08-30T15:18:40Z",
                        "evaluationTime": 0.01,
                    }
                    for (folder, group), states in groups.items()
                ],
                "totals": {"inactive": len(rules)},
            },
        }
        return _json(200, body)
