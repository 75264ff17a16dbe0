"""Grafana workload on the kind's own client (GrafanaClient): a panel query through
`/api/ds/query` and the Prometheus datasource (`options.query_datasource`, else the only or
default one), as the query-performance check sends it. It reads only."""

from __future__ import annotations

from typing import Any

from stackprobe.check import CheckContext
from stackprobe.load.engine import Op
from stackprobe.load.workload import workload
from stackprobe.services.grafana import GrafanaClient, prometheus_datasource, query_through


@workload(
    "grafana",
    name="panel_query",
    title="POST /api/ds/query: an instant PromQL query through the Prometheus datasource",
)
async def panel_query(ctx: CheckContext[GrafanaClient], lanes: int) -> list[Op]:
    datasource = prometheus_datasource(ctx, await ctx.client.datasources())
    uid, name = str(datasource["uid"]), str(datasource.get("name"))
    ctx.evidence["datasource"] = uid

    async def op() -> Any:
        await query_through(ctx.client, uid, name)

    return [op] * lanes
