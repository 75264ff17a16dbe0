"""Jaeger (v2) as the trace store, through its query HTTP API.

Reads use the query service's JSON API (`/api/traces/<id>`, `/api/traces?service=&tags=`,
`/api/services`), the one the Jaeger UI itself uses. Retention is not exposed by that API:
the check reads it from the Jaeger config file when `options.config_file` names one (the
sandbox does), and is skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped
from stackprobe.durations import DurationText, parse_duration
from stackprobe.http import client_for, expect_json
from stackprobe.kinds import Kind, Target
from stackprobe.services.tracestore import StoredSpan, register_checks, store_writes

LABEL = "jaeger"


class JaegerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_file: str | None = None  # the Jaeger v2 config, for retention


class JaegerExpectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention: DurationText | None = None  # spans must be kept at least this long
    max_traces: int = Field(default=1, ge=1)  # memory storage: keep at least this many traces


class JaegerStore:
    """The TraceStore adapter for Jaeger's query API."""

    def __init__(self, http: httpx.AsyncClient, target: Target) -> None:
        self.http = http
        self.target = target

    async def ready(self) -> dict[str, Any]:
        evidence: dict[str, Any] = {}
        health = self.target.config.endpoints.get("health")
        if health:
            status = expect_json(await self.http.get(health), label=LABEL)
            if status.get("healthy") is not True:
                raise CheckFailed(f"health endpoint: expected healthy true, saw {status}")
            evidence["health"] = status.get("status")
        expect_json(await self.http.get("/api/services"), label=LABEL)
        metrics = self.target.config.endpoints.get("metrics")
        if metrics:
            text = (await self.http.get(metrics)).text
            match = re.search(r'target_info\{[^}]*service_version="([^"]+)"', text)
            evidence["version"] = match.group(1) if match else None
        return evidence

    async def get_trace(self, trace_id: str) -> list[StoredSpan] | None:
        answer = await self.http.get(f"/api/traces/{trace_id}")
        if answer.status_code == 404:
            return None
        data = expect_json(answer, label=LABEL).get("data") or []
        if not data:
            return None
        return self.spans_of(data[0])

    @staticmethod
    def spans_of(trace: dict[str, Any]) -> list[StoredSpan]:
        """One trace of the query API's JSON (`data[0]`) as StoredSpans."""
        processes = trace.get("processes", {})
        spans = []
        for s in trace.get("spans", []):
            parent = next(
                (r["spanID"] for r in s.get("references", []) if r.get("refType") == "CHILD_OF"), ""
            )
            spans.append(
                StoredSpan(
                    span_id=s["spanID"],
                    parent_span_id=parent,
                    name=s.get("operationName", ""),
                    service=processes.get(s.get("processID"), {}).get("serviceName", ""),
                    attributes={t["key"]: t.get("value") for t in s.get("tags", [])},
                )
            )
        return spans

    async def find(
        self, service: str, attr: tuple[str, str] | None, start_s: int, end_s: int
    ) -> list[str]:
        params: dict[str, Any] = {
            "service": service,
            "start": start_s * 1_000_000,
            "end": end_s * 1_000_000,
            "limit": 50,
        }
        if attr:
            params["tags"] = json.dumps({attr[0]: attr[1]})
        found = expect_json(await self.http.get("/api/traces", params=params), label=LABEL)
        return [t["traceID"] for t in found.get("data") or []]

    async def service_names(self) -> list[str]:
        return list(
            expect_json(await self.http.get("/api/services"), label=LABEL).get("data") or []
        )

    async def retention(self, ctx: CheckContext[Any]) -> str:
        opts: JaegerOptions = ctx.options
        if not opts.config_file:
            raise CheckSkipped(
                "Jaeger's query API does not expose retention; set options.config_file to check it"
            )
        path = Path(opts.config_file)
        if not path.is_absolute():
            path = ctx.stack.path.parent / path
        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CheckFailed(f"options.config_file {path}: cannot read it: {exc}") from None
        extensions = config.get("extensions", {})
        store = extensions.get("jaeger_query", {}).get("storage", {}).get("traces")
        backend = extensions.get("jaeger_storage", {}).get("backends", {}).get(store, {})
        ctx.evidence.update(config_file=str(path), storage=store, backend=backend)
        expected: JaegerExpectations = ctx.expectations
        if "memory" in backend:
            max_traces = int(backend["memory"].get("max_traces", 0))
            ctx.evidence["max_traces"] = max_traces
            if expected.retention is not None:
                raise CheckFailed(
                    f"memory storage keeps traces by count (max_traces {max_traces}), not by age: "
                    f"expectations.retention {expected.retention} cannot be met"
                )
            wanted = expected.max_traces
            if max_traces < wanted:
                raise CheckFailed(
                    f"memory max_traces: expected at least {wanted}, saw {max_traces}"
                )
            return (
                f"memory storage keeps the last {max_traces} traces (in-process, lost on restart)"
            )
        if "badger" in backend:
            ttl = str(backend["badger"].get("ttl", {}).get("spans", "72h"))
            ctx.evidence["ttl_spans"] = ttl
            if expected.retention is not None and parse_duration(ttl) < parse_duration(
                expected.retention
            ):
                raise CheckFailed(
                    f"badger ttl.spans {ttl} is shorter than expectations.retention {expected.retention}"
                )
            return f"badger keeps spans for {ttl}"
        raise CheckSkipped(
            f"retention of storage backend {sorted(backend) or store!r} is not read by stackprobe"
        )


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[JaegerStore]:
    assert target.config.url is not None  # validated: url is required
    async with client_for(target.config) as http:
        yield JaegerStore(http, target)


async def _version(store: JaegerStore) -> str | None:
    return (await store.ready()).get("version")


async def _liveness(store: JaegerStore) -> None:
    expect_json(await store.http.get("/api/services"), label=LABEL)


KIND: Kind[JaegerStore] = Kind(
    name="jaeger",
    description="Jaeger v2 as the trace store: ingest, correlation, search, retention",
    capabilities=("readiness", "ingest", "correlation", "query", "retention"),
    connect=_connect,
    url_schemes=("http", "https"),
    endpoints=("otlp_http", "otlp_grpc", "health", "metrics"),
    options_model=JaegerOptions,
    expectations_model=JaegerExpectations,
    links={"collector": "otel-collector"},
    traffic_links=("collector",),
    version=_version,
    liveness=_liveness,
    writes=store_writes,
)
register_checks(KIND)
