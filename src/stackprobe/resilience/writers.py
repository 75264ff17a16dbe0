"""Jepsen-style write accounting: a writer writes at a steady rate through the whole method,
the ledger records every write the service acknowledged and every one it refused, and after
recovery each acknowledged write is read back: the ones gone are `lost`.

Each kind defines its writes in its own module (`Kind.writes`), through its own client:
redis SETs and reads back run-prefixed keys (through Sentinel's current master when the
service has `endpoints.sentinels`), consul PUTs and reads back KV keys, the collector and the
trace stores send spans through the OpenTelemetry SDK's OTLP/HTTP exporter (with its own
retry; acknowledged = the export of its batch succeeded) and read them back from the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from stackprobe.check import CheckContext, CheckSkipped
from stackprobe.explain import explain
from stackprobe.threads import in_thread

READ_BACK_TIMEOUT = 30.0
SPAN_DELIVERY_TIMEOUT = 60.0  # spans sent during an outage arrive after the retries
MAX_LOST_LISTED = 20
# the exporter logs each retry as a warning on stderr: the ledger already counts them
logging.getLogger("opentelemetry.exporter").setLevel(logging.ERROR)


class Writes(Protocol):
    """One kind's way to write and read back numbered writes."""

    async def write(self, i: int) -> None:
        """Write number `i`; return when the service acknowledged it, raise when it refused."""
        ...

    async def kept(self, acknowledged: list[int]) -> set[int]:
        """Which of the acknowledged writes are there now (after recovery)."""
        ...

    async def close(self) -> None:
        """Remove everything written, by name."""
        ...


@dataclass
class Ledger:
    """Every write attempted: when, whether acknowledged, and why refused."""

    attempted: int = 0
    acknowledged: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)
    slowest_s: float = 0.0  # the longest a write took (clients fail fast: it stays bounded)

    def summary(self) -> dict[str, Any]:
        causes: dict[str, int] = {}
        for cause in self.refused.values():
            causes[cause] = causes.get(cause, 0) + 1
        return {
            "attempted": self.attempted,
            "acknowledged": len(self.acknowledged),
            "refused": len(self.refused),
            "refused_causes": dict(sorted(causes.items(), key=lambda kv: -kv[1])[:5]),
            "lost": len(self.lost),
            "lost_writes": self.lost[:MAX_LOST_LISTED],
            "slowest_write_s": round(self.slowest_s, 3),
        }


class Writer:
    """Drives one `Writes` at a rate until stopped; the ledger says what happened."""

    def __init__(self, writes: Writes, rate: float, timeout: float) -> None:
        self.writes = writes
        self.rate = rate
        self.timeout = timeout  # one write's budget: a write that hangs counts as refused
        self.ledger = Ledger()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        interval = 1.0 / self.rate
        started = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = started + i * interval
            if (wait := due - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), wait)
                    return
                except TimeoutError:
                    pass
            await self._one(i)
            i += 1

    async def _one(self, i: int) -> None:
        self.ledger.attempted += 1
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                await self.writes.write(i)
            self.ledger.acknowledged.append(i)
        except TimeoutError:
            self.ledger.refused[i] = f"no answer within {self.timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - a refused write is counted with its cause
            self.ledger.refused[i] = explain(exc)[:120]
        self.ledger.slowest_s = max(self.ledger.slowest_s, time.monotonic() - t0)

    async def account(self) -> Ledger:
        """Read back every acknowledged write; the ones not there are lost."""
        async with asyncio.timeout(SPAN_DELIVERY_TIMEOUT + READ_BACK_TIMEOUT):
            kept = await self.writes.kept(list(self.ledger.acknowledged))
        self.ledger.lost = [i for i in self.ledger.acknowledged if i not in kept]
        return self.ledger


# --- the kinds' writes --------------------------------------------------------------------


class SpanWrites:
    """One span per write through the OpenTelemetry SDK (BatchSpanProcessor + OTLP/HTTP
    exporter with its retry), acknowledged when the export of its batch succeeded."""

    def __init__(
        self, ctx: CheckContext[object], otlp_http: str, store: Any, service_name: str
    ) -> None:
        self.store = store
        self.acked: set[str] = set()  # trace ids whose batch was acknowledged
        self.trace_of: dict[int, str] = {}
        exporter = _Acknowledging(otlp_http, self.acked)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "stackprobe.run": ctx.run_id})
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=200, max_export_batch_size=64)
        )
        self.tracer = self.provider.get_tracer("stackprobe.resilience")

    async def write(self, i: int) -> None:
        with self.tracer.start_as_current_span("stackprobe-resilience-write") as span:
            span.set_attribute("stackprobe.write", i)
            self.trace_of[i] = format(span.get_span_context().trace_id, "032x")

    async def kept(self, acknowledged: list[int]) -> set[int]:
        await in_thread(self.provider.force_flush, int(SPAN_DELIVERY_TIMEOUT * 1000))
        # a span is acknowledged when its batch's export succeeded, not when it was created
        acked = [i for i in acknowledged if self.trace_of.get(i) in self.acked]
        acknowledged[:] = acked
        found: set[int] = set()
        deadline = time.monotonic() + READ_BACK_TIMEOUT
        pending = list(acked)
        while pending and time.monotonic() < deadline:
            results = await asyncio.gather(*(self.store.get_trace(self.trace_of[i]) for i in pending), return_exceptions=True)  # fmt: skip
            found |= {
                i
                for i, r in zip(pending, results, strict=True)
                if r and not isinstance(r, BaseException)
            }
            pending = [i for i in pending if i not in found]
            if pending:
                await asyncio.sleep(1.0)
        return found

    async def close(self) -> None:
        await in_thread(self.provider.shutdown)


class _Acknowledging(SpanExporter):
    """The OTLP/HTTP span exporter, recording which traces were in a batch that succeeded."""

    def __init__(self, endpoint: str, acked: set[str]) -> None:
        self.inner = OTLPSpanExporter(
            endpoint=f"{endpoint.rstrip('/')}/v1/traces", timeout=SPAN_DELIVERY_TIMEOUT
        )
        self.acked = acked

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.acked.update(format(s.context.trace_id, "032x") for s in spans if s.context)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]  # the exporter leaves it untyped

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


async def writes_for(ctx: CheckContext[object], service: str) -> Writes:
    """The writes of `service`'s kind (its `Kind.writes`), through its own client."""
    assert ctx.services is not None
    kind = ctx.services.kind(service)
    if kind.writes is None:
        raise CheckSkipped(f"{service}: kind {kind.name} has no writer for write accounting")
    writes: Writes = await kind.writes(ctx, service)
    return writes


async def span_writes_via(
    ctx: CheckContext[object], otlp_http: str | None, store: str | None, what: str
) -> Writes:
    """Spans sent to `otlp_http` and read back from the trace store `store` (the writes of the
    collector and of the trace stores)."""
    if otlp_http is None or store is None:
        raise CheckSkipped(what)
    return SpanWrites(ctx, otlp_http, await ctx.open(store), f"{ctx.ns}writer")


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
