"""OpenTelemetry Collector workload on the kind's own client (its httpx client, OTLP/HTTP
protobuf built by stackprobe.otlp): spans per second. Each operation exports one request of
`SPANS_PER_REQUEST` new spans with the run's `stackprobe.run` resource attribute; an answer
other than 200/202 is an error. Spans cannot be deleted: they age out downstream."""

from __future__ import annotations

from typing import Any

from stackprobe import otlp
from stackprobe.check import CheckContext, CheckSkipped
from stackprobe.http import raise_unless
from stackprobe.load.engine import Op
from stackprobe.load.workload import workload
from stackprobe.services.otel_collector import LABEL, Collector
from stackprobe.services.tracestore import RUN_ATTR

SPANS_PER_REQUEST = 10
LOAD_SERVICE = "stackprobe-load"


@workload(
    "otel-collector",
    name="spans",
    title=f"OTLP/HTTP export of {SPANS_PER_REQUEST} spans per operation",
)
async def spans(ctx: CheckContext[Collector], lanes: int) -> list[Op]:
    endpoint = ctx.client.endpoints.get("otlp_http")
    if not endpoint:
        raise CheckSkipped("endpoints.otlp_http is not configured")
    url = f"{endpoint.rstrip('/')}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    ctx.evidence["spans_per_operation"] = SPANS_PER_REQUEST

    async def op() -> Any:
        trace_id = otlp.new_trace_id()
        batch = [
            otlp.ProbeSpan(trace_id, otlp.new_span_id(), f"load-{i}", LOAD_SERVICE).finish()
            for i in range(SPANS_PER_REQUEST)
        ]
        body = otlp.traces_request(batch, {RUN_ATTR: ctx.run_id}).SerializeToString()
        answer = await ctx.client.http.post(url, content=body, headers=headers)
        raise_unless(answer, (200, 202), label=LABEL)
        return answer

    return [op] * lanes
