"""Grafana Tempo 2.x as the trace store, through its HTTP API (port 3200).

Shapes follow real Tempo 2.7.2 answers (API-NOTES.md): `/api/v2/traces/<id>` answers 200 with
`{"trace":{}}` for a missing trace (older versions 404), ids inside traces are base64, search
takes TraceQL in `q=` and returns hex `traceID`s, retention is
`compactor.compaction.block_retention` in `/status/config`.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped
from stackprobe.durations import DurationText, parse_duration
from stackprobe.http import client_for, expect_json, hold_http, raise_unless, refuse_auth
from stackprobe.kinds import Held, Kind, Target
from stackprobe.services.tracestore import (
    StoredSpan,
    flatten_otlp_attributes,
    register_checks,
    store_writes,
)

LABEL = "tempo"


class TempoExpectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention: DurationText | None = None  # block_retention must be at least this


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex() if b64 else ""


def spans_from_otlp_json(resource_spans: list[dict[str, Any]]) -> list[StoredSpan]:
    """Spans of an OTLP JSON trace as Tempo returns it (base64 ids)."""
    spans = []
    for rs in resource_spans:
        service = flatten_otlp_attributes(rs.get("resource", {}).get("attributes", [])).get(
            "service.name", ""
        )
        for scope in rs.get("scopeSpans", []):
            for s in scope.get("spans", []):
                spans.append(
                    StoredSpan(
                        span_id=_hex(s.get("spanId", "")),
                        parent_span_id=_hex(s.get("parentSpanId", "")),
                        name=s.get("name", ""),
                        service=str(service),
                        attributes=flatten_otlp_attributes(s.get("attributes", [])),
                    )
                )
    return spans


def full_trace_id(text: str) -> str:
    """A trace id as 32 lowercase hex digits (search answers drop leading zeros)."""
    return text.lower().rjust(32, "0")


def block_retention(config_text: str) -> str:
    """`compactor.compaction.block_retention` from the body of Tempo's `/status/config`.

    Tempo writes the request line and a document marker before the YAML ("GET /status/config",
    "---", then the config), so the body is a stream of two documents: read the mapping.
    """
    try:
        for document in yaml.safe_load_all(config_text):
            if isinstance(document, dict) and "compactor" in document:
                return str(document["compactor"]["compaction"]["block_retention"])
    except (yaml.YAMLError, KeyError, TypeError):
        pass
    raise CheckFailed("/status/config has no compactor.compaction.block_retention")


def traceql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class TempoStore:
    """The TraceStore adapter for Tempo's HTTP API."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def ready(self) -> dict[str, Any]:
        answer = await self.http.get("/ready")
        refuse_auth(answer)
        if answer.status_code != 200:
            raise CheckFailed(
                f"GET /ready: expected 200, saw {answer.status_code}: {answer.text.strip()[:200]}"
            )
        build = expect_json(await self.http.get("/api/status/buildinfo"), label=LABEL)
        return {"version": build.get("version") or None, "go_version": build.get("goVersion")}

    async def get_trace(self, trace_id: str) -> list[StoredSpan] | None:
        answer = await self.http.get(f"/api/v2/traces/{trace_id}")
        if answer.status_code == 404:  # Tempo before 2.7
            return None
        trace = expect_json(answer, label=LABEL).get("trace") or {}
        if not trace.get("resourceSpans"):  # 2.7 answers 200 {"trace":{}} when not found
            return None
        return spans_from_otlp_json(trace["resourceSpans"])

    async def find(
        self, service: str, attr: tuple[str, str] | None, start_s: int, end_s: int
    ) -> list[str]:
        query = f"resource.service.name = {traceql_string(service)}"
        if attr:
            query += f" && span.{attr[0]} = {traceql_string(attr[1])}"
        params: dict[str, str | int] = {
            "q": "{ " + query + " }",
            "start": start_s,
            "end": end_s,
            "limit": 50,
        }
        found = expect_json(await self.http.get("/api/search", params=params), label=LABEL)
        # Tempo's search writes trace ids without their leading zeros (TraceIDToHexString)
        return [full_trace_id(t["traceID"]) for t in found.get("traces") or []]

    async def service_names(self) -> list[str]:
        answer = await self.http.get("/api/v2/search/tag/resource.service.name/values")
        return [v["value"] for v in expect_json(answer, label=LABEL).get("tagValues") or []]

    async def retention(self, ctx: CheckContext[Any]) -> str:
        answer = raise_unless(await self.http.get("/status/config"), label=LABEL)
        value = block_retention(answer.text)
        ctx.evidence["block_retention"] = value
        expected = ctx.expectations.retention
        if expected is None:
            raise CheckSkipped(
                f"block_retention is {value}; set expectations.retention to check it"
            )
        ctx.evidence["expected"] = str(expected)
        if parse_duration(value) < parse_duration(expected):
            raise CheckFailed(
                f"block_retention: expected at least {expected} (expectations.retention), saw {value}"
            )
        return f"block_retention {value} meets the expected {expected}"


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[TempoStore]:
    assert target.config.url is not None  # validated: url is required
    async with client_for(target.config) as http:
        yield TempoStore(http)


async def _version(store: TempoStore) -> str | None:
    version = (await store.ready()).get("version")
    return str(version) if version else None


async def _liveness(store: TempoStore) -> None:
    raise_unless(await store.http.get("/ready"), label=LABEL)


async def _watch(store: TempoStore) -> Held:
    """A keep-alive connection to Tempo's HTTP API, held idle after /ready."""
    return await hold_http(store.http, "/ready")


KIND: Kind[TempoStore] = Kind(
    name="tempo",
    description="Grafana Tempo as the trace store: ingest, correlation, TraceQL search, retention",
    capabilities=("readiness", "ingest", "correlation", "query", "retention"),
    connect=_connect,
    url_schemes=("http", "https"),
    endpoints=("otlp_http", "otlp_grpc"),
    expectations_model=TempoExpectations,
    links={"collector": "otel-collector"},
    traffic_links=("collector",),
    version=_version,
    liveness=_liveness,
    watch=_watch,
    writes=store_writes,
)
register_checks(KIND)
