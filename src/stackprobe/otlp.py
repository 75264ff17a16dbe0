"""OTLP: build probe traces and metrics as the official protobuf messages, send them over
HTTP (protobuf) or gRPC, and report what the receiver said (including partial rejections).

The checks speak OTLP themselves instead of through an SDK so that they control every id,
timestamp and attribute, and can tell exactly which span went missing.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from stackprobe.errors import ServiceError

Attr = str | int | float | bool
SPAN_KIND_SERVER = trace_pb2.Span.SPAN_KIND_SERVER
SPAN_KIND_CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
SPAN_KIND_INTERNAL = trace_pb2.Span.SPAN_KIND_INTERNAL
TIMEOUT = 5.0


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


@dataclass
class ProbeSpan:
    """One span as the probe produced it; ids are lowercase hex."""

    trace_id: str
    span_id: str
    name: str
    service: str
    parent_span_id: str = ""
    kind: int = SPAN_KIND_INTERNAL
    start_ns: int = field(default_factory=time.time_ns)
    end_ns: int = 0
    attributes: dict[str, Attr] = field(default_factory=dict)

    def finish(self) -> ProbeSpan:
        self.end_ns = max(time.time_ns(), self.start_ns + 1000)
        return self


def _value(value: Attr) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    return common_pb2.AnyValue(string_value=value)


def attributes(values: Mapping[str, Attr]) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=_value(v)) for k, v in values.items()]


def traces_request(
    spans: Iterable[ProbeSpan], resource: Mapping[str, Attr] | None = None
) -> trace_service_pb2.ExportTraceServiceRequest:
    """One ResourceSpans per service.name, as a real multi-service export would carry them."""
    by_service: dict[str, list[ProbeSpan]] = {}
    for span in spans:
        by_service.setdefault(span.service, []).append(span)
    request = trace_service_pb2.ExportTraceServiceRequest()
    for service, group in by_service.items():
        rs = request.resource_spans.add()
        rs.resource.CopyFrom(
            resource_pb2.Resource(
                attributes=attributes({**(resource or {}), "service.name": service})
            )
        )
        scope = rs.scope_spans.add()
        scope.scope.name = "stackprobe"
        for s in group:
            scope.spans.append(
                trace_pb2.Span(
                    trace_id=bytes.fromhex(s.trace_id),
                    span_id=bytes.fromhex(s.span_id),
                    parent_span_id=bytes.fromhex(s.parent_span_id) if s.parent_span_id else b"",
                    name=s.name,
                    kind=s.kind,  # type: ignore[arg-type]
                    start_time_unix_nano=s.start_ns,
                    end_time_unix_nano=s.end_ns or s.start_ns + 1_000_000,
                    attributes=attributes(s.attributes),
                )
            )
    return request


def gauge_request(
    name: str, value: float, labels: Mapping[str, Attr], service: str, description: str = ""
) -> metrics_service_pb2.ExportMetricsServiceRequest:
    """One gauge point now; `labels` become point attributes (Prometheus labels)."""
    point = metrics_pb2.NumberDataPoint(
        time_unix_nano=time.time_ns(), as_double=value, attributes=attributes(labels)
    )
    metric = metrics_pb2.Metric(
        name=name, description=description, gauge=metrics_pb2.Gauge(data_points=[point])
    )
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.CopyFrom(resource_pb2.Resource(attributes=attributes({"service.name": service})))
    sm = rm.scope_metrics.add()
    sm.scope.name = "stackprobe"
    sm.metrics.append(metric)
    return request


def count_points(request: metrics_service_pb2.ExportMetricsServiceRequest) -> int:
    total = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                which = m.WhichOneof("data")
                total += len(getattr(m, which).data_points) if which else 0
    return total


async def export_http(
    base_url: str, signal: str, request: Any, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """POST an OTLP protobuf export to `<base_url>/v1/<signal>`; evidence of the answer.

    A non-2xx answer or a partial success that rejected items raises ServiceError.
    """
    url = f"{base_url.rstrip('/')}/v1/{signal}"
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.post(
            url,
            content=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
    took = time.monotonic() - started
    if response.status_code // 100 != 2:
        raise ServiceError(
            f"OTLP/HTTP export to {url}: HTTP {response.status_code} {response.text[:200].strip()}"
        )
    reply_type = (
        trace_service_pb2.ExportTraceServiceResponse
        if signal == "traces"
        else metrics_service_pb2.ExportMetricsServiceResponse
    )
    reply = reply_type.FromString(response.content) if response.content else reply_type()
    _raise_partial(reply, url)
    return {"status": response.status_code, "export_ms": round(took * 1000, 1)}


async def export_grpc(
    endpoint: str, signal: str, request: Any, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Export over OTLP/gRPC to `host:port` (insecure, as on a local network)."""
    started = time.monotonic()
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub: Any
        if signal == "traces":
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        else:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            reply = await stub.Export(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise ServiceError(
                f"OTLP/gRPC export to {endpoint}: {exc.code().name}: {exc.details()}"
            ) from None
    _raise_partial(reply, endpoint)
    return {"export_ms": round((time.monotonic() - started) * 1000, 1)}


def _raise_partial(reply: Any, where: str) -> None:
    if reply.HasField("partial_success"):
        ps = reply.partial_success
        rejected = getattr(ps, "rejected_spans", 0) or getattr(ps, "rejected_data_points", 0)
        if rejected:
            raise ServiceError(
                f"OTLP export to {where}: {rejected} item(s) rejected: {ps.error_message}"
            )


def traceparent(trace_id: str, span_id: str) -> str:
    """A W3C traceparent header value (version 00, sampled)."""
    return f"00-{trace_id}-{span_id}-01"


def parse_traceparent(value: str) -> tuple[str, str]:
    """(trace id, parent span id) from a W3C traceparent; ValueError when malformed."""
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] != "00":
        raise ValueError(f"malformed traceparent {value!r}")
    int(parts[1], 16), int(parts[2], 16)
    return parts[1], parts[2]
