"""Prometheus workload on the kind's own client (PrometheusAPI): an instant query. It reads
only; nothing is created."""

from __future__ import annotations

from typing import Any

from stackprobe.check import CheckContext
from stackprobe.load.engine import Op
from stackprobe.load.workload import workload
from stackprobe.services.prometheus import PrometheusAPI

QUERY = "count(up)"


@workload("prometheus", name="instant_query", title=f"GET /api/v1/query?query={QUERY}")
async def instant_query(ctx: CheckContext[PrometheusAPI], lanes: int) -> list[Op]:
    async def op() -> Any:
        result = await ctx.client.query(QUERY)
        if not result:
            raise LookupError(f"{QUERY}: empty result (no target scraped)")
        return result

    return [op] * lanes
