"""ArangoDB workloads on the kind's own client (ArangoClient over the HTTP API): a filtered
AQL query on an indexed attribute, and a graph traversal. Both work in the kind's own probe
workspace (a probe database `<ns>arangodb-load`, or prefixed collections in
`options.database`), dropped by name afterwards as every arangodb check does."""

from __future__ import annotations

import random
from typing import Any

from stackprobe.check import CheckContext, CheckFailed
from stackprobe.load.engine import Op
from stackprobe.load.workload import workload
from stackprobe.services.arangodb import (
    LOOKUP,
    TRAVERSAL,
    ArangoClient,
    create_collection,
    create_index,
    probe_graph,
    workspace,
)

DOCS = 1000


@workload(
    "arangodb",
    name="filtered_aql",
    title=f"AQL FILTER on an indexed attribute (one of {DOCS} documents)",
)
async def filtered_aql(ctx: CheckContext[ArangoClient], lanes: int) -> list[Op]:
    client = ctx.client
    db = await workspace(ctx, "load")
    coll, _ = await create_collection(ctx, db, "load-docs")
    await create_index(ctx, db, coll, ["n"], unique=False)
    docs = [{"n": i} for i in range(DOCS)]
    imported = await client.call(
        "POST", "/_api/import", db=db, json=docs, params={"collection": coll, "type": "list"}, ok=(201,)
    )  # fmt: skip
    if imported.get("created") != DOCS:
        raise CheckFailed(f"import of {DOCS} documents: saw {imported}")

    async def op() -> Any:
        n = random.randrange(DOCS)
        cursor = await client.aql(LOOKUP, {"@coll": coll, "n": n}, db=db)
        if len(cursor.get("result") or []) != 1:
            raise LookupError(f"FILTER d.n == {n}: {len(cursor.get('result') or [])} documents, not 1")  # fmt: skip
        return cursor

    return [op] * lanes


@workload("arangodb", name="traversal", title="OUTBOUND 1..3 traversal of the probe graph")
async def traversal(ctx: CheckContext[ArangoClient], lanes: int) -> list[Op]:
    client = ctx.client
    db = await workspace(ctx, "load")
    graph, vertices, _ = await probe_graph(ctx, db)
    bind = {"start": f"{vertices}/a", "graph": graph}

    async def op() -> Any:
        cursor = await client.aql(TRAVERSAL, bind, db=db)
        if not cursor.get("result"):
            raise LookupError("traversal from a found no path")
        return cursor

    return [op] * lanes
