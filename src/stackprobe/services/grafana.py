"""Grafana: health, datasources, dashboards, alerting, query latency and access control.

Checks talk to Grafana's documented HTTP API (10.x/11.x) with httpx, never the grafana-client
package (it pulls in urllib3-future, which replaces urllib3: API-NOTES). The credential is a
service account token (`token`, sent as `Authorization: Bearer`) or basic auth (`password`,
with `username`, default admin). It is a stack secret: the runner masks it in every report.

Only one check creates anything: with `options.alert_folder` set, `alerting` round-trips a
paused probe alert rule named with the run prefix in that folder (uid `stackprobe-<run_id>-<svc>-r`,
at most 40 characters as Grafana requires), sent with `X-Disable-Provenance: true` so it stays
editable, and deletes it by uid afterwards; `stackprobe clean` deletes such rules of killed
runs. The rule is paused, its condition can never be true and its no-data and error states are
OK: it cannot notify anyone.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped, ms
from stackprobe.http import (
    TIMEOUT,
    HttpServiceError,
    client_for,
    credential_label,
    excerpt,
    http_error,
    json_body,
    json_or_none,
    refuse_auth,
)
from stackprobe.ids import PREFIX, is_leftover
from stackprobe.kinds import Kind, Target
from stackprobe.services import dashboards
from stackprobe.services.jaeger import JaegerStore
from stackprobe.services.tracestore import StoredSpan

DEFAULT_USER = "admin"
QUERY_MS = 1000.0  # default expectations.query_ms: median of a query through Grafana
QUERY_SAMPLES = 5
PANEL_P95_MS = 2000.0  # default expectations.panel_p95_ms: p95 of a panel's queries through Grafana
PANEL_DASHBOARDS = 10  # dashboards whose panels are queried when expectations.dashboards is not set
MAX_PANELS = 200  # panels queried at most in one run
PANEL_CONCURRENCY = 4  # panel requests at once (a browser loads a few panels at a time)
PANEL_TIME_S = 40.0  # no panel query starts after this long
PANEL_POINTS = 1000  # maxDataPoints when the panel sets none (about a panel's width in pixels)
LISTED_SLOWEST = 5
MAX_DASHBOARDS = 100  # dashboards inspected when expectations.dashboards is not set
HEALTH_CONCURRENCY = 8  # datasource health checks at once
EXPRESSION_UIDS = dashboards.EXPRESSIONS  # server-side expressions, not datasources
PROVENANCE_OFF = {"X-Disable-Provenance": "true"}


class GrafanaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # try POST /login with admin/admin (off by default: each refused attempt counts towards
    # Grafana's brute-force lockout of the admin user)
    check_default_admin: bool = False
    # uid of the Prometheus datasource to query through (default: the only one, or the default)
    query_datasource: str | None = None
    # uid of an existing folder where `alerting` may round-trip a paused probe rule
    alert_folder: str | None = None


class GrafanaExpectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    datasources: list[str] = []  # uids that must exist and be healthy
    dashboards: list[str] = []  # uids or titles that must load with every panel resolving
    contact_points: list[str] = []  # names of contact points that must exist
    query_ms: float = Field(default=QUERY_MS, gt=0)  # median budget of a query through Grafana
    # p95 budget of a dashboard panel's queries through /api/ds/query (query-performance)
    panel_p95_ms: float = Field(default=PANEL_P95_MS, gt=0)


def _message(response: httpx.Response) -> str:
    """What Grafana said: `Unauthorized (auth.unauthorized)`, else the body in one line."""
    body = json_or_none(response)
    if isinstance(body, dict) and body.get("message"):
        message_id = f" ({body['messageId']})" if body.get("messageId") else ""
        return f"{body['message']}{message_id}"
    return excerpt(response)


def _said(response: httpx.Response) -> str:
    """What Grafana answered, in one line: `HTTP 401 Unauthorized (auth.unauthorized)`."""
    return f"HTTP {response.status_code} {_message(response)}"


_HINTS = {
    401: ": check token, or username and password",
    403: ": the credential lacks the permission (a service account with the Admin role reads everything checked here)",
}


def grafana_error(response: httpx.Response) -> HttpServiceError:
    """An answer a call the check needs does not accept (the HTTP rule: 401/403 are `error`,
    any other answer `failed`): `grafana: HTTP 401 from GET /api/x: Unauthorized (...)`."""
    return http_error(response, label="grafana", said=_message, hints=_HINTS)


@dataclass
class GrafanaClient:
    """One Grafana's HTTP API with the configured credential, every call bounded."""

    http: httpx.AsyncClient
    url: str
    credential: str  # what authenticates: "service account token", "basic as <user>", "none"
    options: GrafanaOptions

    async def get(self, path: str, **params: str | int) -> Any:
        """A GET the check needs: anything but 200 raises grafana_error; not JSON is failed."""
        response = await self.http.get(path, params=params or None)
        if response.status_code != 200:
            raise grafana_error(response)
        return json_body(response, label="grafana")

    def anonymous(self) -> httpx.AsyncClient:
        """A client with no credential and no cookies: what a stranger's browser sends."""
        return httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT)

    async def datasources(self) -> list[dict[str, Any]]:
        return list(await self.get("/api/datasources"))


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[GrafanaClient]:
    svc = target.config
    assert svc.url is not None  # validated: url is required for this kind
    credential = credential_label(svc, DEFAULT_USER).replace("token", "service account token")
    async with client_for(svc, default_user=DEFAULT_USER) as http:
        yield GrafanaClient(http, svc.url, credential, target.options)


async def _version(client: GrafanaClient) -> str | None:
    body = json_or_none(await client.http.get("/api/health"))
    return str(body["version"]) if isinstance(body, dict) and body.get("version") else None


async def _liveness(client: GrafanaClient) -> None:
    response = await client.http.get("/api/health")
    if response.status_code != 200:
        raise grafana_error(response)


async def _sweep(client: GrafanaClient, target: Target, cutoff: datetime) -> list[str]:
    """Probe alert rules of runs older than cutoff (named with their run prefix)."""
    removed = []
    for rule in await client.get("/api/v1/provisioning/alert-rules"):
        uid, title = str(rule.get("uid", "")), str(rule.get("title", ""))
        if uid.startswith(PREFIX) and is_leftover(uid, cutoff) and title.startswith(PREFIX):
            response = await client.http.delete(
                f"/api/v1/provisioning/alert-rules/{quote(uid, safe='')}", headers=PROVENANCE_OFF
            )
            if response.status_code not in (204, 404):
                raise grafana_error(response)
            removed.append(f"alert rule {title} ({uid})")
    return removed


KIND: Kind[GrafanaClient] = Kind(
    name="grafana",
    description="Grafana: health, datasources, dashboards, alerting, query latency, access control",
    capabilities=(
        "health",
        "datasources",
        "dashboards",
        "alerting",
        "query-performance",
        "security",
    ),
    connect=_connect,
    url_schemes=("http", "https"),
    default_username=DEFAULT_USER,
    options_model=GrafanaOptions,
    expectations_model=GrafanaExpectations,
    version=_version,
    liveness=_liveness,
    sweep=_sweep,
)
check = KIND.check


def _listing(items: list[str], limit: int = 5) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def prometheus_datasource(
    ctx: CheckContext[GrafanaClient], datasources: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Prometheus datasource to query through: options.query_datasource, the only one, or
    the default one; skipped when there is none or the choice is ambiguous."""
    wanted = ctx.client.options.query_datasource
    if wanted is not None:
        found = next((d for d in datasources if d.get("uid") == wanted), None)
        if found is None:
            raise CheckFailed(
                f"options.query_datasource {wanted!r}: no such datasource (have: {', '.join(str(d.get('uid')) for d in datasources) or 'none'})"
            )
        return found
    proms = [d for d in datasources if d.get("type") == "prometheus"]
    if len(proms) == 1:
        return proms[0]
    default = [d for d in proms if d.get("isDefault")]
    if len(default) == 1:
        return default[0]
    if not proms:
        raise CheckSkipped("no Prometheus datasource to query through")
    uids = ", ".join(str(d.get("uid")) for d in proms)
    raise CheckSkipped(f"several Prometheus datasources ({uids}): set options.query_datasource")


# --- traces through a trace datasource (the end-to-end flow's last hop) ------------------------


def trace_datasource(
    datasources: list[dict[str, Any]], store_kind: str, uid: str | None
) -> dict[str, Any]:
    """The datasource that reads the trace store: `uid` when given, else the only one of the
    store's type (tempo, jaeger); skipped when there is none or the choice is ambiguous."""
    if uid is not None:
        found = next((d for d in datasources if d.get("uid") == uid), None)
        if found is None:
            have = ", ".join(str(d.get("uid")) for d in datasources) or "none"
            raise CheckFailed(f"trace datasource {uid!r}: no such datasource (have: {have})")
        return found
    same = [d for d in datasources if d.get("type") == store_kind]
    if len(same) == 1:
        return same[0]
    if not same:
        raise CheckSkipped(f"Grafana has no {store_kind} datasource to read the trace through")
    uids = ", ".join(str(d.get("uid")) for d in same)
    raise CheckSkipped(f"several {store_kind} datasources ({uids}): name one in the flow's options")


async def trace_through(
    client: GrafanaClient, datasource: dict[str, Any], trace_id: str
) -> list[StoredSpan]:
    """The trace as Grafana's datasource serves it: Tempo through `/api/ds/query` (a `traceId`
    query, answered with one `Trace` frame); Jaeger, whose datasource reads traces through the
    datasource proxy on Grafana 10/11, through `/api/datasources/proxy/uid/<uid>/api/traces/<id>`."""
    uid = str(datasource.get("uid"))
    if datasource.get("type") == "jaeger":
        response = await client.http.get(f"/api/datasources/proxy/uid/{uid}/api/traces/{trace_id}")
        if response.status_code != 200:
            raise grafana_error(response)
        data = json_body(response, label="grafana").get("data") or []
        return JaegerStore.spans_of(data[0]) if data else []
    query = {"refId": "A", "datasource": {"type": datasource.get("type"), "uid": uid},
             "queryType": "traceId", "query": trace_id}  # fmt: skip
    response = await client.http.post(
        "/api/ds/query", json={"queries": [query], "from": "now-1h", "to": "now"}
    )
    body = json_or_none(response)
    answer = body.get("results", {}).get("A", {}) if isinstance(body, dict) else {}
    if response.status_code != 200:
        if answer.get("error"):
            raise CheckFailed(f"grafana: /api/ds/query for trace {trace_id}: HTTP {response.status_code}: {answer['error']}")  # fmt: skip
        raise grafana_error(response)
    spans: list[StoredSpan] = []
    for frame in answer.get("frames") or []:
        names = [f.get("name") for f in frame.get("schema", {}).get("fields", [])]
        columns = dict(zip(names, frame.get("data", {}).get("values", []), strict=False))
        rows = zip(*(columns.get(c) or [] for c in ("spanID", "parentSpanID", "operationName", "serviceName")), strict=False)  # fmt: skip
        spans += [
            StoredSpan(str(s), str(p or ""), str(n or ""), str(v or ""), {}) for s, p, n, v in rows
        ]
    return spans


# --- health ----------------------------------------------------------------------------------


@check("health", title="GET /api/health answers 200 with database ok; version", name="api_health")
async def check_health(ctx: CheckContext[GrafanaClient]) -> str:
    started = time.perf_counter()
    response = await ctx.client.http.get("/api/health")
    ctx.evidence["latency_ms"] = ms(time.perf_counter() - started)
    refuse_auth(response)
    body = json_or_none(response)
    database = body.get("database") if isinstance(body, dict) else None
    version = body.get("version") if isinstance(body, dict) else None
    ctx.evidence.update(
        status=response.status_code,
        database=database,
        version=version,
        commit=body.get("commit") if isinstance(body, dict) else None,
    )
    if response.status_code != 200 or database != "ok":
        raise CheckFailed(
            f"GET /api/health: expected 200 with database ok, saw {response.status_code} "
            f"with database {database!r}"
            + ("" if isinstance(body, dict) else f": {_said(response)}")
        )
    shown = f"Grafana {version}" if version else "Grafana (version hidden)"
    return f"{shown} healthy, database ok, in {ctx.evidence['latency_ms']} ms"


# --- datasources -----------------------------------------------------------------------------


async def _tempo_echo(ctx: CheckContext[GrafanaClient], uid: str) -> str | None:
    """Tempo has no backend health check on Grafana 10/11: ask Tempo's /api/echo through
    Grafana's datasource proxy instead. None when it answered `echo`, else what it said."""
    response = await ctx.client.http.get(
        f"/api/datasources/proxy/uid/{quote(uid, safe='')}/api/echo"
    )
    if response.status_code == 200 and response.text.strip() == "echo":
        return None
    return f"proxy GET /api/echo answered {_said(response)}"


@check(
    "datasources",
    title="expected datasources exist and each answers its health check (Tempo: proxy /api/echo)",
    name="healthy",
    timeout=20,
)
async def check_datasources(ctx: CheckContext[GrafanaClient]) -> str:
    listed = await ctx.client.datasources()
    by_uid = {str(d.get("uid")): d for d in listed}
    by_name = {str(d.get("name")): str(d.get("uid")) for d in listed}
    expected = list(ctx.expectations.datasources)
    missing = [e for e in expected if e not in by_uid and e not in by_name]
    wanted = [e if e in by_uid else by_name[e] for e in expected if e not in missing]
    to_check = list(dict.fromkeys(wanted or list(by_uid)))
    ctx.evidence.update(datasources=len(listed), types=sorted({str(d.get("type")) for d in listed}))
    if not listed:
        raise CheckFailed("expected at least one datasource, saw none: dashboards and alerts have nothing to read")  # fmt: skip
    limit = asyncio.Semaphore(HEALTH_CONCURRENCY)

    async def probe(uid: str) -> tuple[str, str, float]:
        """(outcome: healthy, unchecked or broken; name or what is wrong; milliseconds)."""
        ds = by_uid[uid]
        label = f"{ds.get('name')} ({ds.get('type')}, {uid})"
        async with limit:
            started = time.perf_counter()
            response = await ctx.client.http.get(f"/api/datasources/uid/{quote(uid, safe='')}/health")  # fmt: skip
            parsed = json_or_none(response)
            body = parsed if isinstance(parsed, dict) else {}
            if response.status_code == 200 and body.get("status") == "OK":
                return "healthy", str(ds.get("name")), ms(time.perf_counter() - started)
            if response.status_code in (401, 403):
                raise grafana_error(response)
            if response.status_code == 400 or (response.status_code == 200 and body.get("status")):
                said = (
                    f"{body.get('status') or f'HTTP {response.status_code}'} {body.get('message')}"
                )
                return "broken", f"{label}: {said}", 0.0
            if ds.get("type") == "tempo":  # no health check (404, or 500/501 on newer servers)
                problem = await _tempo_echo(ctx, uid)
                if problem is None:
                    return "healthy", str(ds.get("name")), ms(time.perf_counter() - started)
                return "broken", f"{label}: {problem}", 0.0
            if response.status_code in (404, 501):
                return "unchecked", label, 0.0  # the plugin has no health check
            return "broken", f"{label}: health answered {_said(response)}", 0.0

    outcomes = await asyncio.gather(*(probe(uid) for uid in to_check))
    healthy = {name: ms for outcome, name, ms in outcomes if outcome == "healthy"}
    unchecked = [label for outcome, label, _ in outcomes if outcome == "unchecked"]
    broken = [problem for outcome, problem, _ in outcomes if outcome == "broken"]
    ctx.evidence.update(healthy_ms=healthy, unchecked=unchecked, unhealthy=broken, missing=missing)
    problems = []
    if missing:
        problems.append(
            f"expected datasource(s) {', '.join(missing)} (expectations.datasources) missing; have: {', '.join(by_uid)}"
        )
    if broken:
        problems.append(f"{len(broken)} unhealthy: {_listing(broken)}")
    if problems:
        raise CheckFailed("; ".join(problems))
    note = f"; no health check for {', '.join(unchecked)}" if unchecked else ""
    return f"{len(healthy)} datasource(s) healthy: {', '.join(sorted(healthy))}{note}"


# --- dashboards ------------------------------------------------------------------------------


async def _wanted_dashboards(
    ctx: CheckContext[GrafanaClient], limit: int
) -> tuple[dict[str, str], list[str]]:
    """(uid -> title of the dashboards to inspect, expected names search did not find): the
    expected ones (by uid or title), else the first `limit` that search lists."""
    hits = await ctx.client.get("/api/search", type="dash-db", limit=5000)
    expected = list(ctx.expectations.dashboards)
    wanted: dict[str, str] = {}
    missing = []
    for name in expected:
        found = [h for h in hits if name in (h.get("uid"), h.get("title"))]
        if not found:
            missing.append(name)
        for hit in found:
            wanted[str(hit["uid"])] = str(hit.get("title"))
    if not expected:
        wanted = {str(h["uid"]): str(h.get("title")) for h in hits[:limit]}
    return wanted, missing


@dataclass
class LoadedDashboard:
    uid: str
    title: str
    model: dict[str, Any]
    panels: list[dashboards.Panel]
    resolver: dashboards.Resolver
    missing_library: list[dashboards.Panel]

    @property
    def label(self) -> str:
        return f"dashboard {dashboards.quoted(self.title)} (uid {self.uid})"


async def _load_dashboards(
    ctx: CheckContext[GrafanaClient], wanted: dict[str, str], datasources: list[dict[str, Any]]
) -> tuple[list[LoadedDashboard], list[str], list[float]]:
    """(the dashboards that load, with library panels filled in; those that do not, said;
    load milliseconds)."""
    client = ctx.client
    library: dict[str, dict[str, Any] | None] = {}
    loaded, unloadable, load_ms = [], [], []
    for uid, title in wanted.items():
        started = time.perf_counter()
        response = await client.http.get(f"/api/dashboards/uid/{quote(uid, safe='')}")
        load_ms.append(ms(time.perf_counter() - started))
        if response.status_code in (401, 403):
            raise grafana_error(response)
        if response.status_code != 200:
            unloadable.append(f"dashboard {dashboards.quoted(title)} (uid {uid}) is listed by search but does not load: {_said(response)}")  # fmt: skip
            continue
        model = (json_or_none(response) or {}).get("dashboard") or {}
        found, missing = [], []
        for panel in dashboards.panels(model):
            if panel.library_uid is None:
                found.append(panel)
                continue
            if panel.library_uid not in library:
                library[panel.library_uid] = await _library_model(client, panel.library_uid)
            stored = library[panel.library_uid]
            if stored is None:
                missing.append(panel)
            else:
                found.append(dashboards.with_library_model(panel, stored))
        title_as_written = str(model.get("title") or title)
        loaded.append(LoadedDashboard(uid, title_as_written, model, found, dashboards.Resolver(datasources, model), missing))  # fmt: skip
    return loaded, unloadable, load_ms


async def _library_model(client: GrafanaClient, uid: str) -> dict[str, Any] | None:
    """A library panel's stored model; None when Grafana has no such library element."""
    response = await client.http.get(f"/api/library-elements/{quote(uid, safe='')}")
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise grafana_error(response)
    model = ((json_or_none(response) or {}).get("result") or {}).get("model")
    return model if isinstance(model, dict) else {}


_NO_REF = object()  # a finding about no datasource reference (a library panel, a source panel)


def _broken_refs(board: LoadedDashboard) -> list[dict[str, Any]]:
    """Every reference of a dashboard that does not resolve: panels, queries of Mixed panels,
    `-- Dashboard --` sources, library panels, query variables and annotations."""
    found: list[dict[str, Any]] = []
    ids = {p.id for p in board.panels}

    def add(where: str, subject: str, ref: Any, why: str, panel: dashboards.Panel | None = None) -> None:  # fmt: skip
        said = f"datasource {dashboards.ref_text(ref)} {why}" if ref is not _NO_REF else why
        found.append(
            {
                "dashboard_uid": board.uid,
                "dashboard": board.title,
                "panel_id": panel.id if panel else None,
                "panel": (panel.title or None) if panel else None,
                "panel_type": panel.type if panel else None,
                "where": where,
                "reference": dashboards.ref_text(ref) if ref is not _NO_REF else None,
                "why": said,
                "text": f"{board.label} {subject} → {said}",
            }
        )

    for panel in board.missing_library:
        add("library panel", panel.label, _NO_REF, f"library panel {dashboards.quoted(panel.library_name or '')} (uid {panel.library_uid}) does not exist", panel)  # fmt: skip
    for panel in board.panels:
        for where, ref, resolved in board.resolver.panel_refs(panel):
            subject = panel.label if where == "panel datasource" else f"{panel.label} {where.removesuffix(' datasource')}"  # fmt: skip
            if not resolved.ok:
                add(where, subject, ref, str(resolved.why), panel)
            elif resolved.builtin == dashboards.DASHBOARD:
                for t in panel.targets:
                    source = t.get("panelId")
                    if source is not None and source not in ids:
                        add("source panel", subject, _NO_REF, f"-- Dashboard -- shows panel {source}'s results, and the dashboard has no panel {source}", panel)  # fmt: skip
    for variable in board.resolver.variables.values():
        if variable.type == "query":
            ref = variable.raw.get("datasource")
            resolved = board.resolver.resolve(ref)
            if not resolved.ok:
                add("variable", f"variable ${variable.name}", ref, str(resolved.why))
    annotations = board.model.get("annotations") if isinstance(board.model.get("annotations"), dict) else {}  # fmt: skip
    for annotation in (annotations or {}).get("list") or []:
        if not isinstance(annotation, dict) or annotation.get("enable") is False:
            continue
        ref = annotation.get("datasource")
        resolved = board.resolver.resolve(ref)
        if not resolved.ok:
            add("annotation", f"annotation {dashboards.quoted(str(annotation.get('name') or ''))}", ref, str(resolved.why))  # fmt: skip
    return found


@check(
    "dashboards",
    title="expected dashboards exist, load, and every panel, variable and annotation reads a datasource that resolves",
    name="panels_resolve",
    timeout=30,
)
async def check_dashboards(ctx: CheckContext[GrafanaClient]) -> str:
    wanted, missing = await _wanted_dashboards(ctx, MAX_DASHBOARDS)
    if not wanted and not missing:
        raise CheckSkipped("Grafana has no dashboards and expectations.dashboards is not set")
    datasources = await ctx.client.datasources()
    loaded, unloadable, load_ms = await _load_dashboards(ctx, wanted, datasources)
    broken = [b for board in loaded for b in _broken_refs(board)]
    panels = sum(len(b.panels) + len(b.missing_library) for b in loaded)
    refs = sum(len(b.resolver.panel_refs(p)) for b in loaded for p in b.panels)
    templated = sum(
        1 for b in loaded for p in b.panels for _, ref, _ in b.resolver.panel_refs(p)
        if "$" in dashboards.ref_text(ref)
    )  # fmt: skip
    ctx.evidence.update(
        dashboards=len(wanted),
        panels=panels,
        datasource_refs=refs,
        templated_refs=templated,
        library_panels=sum(
            1 for b in loaded for p in [*b.panels, *b.missing_library] if p.library_uid
        ),
        load_p50_ms=statistics.median(load_ms) if load_ms else None,
        load_max_ms=max(load_ms) if load_ms else None,
        missing=missing,
        unloadable=unloadable,
        broken=[{k: v for k, v in b.items() if k != "text"} for b in broken],
    )
    problems = []
    if missing:
        problems.append(f"expected dashboard(s) {', '.join(missing)} (expectations.dashboards) not found by /api/search")  # fmt: skip
    problems += unloadable
    if broken:
        boards = len({b["dashboard_uid"] for b in broken})
        problems.append(f"{len(broken)} reference(s) in {boards} dashboard(s) do not resolve: {_listing([b['text'] for b in broken], 3)} (evidence.broken)")  # fmt: skip
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"{len(wanted)} dashboard(s) load; {panels} panel(s), {refs} datasource reference(s), all resolve"


# --- alerting --------------------------------------------------------------------------------


@check(
    "alerting",
    title="provisioned alert rules read existing datasources and evaluate; contact points exist",
    name="rules_and_contact_points",
    timeout=20,
)
async def check_alerting(ctx: CheckContext[GrafanaClient]) -> str:
    client = ctx.client
    # the provisioned rules: not the probe rule another check of a run creates meanwhile
    rules = [
        r
        for r in await client.get("/api/v1/provisioning/alert-rules")
        if not str(r.get("uid") or "").startswith(PREFIX)
    ]
    uids = {str(d.get("uid")) for d in await client.datasources()}
    contact_points = await client.get("/api/v1/provisioning/contact-points")
    names = sorted({str(c.get("name")) for c in contact_points})
    problems = []
    expected_points = list(ctx.expectations.contact_points)
    missing_points = [n for n in expected_points if n not in names]
    if not contact_points:
        problems.append("no contact points: a firing alert notifies nobody")
    if missing_points:
        problems.append(f"expected contact point(s) {', '.join(missing_points)} (expectations.contact_points) missing; have: {', '.join(names)}")  # fmt: skip
    dangling = [
        f"'{rule.get('title')}' ({rule.get('uid')}) query {q.get('refId')} reads datasource {q.get('datasourceUid')!r}, which does not exist"
        for rule in rules
        for q in rule.get("data") or []
        if q.get("datasourceUid") not in EXPRESSION_UIDS and str(q.get("datasourceUid")) not in uids
    ]
    if dangling:
        problems.append(f"{len(dangling)} alert rule quer(y/ies) read a missing datasource: {_listing(dangling)}")  # fmt: skip
    state = await client.get("/api/prometheus/grafana/api/v1/rules")
    evaluated = [r for g in (state.get("data") or {}).get("groups") or [] for r in g.get("rules") or []]  # fmt: skip
    failing = [
        f"'{r.get('name')}': {r.get('lastError') or 'health error'}"
        for r in evaluated
        if r.get("health") == "error"
    ]
    if failing:
        problems.append(f"{len(failing)} alert rule(s) fail to evaluate: {_listing(failing)}")
    ctx.evidence.update(
        rules=len(rules),
        groups=len({(r.get("folderUID"), r.get("ruleGroup")) for r in rules}),
        paused=sum(bool(r.get("isPaused")) for r in rules),
        nodata=[str(r.get("name")) for r in evaluated if r.get("health") == "nodata"],
        contact_points=names,
    )
    if problems:
        raise CheckFailed("; ".join(problems))
    if not rules:
        raise CheckSkipped(f"no alert rules provisioned ({len(names)} contact point(s))")
    return f"{len(rules)} rule(s) read existing datasources and evaluate; {len(names)} contact point(s)"


def _probe_rule(ctx: CheckContext[GrafanaClient], folder: str, datasource_uid: str) -> dict[str, Any]:  # fmt: skip
    """A rule that cannot notify: paused, condition `vector(0) > 1`, no-data and errors OK."""
    uid = ctx.name("r")  # 40 characters: Grafana's limit for a uid
    if len(uid) > 40:  # Grafana's limit; the run prefix is 35 characters
        raise CheckFailed(f"probe rule uid {uid!r} is longer than Grafana's 40 characters")
    return {
        "uid": uid,
        "title": ctx.name("grafana-probe-rule"),
        "ruleGroup": ctx.name("grafana-probe"),
        "folderUID": folder,
        "condition": "B",
        "data": [
            {
                "refId": "A",
                "queryType": "",
                "relativeTimeRange": {"from": 600, "to": 0},
                "datasourceUid": datasource_uid,
                "model": {"expr": "vector(0)", "instant": True, "refId": "A"},
            },
            {
                "refId": "B",
                "queryType": "",
                "relativeTimeRange": {"from": 0, "to": 0},
                "datasourceUid": "__expr__",
                "model": {
                    "conditions": [
                        {
                            "evaluator": {"params": [1], "type": "gt"},
                            "operator": {"type": "and"},
                            "query": {"params": ["A"]},
                            "reducer": {"params": [], "type": "last"},
                            "type": "query",
                        }
                    ],
                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                    "refId": "B",
                    "type": "classic_conditions",
                },
            },
        ],
        "noDataState": "OK",
        "execErrState": "OK",
        "for": "1m",
        "isPaused": True,
        "labels": {"stackprobe_run": ctx.run_id},
        "annotations": {
            "summary": "stackprobe probe rule: paused, deleted by the run that made it"
        },
    }


@check(
    "alerting",
    title="a paused probe alert rule is created, read back and deleted through the provisioning API",
    name="probe_rule_round_trip",
)
async def check_probe_rule(ctx: CheckContext[GrafanaClient]) -> str:
    client = ctx.client
    folder = client.options.alert_folder
    if folder is None:
        raise CheckSkipped("set options.alert_folder (an existing folder uid) to round-trip a probe rule")  # fmt: skip
    datasource = prometheus_datasource(ctx, await client.datasources())
    rule = _probe_rule(ctx, folder, str(datasource["uid"]))
    path = f"/api/v1/provisioning/alert-rules/{quote(rule['uid'], safe='')}"

    async def delete() -> None:
        response = await client.http.delete(path, headers=PROVENANCE_OFF)
        if response.status_code not in (204, 404):
            raise grafana_error(response)

    ctx.cleanup(delete, f"delete alert rule {rule['uid']}")
    started = time.perf_counter()
    created = await client.http.post("/api/v1/provisioning/alert-rules", json=rule, headers=PROVENANCE_OFF)  # fmt: skip
    ctx.evidence["create_ms"] = ms(time.perf_counter() - started)
    if created.status_code in (401, 403):
        raise grafana_error(created)
    if created.status_code != 201:
        raise CheckFailed(f"POST /api/v1/provisioning/alert-rules: expected 201, saw {_said(created)}")  # fmt: skip
    read = await client.http.get(path)
    if read.status_code != 200:
        raise CheckFailed(f"GET {path} after creating it: expected 200, saw {_said(read)}")
    stored = read.json()
    sent = {k: rule[k] for k in ("title", "ruleGroup", "folderUID", "condition", "isPaused")}
    seen = {k: stored.get(k) for k in sent}
    sent_sources = [q["datasourceUid"] for q in rule["data"]]
    seen_sources = [q.get("datasourceUid") for q in stored.get("data") or []]
    if seen != sent or seen_sources != sent_sources:
        raise CheckFailed(f"probe rule read back: expected {sent} reading {sent_sources}, saw {seen} reading {seen_sources}")  # fmt: skip
    listed = [r.get("uid") for r in await client.get("/api/v1/provisioning/alert-rules")]
    if rule["uid"] not in listed:
        raise CheckFailed(f"probe rule {rule['uid']} readable by uid but not in the rule list")
    started = time.perf_counter()
    deleted = await client.http.delete(path, headers=PROVENANCE_OFF)
    ctx.evidence["delete_ms"] = ms(time.perf_counter() - started)
    if deleted.status_code != 204:
        raise CheckFailed(f"DELETE {path}: expected 204, saw {_said(deleted)}")
    gone = await client.http.get(path)
    if gone.status_code != 404:
        raise CheckFailed(f"GET {path} after deleting it: expected 404, saw {_said(gone)}")
    ctx.evidence.update(
        uid=rule["uid"],
        folder=folder,
        datasource=datasource["uid"],
        provenance=stored.get("provenance"),
    )
    return f"probe rule created ({ctx.evidence['create_ms']} ms), read back, deleted ({ctx.evidence['delete_ms']} ms)"  # fmt: skip


# --- query-performance -----------------------------------------------------------------------


def _instant_value(result: dict[str, Any]) -> float | None:
    """The value of an instant vector with one series, from Grafana's data frames."""
    for frame in result.get("frames") or []:
        fields = (frame.get("schema") or {}).get("fields") or []
        values = (frame.get("data") or {}).get("values") or []
        for i, f in enumerate(fields):
            if f.get("type") == "number" and i < len(values) and values[i]:
                value = values[i][0]
                return None if value is None else float(value)
    return None


async def query_through(client: GrafanaClient, uid: str, name: str) -> None:
    """One panel query (`POST /api/ds/query`, instant `vector(<nonce>)`) through the Prometheus
    datasource `uid`; CheckFailed unless the nonce comes back (the check and the load use it)."""
    nonce = random.randint(1, 10**6)
    query = {
        "refId": "A",
        "datasource": {"type": "prometheus", "uid": uid},
        "expr": f"vector({nonce})",
        "instant": True,
        "range": False,
    }
    response = await client.http.post(
        "/api/ds/query", json={"queries": [query], "from": "now-5m", "to": "now"}
    )
    if response.status_code in (401, 403):
        raise grafana_error(response)
    result = ((json_or_none(response) or {}).get("results") or {}).get("A") or {}
    if result.get("error"):
        raise CheckFailed(
            f"query vector({nonce}) through {name} ({uid}): HTTP {response.status_code}, "
            f"results.A.error: {result['error']}"
        )
    if response.status_code != 200:
        raise CheckFailed(f"query through {name} ({uid}): expected HTTP 200, saw {_said(response)}")  # fmt: skip
    value = _instant_value(result)
    if value != nonce:
        raise CheckFailed(f"query vector({nonce}) through {name} ({uid}): expected {nonce}, saw {value}")  # fmt: skip


@check(
    "query-performance",
    title="an instant PromQL query through Grafana's Prometheus datasource returns its value in time",
    name="prometheus_instant",
    timeout=30,
)
async def check_query_performance(ctx: CheckContext[GrafanaClient]) -> str:
    client = ctx.client
    threshold = ctx.expectations.query_ms
    datasource = prometheus_datasource(ctx, await client.datasources())
    uid, name = str(datasource["uid"]), str(datasource.get("name"))
    latencies = []
    for _ in range(QUERY_SAMPLES):
        started = time.perf_counter()
        await query_through(client, uid, name)
        latencies.append(time.perf_counter() - started)
    p50 = ms(statistics.median(latencies))
    ctx.evidence.update(
        datasource=uid,
        queries=QUERY_SAMPLES,
        p50_ms=p50,
        max_ms=ms(max(latencies)),
        threshold_ms=threshold,
    )
    if p50 > threshold:
        raise CheckFailed(
            f"query through {name}: expected a median at most {threshold:g} ms (expectations.query_ms), saw {p50} ms over {QUERY_SAMPLES} queries"
        )
    return f"{QUERY_SAMPLES} queries through {name}: p50 {p50} ms (≤ {threshold:g} ms), max {ctx.evidence['max_ms']} ms"


@dataclass
class PanelRun:
    """One panel's queries sent to /api/ds/query, as the dashboard's frontend would send them."""

    board: LoadedDashboard
    panel: dashboards.Panel
    body: dict[str, Any]
    ms: float = 0.0
    error: str | None = None

    def evidence(self) -> dict[str, Any]:
        return {
            "dashboard_uid": self.board.uid,
            "dashboard": self.board.title,
            "panel_id": self.panel.id,
            "panel": self.panel.title or None,
            "panel_type": self.panel.type,
            "queries": len(self.body["queries"]),
            "ms": self.ms,
            **({"error": self.error} if self.error else {}),
        }

    @property
    def label(self) -> str:
        return f"{self.board.label} {self.panel.label}"


def _panel_request(board: LoadedDashboard, panel: dashboards.Panel) -> tuple[dict[str, Any] | None, str]:  # fmt: skip
    """The /api/ds/query body for a panel's visible queries (template variables replaced by
    their current values), or None and why it is not run."""
    if not panel.targets:
        return None, "no queries"
    queries = []
    for i, target in enumerate(panel.targets):
        if target.get("hide"):
            continue
        resolved = board.resolver.query_datasource(panel, target)
        if not resolved.ok:
            return None, "datasource does not resolve (see panels_resolve)"
        if resolved.datasource is None:
            continue  # built-in (-- Grafana --, -- Dashboard --) or an expression
        query = {k: v for k, v in target.items() if k != "datasource"}
        for key in ("expr", "query", "legendFormat", "interval"):
            if isinstance(query.get(key), str):
                query[key] = board.resolver.interpolate(query[key], regex=key == "expr")
        ds = resolved.datasource
        query["datasource"] = {"type": ds.get("type"), "uid": ds.get("uid")}
        query.setdefault("refId", chr(ord("A") + i % 26))
        query["maxDataPoints"] = int(panel.raw.get("maxDataPoints") or PANEL_POINTS)
        queries.append(query)
    if not queries:
        return None, "only built-in or hidden queries"
    time_range = board.model.get("time") if isinstance(board.model.get("time"), dict) else {}
    start = str((time_range or {}).get("from") or "now-6h")
    end = str((time_range or {}).get("to") or "now")
    if isinstance(panel.raw.get("timeFrom"), str) and panel.raw["timeFrom"]:
        start = f"now-{panel.raw['timeFrom']}"
    span = _span_s(start, end)
    for q in queries:
        q["intervalMs"] = max(int(span * 1000 / q["maxDataPoints"]), 1000)
    return {"queries": queries, "from": start, "to": end}, ""


def _span_s(start: str, end: str) -> float:
    """Seconds between Grafana's relative times (now-6h .. now); 6 h when not relative."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

    def ago(text: str) -> float | None:
        if text == "now":
            return 0.0
        found = re.fullmatch(r"now-(\d+)([smhdwy])(?:/[smhdwy])?", text)
        return int(found.group(1)) * units[found.group(2)] if found else None

    a, b = ago(start), ago(end)
    return max(a - b, 1.0) if a is not None and b is not None else 6 * 3600.0


def _percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


@check(
    "query-performance",
    title="the panel queries of the expected dashboards run through /api/ds/query within the p95 budget, none erroring",
    name="panel_queries",
    timeout=60,
)
async def check_panel_queries(ctx: CheckContext[GrafanaClient]) -> str:
    """Bounded: at most PANEL_DASHBOARDS dashboards when none is expected, MAX_PANELS panels,
    PANEL_CONCURRENCY at once, no new query after PANEL_TIME_S."""
    client = ctx.client
    budget = ctx.expectations.panel_p95_ms
    wanted, missing = await _wanted_dashboards(ctx, PANEL_DASHBOARDS)
    if missing:
        raise CheckFailed(f"expected dashboard(s) {', '.join(missing)} (expectations.dashboards) not found by /api/search")  # fmt: skip
    if not wanted:
        raise CheckSkipped("Grafana has no dashboards and expectations.dashboards is not set")
    loaded, _, _ = await _load_dashboards(ctx, wanted, await client.datasources())
    runs: list[PanelRun] = []
    not_run: dict[str, int] = {}
    for board in loaded:
        for panel in board.panels:
            body, why = _panel_request(board, panel)
            if body is None:
                not_run[why] = not_run.get(why, 0) + 1
            elif len(runs) < MAX_PANELS:
                runs.append(PanelRun(board, panel, body))
            else:
                not_run["over the panel limit"] = not_run.get("over the panel limit", 0) + 1
    if not runs:
        raise CheckSkipped(f"no panel query to run in {len(loaded)} dashboard(s) (not run: {not_run or 'none'})")  # fmt: skip
    limit = asyncio.Semaphore(PANEL_CONCURRENCY)
    deadline = time.monotonic() + PANEL_TIME_S

    async def run(item: PanelRun) -> None:
        async with limit:
            if time.monotonic() > deadline:
                item.error = "not run: time budget spent"
                return
            started = time.perf_counter()
            response = await client.http.post("/api/ds/query", json=item.body)
            item.ms = ms(time.perf_counter() - started)
        if response.status_code in (401, 403):
            raise grafana_error(response)
        results = (json_or_none(response) or {}).get("results") if isinstance(json_or_none(response), dict) else None  # fmt: skip
        errors = [f"{ref}: {r.get('error')}" for ref, r in (results or {}).items() if isinstance(r, dict) and r.get("error")]  # fmt: skip
        if errors:
            item.error = "; ".join(errors)
        elif response.status_code not in (200, 207) or not isinstance(results, dict):
            item.error = _said(response)

    await asyncio.gather(*(run(item) for item in runs))
    skipped = [r for r in runs if r.error == "not run: time budget spent"]
    measured = [r for r in runs if r not in skipped]
    failing = [r for r in measured if r.error]
    latencies = [r.ms for r in measured]
    slowest = sorted(measured, key=lambda r: r.ms, reverse=True)[:LISTED_SLOWEST]
    p95 = _percentile(latencies, 0.95) if latencies else 0.0
    if skipped:
        not_run["time budget spent"] = len(skipped)
    ctx.evidence.update(
        dashboards=len(loaded),
        panels=len(measured),
        budget_p95_ms=budget,
        p50_ms=round(statistics.median(latencies), 2) if latencies else None,
        p95_ms=p95,
        max_ms=max(latencies) if latencies else None,
        slowest=[r.evidence() for r in slowest],
        errors=[r.evidence() for r in failing],
        per_panel=[r.evidence() for r in measured],
        not_run=not_run,
    )
    problems = []
    if failing:
        listed = _listing([f"{r.label}: {r.error}" for r in failing], 3)
        problems.append(f"{len(failing)} of {len(measured)} panel(s) answer with an error: {listed} (evidence.errors)")  # fmt: skip
    if p95 > budget:
        shown = "; ".join(f"{r.label} {r.ms:g} ms" for r in slowest[:3])
        problems.append(f"panel queries p95 {p95:g} ms over the {budget:g} ms budget (expectations.panel_p95_ms); slowest: {shown}")  # fmt: skip
    if problems:
        raise CheckFailed("; ".join(problems))
    top = slowest[0]
    return (
        f"{len(measured)} panel(s) of {len(loaded)} dashboard(s): p95 {p95:g} ms (≤ {budget:g} ms), "
        f"slowest {top.label} {top.ms:g} ms"
    )


# --- security --------------------------------------------------------------------------------


@check(
    "security",
    title="an anonymous request is not signed in as a real user",
    name="anonymous_not_a_user",
)
async def check_anonymous(ctx: CheckContext[GrafanaClient]) -> str:
    async with ctx.client.anonymous() as stranger:
        response = await stranger.get("/api/user")
    body = json_or_none(response)
    ctx.evidence["status"] = response.status_code
    if response.status_code == 401:
        ctx.evidence["anonymous"] = "off"
        return "anonymous access is off (401)"
    if response.status_code in (403, 404):  # anonymous on, but not a user (10.x: 403)
        ctx.evidence["anonymous"] = "on, not a user"
        return f"anonymous access is on but not signed in as a user ({_said(response)})"
    if response.status_code != 200 or not isinstance(body, dict):
        raise CheckFailed(f"anonymous GET /api/user: expected 401, 403, 404 or a 200 profile with id 0, saw {_said(response)}")  # fmt: skip
    user_id = int(body.get("id") or 0)
    ctx.evidence.update(anonymous="on", user_id=user_id, grafana_admin=bool(body.get("isGrafanaAdmin")))  # fmt: skip
    if user_id > 0:
        raise CheckFailed(
            f"anonymous GET /api/user: expected no user (401/403/404, or id 0), saw user {body.get('login')!r} "
            f"(id {user_id}, Grafana admin {bool(body.get('isGrafanaAdmin'))}): requests without credentials act as a real account"
        )
    if body.get("isGrafanaAdmin"):
        raise CheckFailed("anonymous GET /api/user: the anonymous identity is a Grafana admin")
    return f"anonymous access is on as a non-user identity (id 0, org {body.get('orgId')})"


@check(
    "security",
    title="the default admin/admin login is refused (options.check_default_admin)",
    name="default_admin_refused",
)
async def check_default_admin(ctx: CheckContext[GrafanaClient]) -> str:
    if not ctx.client.options.check_default_admin:
        raise CheckSkipped(
            "set options.check_default_admin: true to try admin/admin (a refused attempt counts towards Grafana's login lockout)"
        )
    async with ctx.client.anonymous() as stranger:

        async def logout() -> None:  # a session the login opened is closed again
            if stranger.cookies.get("grafana_session"):
                await stranger.get("/logout")

        response = await stranger.post("/login", json={"user": "admin", "password": "admin"})
        try:
            body = json_or_none(response)
            ctx.evidence["status"] = response.status_code
            if response.status_code == 200:
                raise CheckFailed(
                    f"POST /login admin/admin: expected 401, saw 200 {body.get('message') if isinstance(body, dict) else ''!r}: "
                    "the default admin password was never changed"
                )
            if response.status_code != 401:
                raise CheckFailed(f"POST /login admin/admin: expected 401, saw {_said(response)}")
        finally:
            await logout()
    return f"admin/admin refused ({_said(response)})"


@check(
    "security",
    title="the configured credential is accepted; requests without it are not",
    name="credential_works",
)
async def check_credential(ctx: CheckContext[GrafanaClient]) -> str:
    client = ctx.client
    if client.credential == "none":
        raise CheckSkipped("no token or password configured: only anonymous access is checked")
    org = await client.get("/api/org/")
    ctx.evidence.update(credential=client.credential, org=org.get("name"), org_id=org.get("id"))
    async with client.anonymous() as stranger:
        response = await stranger.get("/api/datasources")
    ctx.evidence["without_credential"] = response.status_code
    if response.status_code == 200:
        raise CheckFailed(
            "GET /api/datasources without a credential: expected 401 or 403, saw 200: "
            "datasource URLs and users are readable by anyone"
        )
    return f"{client.credential} accepted (org {org.get('name')!r}); without it: {_said(response)}"
