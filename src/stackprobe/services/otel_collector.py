"""The OpenTelemetry Collector: health, the trace pipeline, metric intake, export to
Prometheus, and trace-to-metric correlation through span-metric exemplars.

The pipeline checks read the collector's own counters (`endpoints.metrics`) before and after
sending a known number of spans or points, so "accepted" and "sent" are measured, not assumed.
They run `exclusive` on their service so no other stackprobe check moves the same counters;
set `options.shared_traffic: true` for a collector that also carries other traffic (then the
counters must move by at least, not exactly, what was sent).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from stackprobe import otlp
from stackprobe.check import CheckContext, CheckFailed, CheckSkipped
from stackprobe.http import client_for, hold_http, raise_unless, refuse_auth
from stackprobe.kinds import Held, Kind, Target
from stackprobe.resilience.writers import span_writes_via
from stackprobe.services.prometheus import PrometheusAPI
from stackprobe.services.tracestore import PROBE_SERVICE, TraceStore

LABEL = "otel-collector"
PIPELINE_TIMEOUT = 15.0  # batch processor + export; seconds in the sandbox
EXPORT_TIMEOUT = 20.0  # scrape interval + span-metrics flush of a production Prometheus/collector
SPANS_PER_TRANSPORT = 5
POINTS = 4
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class CollectorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shared_traffic: bool = False
    span_metrics_namespace: str = "traces_span_metrics"


@dataclass
class Collector:
    http: httpx.AsyncClient
    endpoints: dict[str, str]

    def endpoint(self, name: str) -> str:
        url = self.endpoints.get(name)
        if not url:
            raise CheckSkipped(f"endpoints.{name} is not configured")
        return url

    async def counters(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The collector's own metrics: (name without `_total`, labels) -> value."""
        answer = raise_unless(await self.http.get(self.endpoint("metrics")), label=LABEL)
        samples = {}
        for line in answer.text.splitlines():
            if line.startswith("#") or not (m := _SAMPLE.match(line)):
                continue
            name = m.group(1).removesuffix("_total")
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            try:
                samples[(name, labels)] = float(m.group(3))
            except ValueError:
                continue
        return samples


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **match: str
) -> float:
    """Sum of a counter (with or without `_total`) over series whose labels include `match`."""
    wanted = set(match.items())
    return sum(v for (n, labels), v in samples.items() if n == name and wanted <= labels)


def by_label(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, label: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[Collector]:
    async with client_for(target.config) as http:
        yield Collector(http, dict(target.config.endpoints))


async def _version(collector: Collector) -> str | None:
    if "metrics" not in collector.endpoints:
        return None
    text = (await collector.http.get(collector.endpoints["metrics"])).text
    match = re.search(r'target_info\{[^}]*service_version="([^"]+)"', text) or re.search(
        r'otelcol_process_uptime[^{]*\{[^}]*service_version="([^"]+)"', text
    )
    return match.group(1) if match else None


async def _liveness(collector: Collector) -> None:
    raise_unless(await collector.http.get(collector.endpoint("health")), label=LABEL)


async def _watch(collector: Collector) -> Held:
    """A keep-alive connection to the health_check extension, held idle after one check."""
    return await hold_http(collector.http, collector.endpoint("health"))


async def _writes(ctx: CheckContext[Any], service: str) -> Any:
    """Resilience write accounting: spans sent to this collector over OTLP/HTTP (the SDK
    retries while it is down), read back from its linked trace store."""
    otlp_http = ctx.stack.service(service).endpoints.get("otlp_http")
    store = ctx.stack.link(service, "trace_store")
    return await span_writes_via(
        ctx, otlp_http, store, f"{service}: needs endpoints.otlp_http and a linked trace store"
    )


KIND: Kind[Collector] = Kind(
    name="otel-collector",
    description="OpenTelemetry Collector: health, trace pipeline, metric intake and export, exemplars",
    capabilities=(
        "health",
        "trace-pipeline",
        "metrics-collection",
        "metrics-export",
        "trace-metric-correlation",
    ),
    connect=_connect,
    url_required=False,
    endpoints=("otlp_http", "otlp_grpc", "health", "metrics", "prometheus"),
    options_model=CollectorOptions,
    links={"prometheus": "prometheus", "trace_store": ("jaeger", "tempo")},
    version=_version,
    liveness=_liveness,
    watch=_watch,
    writes=_writes,
)
check = KIND.check


def _options(ctx: CheckContext[Any]) -> CollectorOptions:
    options: CollectorOptions = ctx.options
    return options


def _moved(what: str, delta: float, expected: float, shared: bool) -> str | None:
    """None when the counter moved as expected, else what was seen."""
    ok = delta >= expected if shared else delta == expected
    return (
        None
        if ok
        else f"{what} moved by {delta:g}, expected {'at least ' if shared else ''}{expected:g}"
    )


@check(
    "health",
    title="the health_check extension reports the collector available",
    name="health_check",
)
async def check_health(ctx: CheckContext[Collector]) -> str:
    url = ctx.client.endpoint("health")
    answer = await ctx.client.http.get(url)
    refuse_auth(answer)
    try:
        body = answer.json()
    except ValueError:
        body = {"text": answer.text[:120]}
    ctx.evidence.update(
        status_code=answer.status_code,
        **{k: v for k, v in body.items() if k in ("status", "upSince", "uptime")},
    )
    if answer.status_code != 200 or body.get("status") != "Server available":
        raise CheckFailed(
            f"health_check: expected 200 'Server available', saw {answer.status_code} {body}"
        )
    return f"Server available, up {body.get('uptime', '?')}"


@check(
    "trace-pipeline",
    title="spans over OTLP/HTTP and gRPC are accepted and exported, none fail",
    name="accepted_and_sent",
    exclusive=True,
    timeout=30,
)
async def check_trace_pipeline(ctx: CheckContext[Collector]) -> str:
    shared = _options(ctx).shared_traffic
    before = await ctx.client.counters()
    n = SPANS_PER_TRANSPORT
    sent_http = [
        otlp.ProbeSpan(
            otlp.new_trace_id(), otlp.new_span_id(), f"pipeline-http-{i}", PROBE_SERVICE
        ).finish()
        for i in range(n)
    ]
    sent_grpc = [
        otlp.ProbeSpan(
            otlp.new_trace_id(), otlp.new_span_id(), f"pipeline-grpc-{i}", PROBE_SERVICE
        ).finish()
        for i in range(n)
    ]
    resource = {"stackprobe.run": ctx.run_id}
    await otlp.export_http(
        ctx.client.endpoint("otlp_http"), "traces", otlp.traces_request(sent_http, resource)
    )
    await otlp.export_grpc(
        ctx.client.endpoint("otlp_grpc"), "traces", otlp.traces_request(sent_grpc, resource)
    )
    exporters = [e for e in by_label(before, "otelcol_exporter_sent_spans", "exporter") if e]

    async def settled() -> dict[str, Any]:
        after = await ctx.client.counters()
        delta: dict[str, Any] = {
            "accepted_http": total(after, "otelcol_receiver_accepted_spans", transport="http") - total(before, "otelcol_receiver_accepted_spans", transport="http"),
            "accepted_grpc": total(after, "otelcol_receiver_accepted_spans", transport="grpc") - total(before, "otelcol_receiver_accepted_spans", transport="grpc"),
            "refused": total(after, "otelcol_receiver_refused_spans") - total(before, "otelcol_receiver_refused_spans"),
            "send_failed": total(after, "otelcol_exporter_send_failed_spans") - total(before, "otelcol_exporter_send_failed_spans"),
        }  # fmt: skip
        sent_now = by_label(after, "otelcol_exporter_sent_spans", "exporter")
        names = exporters or [e for e in sent_now if e]
        delta["sent"] = {
            e: sent_now.get(e, 0.0)
            - by_label(before, "otelcol_exporter_sent_spans", "exporter").get(e, 0.0)
            for e in names
        }
        problems = [
            p for p in (
                _moved("accepted spans (http)", delta["accepted_http"], n, shared),
                _moved("accepted spans (grpc)", delta["accepted_grpc"], n, shared),
                *(_moved(f"sent spans ({e})", d, 2 * n, shared) for e, d in delta["sent"].items()),
            ) if p
        ]  # fmt: skip
        if not names:
            problems.append("no exporter reported otelcol_exporter_sent_spans")
        if problems:
            raise CheckFailed("; ".join(problems), counters=delta)
        return delta

    delta = await ctx.eventually(
        settled, timeout=PIPELINE_TIMEOUT, interval=0.25, what="collector span counters"
    )
    ctx.evidence["counters"] = delta
    if delta["send_failed"] or delta["refused"]:
        raise CheckFailed(
            f"send_failed spans moved by {delta['send_failed']:g}, refused by {delta['refused']:g}: expected 0"
        )
    return f"{2 * n} spans accepted ({n} http, {n} grpc) and sent by {', '.join(delta['sent'])}; 0 failed"


@check(
    "metrics-collection",
    title="metric points over OTLP are accepted, none refused",
    name="points_accepted",
    exclusive=True,
    timeout=20,
)
async def check_metrics_collection(ctx: CheckContext[Collector]) -> str:
    shared = _options(ctx).shared_traffic
    before = await ctx.client.counters()
    for i in range(POINTS):
        request = otlp.gauge_request(
            "stackprobe_intake_probe",
            float(i),
            {"stackprobe_run": ctx.run_id, "point": str(i)},
            PROBE_SERVICE,
        )
        await otlp.export_http(ctx.client.endpoint("otlp_http"), "metrics", request)

    async def accepted() -> float:
        after = await ctx.client.counters()
        delta = total(after, "otelcol_receiver_accepted_metric_points") - total(
            before, "otelcol_receiver_accepted_metric_points"
        )
        refused = total(after, "otelcol_receiver_refused_metric_points") - total(
            before, "otelcol_receiver_refused_metric_points"
        )
        if refused:
            raise CheckFailed(f"{refused:g} metric point(s) refused")
        if problem := _moved("accepted metric points", delta, POINTS, shared):
            raise CheckFailed(problem)
        return delta

    delta = await ctx.eventually(
        accepted, timeout=PIPELINE_TIMEOUT, interval=0.25, what="accepted metric points"
    )
    ctx.evidence["accepted_points"] = delta
    return f"{delta:g} metric points accepted over OTLP/HTTP, 0 refused"


async def _prometheus(ctx: CheckContext[Any]) -> tuple[str, PrometheusAPI]:
    name, api = await ctx.linked("prometheus")
    prometheus: PrometheusAPI = api
    return name, prometheus


@check(
    "metrics-export",
    title="a run-unique probe metric reaches Prometheus through the collector",
    name="probe_metric_in_prometheus",
    timeout=30,
)
async def check_metrics_export(ctx: CheckContext[Collector]) -> str:
    prom_name, api = await _prometheus(ctx)
    value = float(random.randint(1000, 999999))
    request = otlp.gauge_request(
        "stackprobe_probe_value", value, {"stackprobe_run": ctx.run_id}, PROBE_SERVICE
    )
    await otlp.export_http(ctx.client.endpoint("otlp_http"), "metrics", request)
    sent = time.monotonic()
    query = f'stackprobe_probe_value{{stackprobe_run="{ctx.run_id}"}}'

    async def arrived() -> None:
        seen = await api.scalar(query)
        if seen != value:
            raise CheckFailed(f"{query} = {seen}, expected {value:g}")

    await ctx.eventually(
        arrived, timeout=EXPORT_TIMEOUT, interval=0.5, what=f"probe metric in {prom_name}"
    )
    took = time.monotonic() - sent
    ctx.evidence.update(
        query=query, value=value, visible_after_s=round(took, 3), prometheus=prom_name
    )
    return f"probe metric with value {value:g} queryable in {prom_name} after {took:.1f} s"


async def exemplar_storage(api: PrometheusAPI) -> bool | None:
    """Whether Prometheus stores exemplars (`--enable-feature=exemplar-storage`, a feature flag
    on 2.x and 3.x alike), from /api/v1/status/flags; None when it does not say."""
    try:
        flags = await api.get("/api/v1/status/flags")
    except (CheckFailed, httpx.HTTPError):
        return None
    if not isinstance(flags, dict) or "enable-feature" not in flags:
        return None
    return "exemplar-storage" in str(flags["enable-feature"]).replace(" ", "").split(",")


@check(
    "trace-metric-correlation",
    title="span metrics carry an exemplar with the probe trace id, which resolves in the trace store",
    name="exemplar_resolves",
    timeout=45,
)
async def check_exemplar(ctx: CheckContext[Collector]) -> str:
    prom_name, api = await _prometheus(ctx)
    storing = await exemplar_storage(api)
    ctx.evidence["exemplar_storage"] = storing
    off = (
        f"; {prom_name} stores no exemplars: it runs without --enable-feature=exemplar-storage"
        if storing is False
        else ""
    )
    store_name = ctx.linked_name("trace_store")
    ns = _options(ctx).span_metrics_namespace
    sent_ids: list[str] = []

    async def send_probe() -> None:
        """A new probe span: span metrics carry exemplars only for spans of the last flush,
        so a Prometheus that scrapes later than one flush after a span misses its exemplar."""
        trace_id = otlp.new_trace_id()
        span = otlp.ProbeSpan(
            trace_id,
            otlp.new_span_id(),
            "exemplar-probe",
            PROBE_SERVICE,
            kind=otlp.SPAN_KIND_SERVER,
        )
        request = otlp.traces_request([span.finish()], {"stackprobe.run": ctx.run_id})
        await otlp.export_http(ctx.client.endpoint("otlp_http"), "traces", request)
        sent_ids.append(trace_id)

    start = time.time() - 60
    sent = time.monotonic()
    await send_probe()
    selector = (
        f'{{service_name="{PROBE_SERVICE}",__name__=~"{ns}_(calls_total|duration.*_bucket)"}}'
    )

    async def exemplar() -> dict[str, Any]:
        data = await api.get(
            "/api/v1/query_exemplars", query=selector, start=start, end=time.time() + 5
        )
        for series_data in data:
            for ex in series_data.get("exemplars", []):
                if ex.get("labels", {}).get("trace_id") in sent_ids:
                    return {"series": series_data.get("seriesLabels", {}), "exemplar": ex}
        total_ex = sum(len(s.get("exemplars", [])) for s in data)
        await send_probe()
        raise CheckFailed(
            f"{len(data)} span-metric series with {total_ex} exemplar(s), none with one of the "
            f"{len(sent_ids) - 1} probe trace id(s) sent{off}"
        )

    found = await ctx.eventually(
        exemplar, timeout=EXPORT_TIMEOUT, interval=1.0, what="exemplar with a probe trace id"
    )
    trace_id = str(found["exemplar"]["labels"]["trace_id"])
    exemplar_after = time.monotonic() - sent
    trace_store: TraceStore = await ctx.open(store_name)

    async def resolves() -> None:
        if not await trace_store.get_trace(trace_id):
            raise CheckFailed(f"trace {trace_id} from the exemplar is not in {store_name}")

    await ctx.eventually(
        resolves, timeout=15, interval=0.25, what=f"exemplar trace in {store_name}"
    )
    ctx.evidence.update(
        trace_id=trace_id,
        exemplar_after_s=round(exemplar_after, 2),
        metric=found["series"].get("__name__"),
        trace_store=store_name,
    )
    return f"exemplar with the probe trace id on {found['series'].get('__name__')} after {exemplar_after:.1f} s; trace found in {store_name}"  # fmt: skip
