"""Trace stores (Tempo, Jaeger) behind one small interface, and the checks they share.

The checks are Tempo Vulture's idea with evidence: write traces over OTLP (through the
configured collector when the stack links one, else straight to the store), read them back
by id and by search, and compare span by span with what was sent.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from stackprobe import otlp
from stackprobe.check import CheckContext, CheckFailed, CheckSkipped
from stackprobe.httpserver import LocalHttpServer
from stackprobe.httpserver import Request as HttpRequest
from stackprobe.httpserver import Response as HttpResponse
from stackprobe.kinds import Kind
from stackprobe.resilience.writers import span_writes_via

PROBE_SERVICE = "stackprobe-probe"
HOP_SERVICES = ("stackprobe-frontend", "stackprobe-api", "stackprobe-db")
# real Tempo 2.7.2 (23 tries): by id 0.06-0.40 s, by search 1.6-9.9 s (median ~5 s); older
# versions search only blocks, 10-20 s
VISIBLE_TIMEOUT = 20.0
RUN_ATTR = "stackprobe.run"
PROBE_ATTR = "stackprobe.probe"


@dataclass(frozen=True)
class StoredSpan:
    """A span as the store gives it back; ids lowercase hex, attributes flattened."""

    span_id: str
    parent_span_id: str
    name: str
    service: str
    attributes: dict[str, Any]


class TraceStore(Protocol):
    """What the shared checks need from a trace store's query API."""

    async def ready(self) -> dict[str, Any]:
        """Evidence of readiness (version...); raise CheckFailed when not ready."""
        ...

    async def get_trace(self, trace_id: str) -> list[StoredSpan] | None:
        """The trace's spans, or None when the store says it has no such trace."""
        ...

    async def find(
        self, service: str, attr: tuple[str, str] | None, start_s: int, end_s: int
    ) -> list[str]:
        """Trace ids of traces of `service` (with span attribute `attr` when given)."""
        ...

    async def service_names(self) -> list[str]:
        """The service.name values the store knows (its tag values)."""
        ...

    async def retention(self, ctx: CheckContext[Any]) -> str:
        """Compare the store's retention with `expectations`; the message, or CheckFailed/Skipped."""
        ...


# --- delivery --------------------------------------------------------------------------------


async def store_writes(ctx: CheckContext[Any], service: str) -> Any:
    """Resilience write accounting for a trace store: spans sent through its linked collector
    (which queues them while the store is down), read back from the store."""
    collector = ctx.stack.link(service, "collector")
    otlp_http = ctx.stack.service(collector).endpoints.get("otlp_http") if collector else None
    return await span_writes_via(
        ctx, otlp_http, service, f"{service}: no collector with endpoints.otlp_http linked"
    )


def otlp_target(ctx: CheckContext[Any]) -> tuple[str, str]:
    """(OTLP/HTTP base URL, description): the linked collector, else the store's own receiver."""
    collector = ctx.stack.link(ctx.service_name, "collector")
    if collector:
        endpoint = ctx.stack.service(collector).endpoints.get("otlp_http")
        if endpoint:
            return endpoint, f"collector {collector}"
    endpoint = ctx.service.endpoints.get("otlp_http")
    if not endpoint:
        raise CheckSkipped(
            "no collector linked and no endpoints.otlp_http: nowhere to send the probe trace"
        )
    return endpoint, f"{ctx.service.kind} OTLP receiver"


async def send(ctx: CheckContext[Any], spans: list[otlp.ProbeSpan]) -> None:
    url, via = otlp_target(ctx)
    answer = await otlp.export_http(
        url, "traces", otlp.traces_request(spans, {RUN_ATTR: ctx.run_id})
    )
    ctx.evidence.update(sent_via=via, sent_spans=len(spans), **answer)


async def wait_for_trace(
    ctx: CheckContext[Any], store: TraceStore, trace_id: str, expected: int
) -> tuple[list[StoredSpan], float]:
    """Poll until the store returns all `expected` spans; (spans, seconds it took)."""
    started = time.monotonic()

    async def complete() -> list[StoredSpan]:
        spans = await store.get_trace(trace_id)
        if spans is None:
            raise CheckFailed("trace not found")
        if len(spans) < expected:
            raise CheckFailed(f"found {len(spans)} of {expected} spans")
        return spans

    spans = await ctx.eventually(
        complete,
        timeout=VISIBLE_TIMEOUT,
        interval=0.25,
        what=f"trace {trace_id} with {expected} spans",
    )
    return spans, time.monotonic() - started


def _compare(sent: list[otlp.ProbeSpan], stored: list[StoredSpan]) -> None:
    got = {s.span_id: s for s in stored}
    if len(got) != len(sent) or len(stored) != len(sent):
        raise CheckFailed(f"expected exactly {len(sent)} spans, the store returned {len(stored)}")
    for span in sent:
        back = got.get(span.span_id)
        if back is None:
            raise CheckFailed(f"span {span.span_id} ({span.name}) is missing from the stored trace")
        if (back.name, back.service, back.parent_span_id) != (
            span.name,
            span.service,
            span.parent_span_id,
        ):
            raise CheckFailed(
                f"span {span.span_id}: expected name/service/parent {span.name!r}/{span.service!r}/"
                f"{span.parent_span_id or '-'}, saw {back.name!r}/{back.service!r}/{back.parent_span_id or '-'}"
            )
        for key, value in span.attributes.items():
            if back.attributes.get(key) != value:
                raise CheckFailed(
                    f"span {span.span_id}: attribute {key} expected {value!r}, saw {back.attributes.get(key)!r}"
                )


# --- the shared checks -----------------------------------------------------------------------


async def check_readiness(ctx: CheckContext[TraceStore]) -> str:
    ctx.evidence.update(await ctx.client.ready())
    version = ctx.evidence.get("version") or "version not reported"
    return f"ready ({version})"


async def check_ingest(ctx: CheckContext[TraceStore]) -> str:
    trace_id, nonce = otlp.new_trace_id(), secrets.token_hex(6)
    root = otlp.ProbeSpan(
        trace_id, otlp.new_span_id(), "ingest-root", PROBE_SERVICE, kind=otlp.SPAN_KIND_SERVER
    )
    spans = [root] + [
        otlp.ProbeSpan(
            trace_id, otlp.new_span_id(), f"ingest-child-{i}", PROBE_SERVICE, parent_span_id=root.span_id,
            attributes={PROBE_ATTR: nonce, "probe.index": i, "probe.ratio": 0.5, "probe.text": "héllo ✓"},
        )
        for i in range(2)
    ]  # fmt: skip
    root.attributes[PROBE_ATTR] = nonce
    for span in spans:
        span.finish()
    await send(ctx, spans)
    stored, took = await wait_for_trace(ctx, ctx.client, trace_id, len(spans))
    _compare(spans, stored)
    ctx.evidence.update(trace_id=trace_id, span_count=len(stored), visible_after_s=round(took, 3))
    return f"{len(stored)} spans retrievable by id after {took:.2f} s, attributes intact"


class _HopServer:
    """An in-process HTTP service that continues the caller's trace from its traceparent header."""

    def __init__(
        self, service: str, operation: str, spans: list[otlp.ProbeSpan], next_hop: str | None
    ) -> None:
        self.service, self.operation, self.spans, self.next_hop = (
            service,
            operation,
            spans,
            next_hop,
        )
        self.server = LocalHttpServer(self._handle)

    @property
    def url(self) -> str:
        return f"{self.server.url}/"

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()

    async def _handle(self, request: HttpRequest) -> HttpResponse:
        try:
            trace_id, parent = otlp.parse_traceparent(request.headers.get("traceparent", ""))
        except ValueError:
            return HttpResponse(400, b"no valid traceparent header")
        span = otlp.ProbeSpan(
            trace_id, otlp.new_span_id(), self.operation, self.service, parent,
            kind=otlp.SPAN_KIND_SERVER,
        )  # fmt: skip
        if self.next_hop:
            await call(self.next_hop, span, self.spans, f"call {self.next_hop.split(':')[-1]}")
        self.spans.append(span.finish())
        return HttpResponse(200)


async def call(url: str, caller: otlp.ProbeSpan, spans: list[otlp.ProbeSpan], name: str) -> None:
    """A CLIENT span under `caller` whose id travels to `url` in a real traceparent header."""
    client = otlp.ProbeSpan(
        caller.trace_id,
        otlp.new_span_id(),
        name,
        caller.service,
        caller.span_id,
        kind=otlp.SPAN_KIND_CLIENT,
    )
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(
            url, headers={"traceparent": otlp.traceparent(client.trace_id, client.span_id)}
        )
    spans.append(client.finish())
    if response.status_code != 200:
        raise CheckFailed(f"in-process hop {url} answered {response.status_code}")


async def check_correlation(ctx: CheckContext[TraceStore]) -> str:
    spans: list[otlp.ProbeSpan] = []
    db = _HopServer(HOP_SERVICES[2], "SELECT orders", spans, None)
    await db.start()
    ctx.cleanup(db.close, "stop in-process db")
    api = _HopServer(HOP_SERVICES[1], "POST /orders", spans, db.url)
    await api.start()
    ctx.cleanup(api.close, "stop in-process api")
    root = otlp.ProbeSpan(
        otlp.new_trace_id(),
        otlp.new_span_id(),
        "GET /checkout",
        HOP_SERVICES[0],
        kind=otlp.SPAN_KIND_SERVER,
    )
    await call(api.url, root, spans, "call api")
    spans.append(root.finish())
    await send(ctx, spans)
    stored, took = await wait_for_trace(ctx, ctx.client, root.trace_id, len(spans))
    _compare(spans, stored)
    ids = {s.span_id for s in stored}
    orphans = [s.span_id for s in stored if s.parent_span_id and s.parent_span_id not in ids]
    roots = [s.span_id for s in stored if not s.parent_span_id]
    if orphans or len(roots) != 1:
        raise CheckFailed(
            f"expected one root and no orphan spans, saw roots {roots} and orphans {orphans}"
        )
    services = sorted({s.service for s in stored})
    if services != sorted(HOP_SERVICES):
        raise CheckFailed(f"expected services {sorted(HOP_SERVICES)}, saw {services}")
    ctx.evidence.update(
        trace_id=root.trace_id,
        services=services,
        span_count=len(stored),
        visible_after_s=round(took, 3),
    )
    return f"{len(stored)} spans over {len(services)} services joined by traceparent, no orphans"  # fmt: skip


async def check_query(ctx: CheckContext[TraceStore]) -> str:
    trace_id, nonce = otlp.new_trace_id(), f"{ctx.run_id}-{secrets.token_hex(4)}"
    span = otlp.ProbeSpan(
        trace_id, otlp.new_span_id(), "query-probe", PROBE_SERVICE, attributes={PROBE_ATTR: nonce}
    )
    start = int(time.time()) - 5  # only recent traces: a busy store has many of this service
    await send(ctx, [span.finish()])
    sent = time.monotonic()

    async def found(attr: tuple[str, str] | None) -> list[str]:
        ids = await ctx.client.find(PROBE_SERVICE, attr, start, int(time.time()) + 60)
        if trace_id not in ids:
            what = f"{attr[0]}={attr[1]}" if attr else f"service {PROBE_SERVICE}"
            raise CheckFailed(f"search by {what} returned {len(ids)} trace(s), not the probe trace")
        return ids

    await ctx.eventually(
        lambda: found((PROBE_ATTR, nonce)),
        timeout=VISIBLE_TIMEOUT,
        interval=0.5,
        what="attribute search",
    )
    by_attr = time.monotonic() - sent
    await ctx.eventually(
        lambda: found(None), timeout=VISIBLE_TIMEOUT, interval=0.5, what="service search"
    )
    names = await ctx.client.service_names()
    if PROBE_SERVICE not in names:
        raise CheckFailed(
            f"tag values of service.name: expected {PROBE_SERVICE!r} among them, saw {names[:10]}"
        )
    ctx.evidence.update(
        trace_id=trace_id, found_by_attribute_after_s=round(by_attr, 3), service_names=len(names)
    )
    return f"found by attribute after {by_attr:.2f} s and by service; {PROBE_SERVICE} listed in tag values"  # fmt: skip


async def check_retention(ctx: CheckContext[TraceStore]) -> str:
    return await ctx.client.retention(ctx)


SHARED_CHECKS: tuple[tuple[str, str, str, Callable[[CheckContext[Any]], Awaitable[str]], float | None], ...] = (
    ("readiness", "ready", "the store is ready and reports its version", check_readiness, None),
    ("ingest", "by_id", "a probe trace is retrievable by id with every span and attribute", check_ingest, 30),
    ("correlation", "traceparent_hops", "a trace across three services joined by W3C traceparent comes back whole", check_correlation, 30),
    ("query", "search", "search by service and by a run-unique attribute finds the probe trace", check_query, 50),
    ("retention", "configured", "retention matches the stack's expectations", check_retention, None),
)  # fmt: skip


def register_checks(kind: Kind[Any]) -> None:
    """Register the shared trace-store checks on `kind` (jaeger, tempo)."""
    for capability, name, title, fn, timeout in SHARED_CHECKS:
        kind.check(capability, title=title, timeout=timeout, name=name)(fn)


def flatten_otlp_attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP JSON [{key, value: {stringValue|intValue|...}}] -> {key: python value}."""
    out: dict[str, Any] = {}
    for item in items or []:
        value = item.get("value", {})
        if "stringValue" in value:
            out[item["key"]] = value["stringValue"]
        elif "intValue" in value:
            out[item["key"]] = int(value["intValue"])
        elif "doubleValue" in value:
            out[item["key"]] = float(value["doubleValue"])
        elif "boolValue" in value:
            out[item["key"]] = bool(value["boolValue"])
        else:
            out[item["key"]] = value
    return out
