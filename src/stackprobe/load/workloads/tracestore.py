"""Trace store workload (Jaeger, Tempo) on the kind's own TraceStore adapter: lookup by id.
Before the load, one probe trace (with the run's `stackprobe.run` attribute) is sent the way
the trace-store checks send theirs (through the linked collector, else the store's own OTLP
receiver) and waited for; every operation reads it back by id. Spans cannot be deleted; like
every probe trace they age out with the store's retention."""

from __future__ import annotations

from typing import Any

from stackprobe import otlp
from stackprobe.check import CheckContext
from stackprobe.load.engine import Op
from stackprobe.load.workload import workload
from stackprobe.services.tracestore import PROBE_SERVICE, TraceStore, send, wait_for_trace

SPANS = 3


@workload("jaeger", "tempo", name="lookup_by_id", title="GET of one stored trace by its id")
async def lookup_by_id(ctx: CheckContext[TraceStore], lanes: int) -> list[Op]:
    trace_id = otlp.new_trace_id()
    root = otlp.ProbeSpan(trace_id, otlp.new_span_id(), "load-root", PROBE_SERVICE)
    spans = [root] + [
        otlp.ProbeSpan(
            trace_id,
            otlp.new_span_id(),
            f"load-child-{i}",
            PROBE_SERVICE,
            parent_span_id=root.span_id,
        )
        for i in range(SPANS - 1)
    ]
    for span in spans:
        span.finish()
    await send(ctx, spans)
    await wait_for_trace(ctx, ctx.client, trace_id, SPANS)

    async def op() -> Any:
        found = await ctx.client.get_trace(trace_id)
        if not found or len(found) < SPANS:
            raise LookupError(f"trace {trace_id}: {len(found or [])} of {SPANS} spans")
        return found

    return [op] * lanes
