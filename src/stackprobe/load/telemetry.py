"""The load, live, as OTLP metrics through the stack's collector: Prometheus scrapes them
from the collector's exporter and the reference Grafana dashboard's "Load" row shows them.

Every second one OTLP/HTTP export of gauges, labelled with the run, service and workload:
`stackprobe_load_rate` (operations completed in the last second), `stackprobe_load_target_rate`,
`stackprobe_load_errors` (errors in the last second), `stackprobe_load_latency_p50_ms` and
`stackprobe_load_latency_p99_ms` (of the last second). An export that fails or is still in
flight is skipped and counted, never waited for: telemetry must not slow the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from stackprobe import otlp
from stackprobe.load.engine import Tick

EXPORT_TIMEOUT = 2.0
SERVICE_NAME = "stackprobe-load"
RATE = "stackprobe_load_rate"
TARGET_RATE = "stackprobe_load_target_rate"
ERRORS = "stackprobe_load_errors"
P50 = "stackprobe_load_latency_p50_ms"
P99 = "stackprobe_load_latency_p99_ms"
METRICS = (RATE, TARGET_RATE, ERRORS, P50, P99)  # the reference dashboard's "Load" row reads them


def metrics_request(
    values: dict[str, float], labels: dict[str, str]
) -> metrics_service_pb2.ExportMetricsServiceRequest:
    now = time.time_ns()
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.CopyFrom(
        resource_pb2.Resource(attributes=otlp.attributes({"service.name": SERVICE_NAME}))
    )
    sm = rm.scope_metrics.add()
    sm.scope.name = "stackprobe.load"
    for name, value in values.items():
        point = metrics_pb2.NumberDataPoint(
            time_unix_nano=now, as_double=value, attributes=otlp.attributes(labels)
        )
        sm.metrics.append(
            metrics_pb2.Metric(name=name, gauge=metrics_pb2.Gauge(data_points=[point]))
        )
    return request


class LoadTelemetry:
    """Exports each tick of the engine to `<otlp_http>/v1/metrics` with the collector's client."""

    def __init__(self, http: httpx.AsyncClient, otlp_http: str, labels: dict[str, str]) -> None:
        self.http = http
        self.url = f"{otlp_http.rstrip('/')}/v1/metrics"
        self.labels = labels
        self.sent = 0
        self.failed = 0
        self.skipped = 0
        self.last_error: str | None = None
        self._pending: asyncio.Task[None] | None = None

    async def start(self, target_rate: float | None) -> None:
        """One export before the load: the connection is open before the first tick (a
        first request's set-up inside the load would stall the generator)."""
        await self._export({TARGET_RATE: float(target_rate or 0)})

    def tick(self, tick: Tick) -> None:
        if self._pending is not None and not self._pending.done():
            self.skipped += 1
            return
        values = {
            RATE: float(tick.ops + tick.errors),
            ERRORS: float(tick.errors),
            P50: tick.p50_ms,
            P99: tick.p99_ms,
        }
        if tick.target_rate:
            values[TARGET_RATE] = float(tick.target_rate)
        self._pending = asyncio.get_running_loop().create_task(self._export(values))

    async def _export(self, values: dict[str, float]) -> None:
        body = metrics_request(values, self.labels).SerializeToString()
        try:
            answer = await self.http.post(
                self.url,
                content=body,
                headers={"Content-Type": "application/x-protobuf"},
                timeout=EXPORT_TIMEOUT,
            )
            if answer.status_code // 100 != 2:
                raise RuntimeError(f"HTTP {answer.status_code}")
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - a lost export is counted, the load goes on
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]

    async def close(self) -> dict[str, Any]:
        """Wait briefly for the last export; what was sent, as evidence."""
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pending, EXPORT_TIMEOUT)
        return {
            "url": self.url,
            "exports": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
            "last_error": self.last_error,
        }
