"""The flow's probe service: a small HTTP application in a process of its own, so the flow's
trace crosses real process and network boundaries, as an application's request does.

`python -m stackprobe.flow_probe` reads one JSON line of settings on stdin (URLs with their
credentials never appear on a command line), serves on a free port of `host`, prints
`{"port": N}` on stdout, and runs until stdin closes; then it delivers its last spans and
exits. `GET /health` answers `ok`. `GET /checkout?key=K&task=T&nonce=N` continues the caller's
trace from its W3C `traceparent` header (a SERVER span), reads K from Redis (a miss, the key is
new), writes it with a TTL and reads it again (a hit): cache-aside; then it enqueues Celery's
built-in `celery.accumulate(N)` as task T with the trace context in the message headers (a
PRODUCER span). It answers JSON with its span ids, what each step saw, and how long it took.

Spans come from the OpenTelemetry SDK with `service.name` = the settings' `service_name`,
exported over OTLP/HTTP to `otlp_http` (the flow's collector).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from stackprobe.explain import explain
from stackprobe.httpserver import LocalHttpServer, Request, Response
from stackprobe.services.celery import TASK_EXPIRES_S, CeleryClient, celery_client

PROPAGATOR = TraceContextTextMapPropagator()
TASK = "celery.accumulate"  # Celery's built-in task: every worker has it
EXPORT_DELAY_MS = 100
EXPORT_TIMEOUT_S = 3.0
REDIS_TIMEOUT_S = 3.0


def span_id(span: trace.Span) -> str:
    return f"{span.get_span_context().span_id:016x}"


def tracer_provider(service_name: str, otlp_http: str | None) -> TracerProvider:
    """A provider of this process's own (never the global one), exporting over OTLP/HTTP."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False
    )
    if otlp_http:
        exporter = OTLPSpanExporter(
            endpoint=f"{otlp_http.rstrip('/')}/v1/traces", timeout=EXPORT_TIMEOUT_S
        )
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS)
        )
    return provider


@dataclass
class ProbeApp:
    """The request handler; one per process."""

    tracer: trace.Tracer
    cache: aioredis.Redis | None
    celery: CeleryClient | None
    key_ttl_s: int

    async def handle(self, request: Request) -> Response:
        path = urlsplit(request.target).path
        if path == "/health":
            return Response(200, b"ok")
        if path != "/checkout" or request.method != "GET":
            return Response(404, b"not found")
        carrier = {k: v for k, v in request.headers.items() if k in ("traceparent", "tracestate")}
        parent = PROPAGATOR.extract(carrier)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            return Response(400, b"no valid traceparent header")
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.target).query).items()}
        with self.tracer.start_as_current_span(
            "GET /checkout", context=parent, kind=SpanKind.SERVER
        ) as server:
            server.set_attribute("http.request.method", "GET")
            server.set_attribute("url.path", "/checkout")
            answer: dict[str, Any] = {"spans": {"server": span_id(server)}}
            answer["redis"] = await self.cache_aside(query.get("key", ""), answer["spans"])
            answer["celery"] = await self.enqueue(
                query.get("task", ""), query.get("nonce", ""), answer["spans"]
            )
            server.set_attribute("http.response.status_code", 200)
        body = json.dumps(answer).encode()
        return Response(200, body, "application/json")

    async def cache_aside(self, key: str, spans: dict[str, str]) -> dict[str, Any]:
        """Read (a miss), load and write with a TTL, read again (a hit)."""
        if self.cache is None:
            return {"skipped": "no redis configured"}
        if not key:
            return {"error": "no key in the request"}
        seen: dict[str, Any] = {}
        started = time.perf_counter()
        steps = (("cache_read", "GET"), ("cache_write", "SET"), ("cache_reread", "GET"))
        value = f"loaded {time.time():.6f}".encode()
        for name, command in steps:
            with self.tracer.start_as_current_span(command, kind=SpanKind.CLIENT) as span:
                spans[name] = span_id(span)
                span.set_attribute("db.system", "redis")
                span.set_attribute("db.operation.name", command)
                try:
                    async with asyncio.timeout(REDIS_TIMEOUT_S):
                        if command == "SET":
                            await self.cache.set(key, value, ex=self.key_ttl_s)
                            seen[name] = "written"
                        else:
                            got = await self.cache.get(key)
                            seen[name] = (
                                "miss" if got is None else ("hit" if got == value else "stale")
                            )
                except Exception as exc:  # noqa: BLE001 - reported to the flow, which names it
                    span.set_status(Status(StatusCode.ERROR, explain(exc)))
                    seen["error"] = f"{command} {key}: {explain(exc)}"
                    break
        seen["ms"] = round((time.perf_counter() - started) * 1000, 2)
        return seen

    async def enqueue(self, task_id: str, nonce: str, spans: dict[str, str]) -> dict[str, Any]:
        """Publish the task with the trace context in its headers (the worker continues it)."""
        if self.celery is None:
            return {"skipped": "no celery worker configured"}
        if not task_id:
            return {"error": "no task id in the request"}
        with self.tracer.start_as_current_span(
            f"apply_async/{TASK}", kind=SpanKind.PRODUCER
        ) as span:
            spans["publish"] = span_id(span)
            span.set_attribute("messaging.system", "celery")
            span.set_attribute("messaging.message.id", task_id)
            headers: dict[str, str] = {}
            PROPAGATOR.inject(headers)
            started = time.perf_counter()
            enqueued_at = time.time()
            try:
                await asyncio.to_thread(
                    self.celery.app.send_task,
                    TASK,
                    args=(nonce,),
                    queue=self.celery.queue,
                    task_id=task_id,
                    expires=TASK_EXPIRES_S,
                    headers=headers,
                )
            except Exception as exc:  # noqa: BLE001 - reported to the flow, which names it
                span.set_status(Status(StatusCode.ERROR, explain(exc)))
                return {"error": f"publish {TASK}: {explain(exc)}"}
        return {
            "task_id": task_id,
            "enqueued_at": enqueued_at,
            "publish_ms": round((time.perf_counter() - started) * 1000, 2),
            "traceparent": headers.get("traceparent"),
        }


async def serve(settings: dict[str, Any]) -> None:
    provider = tracer_provider(settings["service_name"], settings.get("otlp_http"))
    cache = (
        aioredis.Redis.from_url(
            settings["redis_url"],
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        if settings.get("redis_url")
        else None
    )
    celery = (
        celery_client(settings["broker_url"], settings["backend_url"], settings["queue"])
        if settings.get("broker_url")
        else None
    )
    app = ProbeApp(
        provider.get_tracer("stackprobe.flow_probe"), cache, celery, int(settings["key_ttl_s"])
    )
    try:
        async with LocalHttpServer(app.handle, host=settings.get("host", "127.0.0.1")) as server:
            sys.stdout.write(json.dumps({"port": server.port}) + "\n")
            sys.stdout.flush()
            await asyncio.to_thread(sys.stdin.read)  # until the flow closes our stdin
    finally:
        await asyncio.to_thread(provider.shutdown)  # the last spans are delivered
        if cache is not None:
            await cache.aclose()
        if celery is not None:
            celery.app.close()


def main() -> None:
    settings = json.loads(sys.stdin.readline())
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
