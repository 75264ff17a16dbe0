"""End to end: one request's data flows through the cache, the task queue and tracing, and the
cache holds up under a bounded burst of load.
"""

from __future__ import annotations

import secrets
import statistics
import time
import uuid
from typing import Any

import pytest
from celery import Celery

from stackprobe.config import Stack
from stackprobe.pytest_plugin import RedisHandle, ServiceHandle
from stackprobe.testing import Span, eventually, fetch_trace, new_trace_id, otlp_traces


@pytest.mark.stackprobe(kind="redis", capability="celery-queue")
@pytest.mark.stackprobe(kind="otel-collector", capability="trace-pipeline")
def test_a_checkout_flows_through_cache_queue_and_tracing(
    redis_client: RedisHandle,
    otel_collector: ServiceHandle[Any],
    trace_store: ServiceHandle[Any],
    stackprobe_stack: Stack,
) -> None:
    worker = next((s for s in stackprobe_stack.services.values() if s.kind == "celery"), None)
    if worker is None:
        pytest.skip("the stack has no celery worker service")
    trace_id = new_trace_id()
    # 1. the web tier stores the session, tagged with the trace id
    session = redis_client.key("checkout-session")
    redis_client.client.hset(session, mapping={"trace_id": trace_id, "cart": "3 items"})
    redis_client.client.pexpire(session, 60_000)
    # 2. it enqueues the order; a live worker processes it
    app = Celery("infra-flow", broker=worker.url, backend=worker.endpoints.get("backend", worker.url),
                 set_as_current=False)  # fmt: skip
    task_id = redis_client.name(str(uuid.uuid4()))
    redis_client.cleanup(lambda: redis_client.client.delete(f"celery-task-meta-{task_id}"))
    redis_client.cleanup(app.close)
    order = app.send_task("celery.accumulate", args=(trace_id,), task_id=task_id, expires=30,
                          queue=worker.options.get("queue", "celery"))  # fmt: skip
    assert redis_client.client.hget(session, "trace_id") == trace_id.encode()
    assert order.get(timeout=15) == [trace_id]  # the worker saw the same request
    # 3. both tiers report spans through the collector; the trace store joins them
    web = Span(otel_collector.name("web"), "POST /checkout", secrets.token_hex(8), None)
    task = Span(otel_collector.name("worker"), "process order", secrets.token_hex(8), web.span_id)
    otel_collector.http.post(
        f"{otel_collector.endpoint('otlp_http')}/v1/traces", json=otlp_traces(trace_id, [web, task])
    ).raise_for_status()

    def joined() -> list[Span] | None:
        spans = fetch_trace(trace_store, trace_id)
        return spans if spans and len(spans) == 2 else None

    spans = eventually(joined, 20, "the checkout trace with both tiers")
    assert {s.service for s in spans} == {web.service, task.service}


@pytest.mark.stackprobe(kind="redis", capability="operations")
def test_cache_latency_under_a_bounded_burst(redis_client: RedisHandle) -> None:
    """500 SET+GET pairs, one at a time: p99 stays low on a healthy cache (bounded, loopback)."""
    r = redis_client.client
    keys = [redis_client.key(f"load-{i}") for i in range(50)]
    latencies = []
    for i in range(500):
        key = keys[i % len(keys)]
        started = time.perf_counter()
        r.set(key, i, px=60_000)
        assert r.get(key) == str(i).encode()
        latencies.append(time.perf_counter() - started)
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.05, f"p99 {p99 * 1000:.1f} ms for SET+GET"
