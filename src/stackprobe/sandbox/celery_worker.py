"""The sandbox's Celery worker app: Celery with OpenTelemetry's Celery instrumentation, so the
flow's task continues the caller's trace (`run/celery.accumulate` under the caller's span)
and its span reaches the sandbox collector over OTLP/HTTP.

It is what a user's own worker needs for the flow's Celery span, written out:
`opentelemetry-instrumentation-celery` with a TracerProvider exporting to the collector.

The sandbox copies this file next to the worker's config and starts
`python -m celery -A stackprobe_worker ...` there. It imports only installed packages (celery
and opentelemetry-*), never stackprobe, so the worker runs the same whichever stackprobe tree
or install started it. Only tasks that arrive with a sampled W3C trace context are traced
(`ParentBased(ALWAYS_OFF)`): the flow's task is, while the round-trip probes of the other
checks add no spans to the collector whose counters those checks read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_shutdown
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

CONFIG_NAME = "stackprobe_worker.json"  # {"otlp_http": base URL or null, "service_name": ...}
EXPORT_DELAY_MS = 100  # the SDK's default is 5 s: the flow should not wait on it

config: dict[str, Any] = json.loads(Path(__file__).with_name(CONFIG_NAME).read_text())
app = Celery("stackprobe-sandbox-worker")
provider = TracerProvider(
    resource=Resource.create({"service.name": config["service_name"]}),
    sampler=ParentBased(ALWAYS_OFF),
    shutdown_on_exit=False,
)
if config.get("otlp_http"):  # a sandbox without a collector: traced, not exported
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{config['otlp_http'].rstrip('/')}/v1/traces", timeout=5),
            schedule_delay_millis=EXPORT_DELAY_MS,
        )
    )
CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _flush(**_: Any) -> None:
    """Deliver the last spans before the worker exits."""
    provider.shutdown()
