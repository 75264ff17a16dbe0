"""ArangoDB: connectivity, document storage with its guarantees, graph traversal, indexed AQL.

Checks talk to ArangoDB's documented HTTP API (3.11/3.12) with httpx and basic auth
(`username`, default root, and `password`; no password means a server with auth off).

Where a check works, and what it creates (DESIGN rule 2):
- By default each check creates its own probe database, `stackprobe-<run_id>-arangodb-<what>`,
  and drops it by name afterwards. ArangoDB's traditional naming rules (the default; extended
  names are opt-in) allow letters, digits, `_` and `-`, a letter first and at most 64 bytes
  for a database: the run prefix (`stackprobe-20261125T115700Z-a1b2c3-`, 35 bytes) fits as it
  is, so the names need no rewriting and `stackprobe clean` recognises them by the prefix.
  This needs a user that may create databases (root in the reference stack).
- With `options.database` set, checks work inside that existing database instead (the
  application's own credentials suffice) and create only prefixed collections and graphs
  there, each dropped by name afterwards. Nothing else in it is touched.
Every collection and graph a check creates carries the run prefix as well
(`stackprobe-<run_id>-meta-docs`, `-graph`, `-graph-vertices`, `-graph-edges`, `-aql-docs`;
indexes live and die with their collection), and its drop is registered before it is created.
"""

from __future__ import annotations

import random
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from stackprobe.check import CheckContext, CheckFailed, ms
from stackprobe.http import (
    HttpServiceError,
    client_for,
    excerpt,
    http_error,
    json_body,
    json_or_none,
    refuse_auth,
)
from stackprobe.ids import PREFIX, is_leftover
from stackprobe.kinds import Kind, Target

DEFAULT_USER = "root"
QUERY_MS = 100.0  # default expectations.query_ms: median of an indexed point lookup
LOOKUP_DOCS = 500  # documents in the query-performance collection
LOOKUPS = 20  # timed lookups
VERSION_SAMPLES = 5
# unauthorized: ArangoDB answers 401 with errorNum 11 (AUTH_401 recording)
ERR_FORBIDDEN = 11
ERR_CONFLICT = 1200  # stale _rev: HTTP 412
ERR_UNIQUE = 1210  # unique constraint violated: HTTP 409
ERR_SCHEMA = 1620  # schema validation failed: HTTP 400


class ArangoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # an existing database to work in (prefixed collections and graphs only); default: one
    # probe database per check, created and dropped by name
    database: str | None = None


class ArangoExpectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query_ms: float = Field(default=QUERY_MS, gt=0)  # median budget of an indexed lookup


_HINTS = {
    401: ": check username and password",
    403: ": the user lacks the rights (set options.database to a database it may write)",
}


def _error_text(response: httpx.Response) -> str:
    """What ArangoDB said, in python-arango's form: `[ERR 1203] collection not found`."""
    body = json_or_none(response)
    if isinstance(body, dict) and body.get("errorMessage"):
        return f"[ERR {body.get('errorNum')}] {body['errorMessage']}"
    return f"[ERR None] {excerpt(response)}"


def arango_error(response: httpx.Response) -> HttpServiceError:
    """An answer a call does not accept: `arangodb: HTTP 404 from GET /_db/x/_api/...: [ERR
    1203] message` (the HTTP rule: 401/403 are `error`, any other answer `failed`)."""
    return http_error(response, label="arangodb", said=_error_text, hints=_HINTS)


def _said(response: httpx.Response) -> str:
    """What ArangoDB answered, in one line: `HTTP 412 errorNum 1200 "conflict, ..."`."""
    body = json_or_none(response)
    if isinstance(body, dict) and body.get("error"):
        return f'HTTP {response.status_code} errorNum {body.get("errorNum")} "{body.get("errorMessage")}"'
    if response.is_success:  # accepted: what was written is what matters
        written = f" (written as _rev {body['_rev']})" if isinstance(body, dict) and body.get("_rev") else ""  # fmt: skip
        return f"HTTP {response.status_code}{written}"
    return f"HTTP {response.status_code} {' '.join(response.text.split())[:160]}"


@dataclass
class ArangoClient:
    """One server's HTTP API, every call bounded; `/_db/<db>` scopes a call to a database."""

    http: httpx.AsyncClient
    options: ArangoOptions

    async def request(
        self,
        method: str,
        path: str,
        *,
        db: str = "_system",
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.http.request(
            method, f"/_db/{quote(db, safe='')}{path}", json=json, params=params, headers=headers
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        db: str = "_system",
        json: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        """A call whose failure means the check cannot go on: outside `ok` raises arango_error."""
        response = await self.request(method, path, db=db, json=json, params=params)
        if response.status_code not in ok:
            raise arango_error(response)
        return json_body(response, label="arangodb")

    async def aql(
        self, query: str, bind_vars: dict[str, Any] | None = None, *, db: str = "_system"
    ) -> dict[str, Any]:
        """One AQL query (all results in the first batch); the cursor answer."""
        body = {"query": query, "bindVars": bind_vars or {}, "batchSize": 1000}
        answer: dict[str, Any] = await self.call("POST", "/_api/cursor", db=db, json=body)
        return answer


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[ArangoClient]:
    assert target.config.url is not None  # validated: url is required for this kind
    async with client_for(target.config, default_user=DEFAULT_USER) as http:
        yield ArangoClient(http, target.options)


async def _version(client: ArangoClient) -> str | None:
    body = await client.call("GET", "/_api/version")
    return str(body["version"]) if body.get("version") else None


async def _liveness(client: ArangoClient) -> None:
    response = await client.http.get("/_admin/server/availability")
    if response.status_code != 200:
        raise arango_error(response)


def _ours(name: str, cutoff: datetime) -> bool:
    return name.startswith(PREFIX) and is_leftover(name, cutoff)


async def _sweep(client: ArangoClient, target: Target, cutoff: datetime) -> list[str]:
    """Probe databases, and prefixed graphs and collections in options.database, of old runs."""
    removed: list[str] = []
    listing = await client.request("GET", "/_api/database")
    if listing.status_code == 200:
        for name in json_or_none(listing)["result"]:
            if _ours(name, cutoff):
                await client.call("DELETE", f"/_api/database/{quote(name, safe='')}", ok=(200, 404))
                removed.append(f"database {name}")
    elif client.options.database is None:  # without options.database, databases are all we make
        raise arango_error(listing)
    db = client.options.database
    if db is not None:
        graphs = await client.call("GET", "/_api/gharial", db=db)
        for graph in graphs["graphs"]:
            name = str(graph.get("name") or graph.get("_key"))
            if _ours(name, cutoff):
                await client.call(
                    "DELETE", f"/_api/gharial/{quote(name, safe='')}", db=db, ok=(202, 404)
                )
                removed.append(f"graph {db}/{name}")
        collections = await client.call(
            "GET", "/_api/collection", db=db, params={"excludeSystem": "true"}
        )
        for coll in collections["result"]:
            name = str(coll["name"])
            if _ours(name, cutoff):
                await client.call(
                    "DELETE", f"/_api/collection/{quote(name, safe='')}", db=db, ok=(200, 404)
                )
                removed.append(f"collection {db}/{name}")
    return removed


KIND: Kind[ArangoClient] = Kind(
    name="arangodb",
    description="ArangoDB: connectivity, document storage guarantees, graph traversal, indexed AQL",
    capabilities=("connectivity", "metadata-storage", "graph-relationships", "query-performance"),
    connect=_connect,
    url_schemes=("http", "https"),
    default_username=DEFAULT_USER,
    options_model=ArangoOptions,
    expectations_model=ArangoExpectations,
    version=_version,
    liveness=_liveness,
    sweep=_sweep,
)
check = KIND.check


# --- helpers ---------------------------------------------------------------------------------


async def workspace(ctx: CheckContext[ArangoClient], what: str) -> str:
    """The database this check works in: options.database, or a probe database of its own."""
    client = ctx.client
    if client.options.database is not None:
        ctx.evidence["database"] = client.options.database
        return client.options.database
    name = ctx.name(f"arangodb-{what}")

    async def drop() -> None:
        await client.call("DELETE", f"/_api/database/{quote(name, safe='')}", ok=(200, 404))

    ctx.cleanup(drop, f"drop database {name}")
    await client.call("POST", "/_api/database", json={"name": name}, ok=(201,))
    ctx.evidence["database"] = name
    return name


async def create_collection(
    ctx: CheckContext[ArangoClient], db: str, what: str, *, edge: bool = False, **spec: Any
) -> tuple[str, dict[str, Any]]:
    """A prefixed collection, dropped by name afterwards; (name, ArangoDB's answer)."""
    name = ctx.name(what)
    await drop_collection_later(ctx, db, name)
    body = {"name": name, "type": 3 if edge else 2, **spec}
    answer = await ctx.client.call("POST", "/_api/collection", db=db, json=body, ok=(200,))
    return name, answer


async def drop_collection_later(ctx: CheckContext[ArangoClient], db: str, name: str) -> None:
    async def drop() -> None:
        path = f"/_api/collection/{quote(name, safe='')}"
        await ctx.client.call("DELETE", path, db=db, ok=(200, 404))

    ctx.cleanup(drop, f"drop collection {name}")


async def create_index(
    ctx: CheckContext[ArangoClient], db: str, collection: str, fields: list[str], unique: bool
) -> dict[str, Any]:
    """A persistent index (it goes with its collection, which is dropped by name)."""
    body = {"type": "persistent", "fields": fields, "unique": unique, "name": f"{fields[0]}_probe"}
    index: dict[str, Any] = await ctx.client.call(
        "POST", "/_api/index", db=db, json=body, params={"collection": collection}, ok=(200, 201)
    )
    if index.get("type") != "persistent" or bool(index.get("unique")) != unique:
        raise CheckFailed(
            f"index on {fields}: expected a persistent index with unique={unique}, "
            f"ArangoDB answered type={index.get('type')!r} unique={index.get('unique')!r}"
        )
    return index


def _expect_error(
    response: httpx.Response, status: int, num: int, what: str, consequence: str
) -> dict[str, Any]:
    """The answer must be ArangoDB's error `status`/`num`; else CheckFailed naming what it means."""
    body = json_or_none(response)
    if response.status_code == status and isinstance(body, dict) and body.get("errorNum") == num:
        return body
    raise CheckFailed(
        f"{what}: expected HTTP {status} errorNum {num}, saw {_said(response)}: {consequence}"
    )


# --- metadata graph (the end-to-end flow's store) --------------------------------------------

Cleanup = Callable[[Callable[[], Awaitable[Any]], str], None]
LINKED = "FOR v, e, p IN 1..1 OUTBOUND @start GRAPH @graph RETURN p.vertices[*]._key"


@dataclass(frozen=True)
class MetadataGraph:
    """Metadata documents joined by edges in a named graph of a run's own: the end-to-end
    flow writes a request's metadata document and an edge to its task's, then reads the edge
    back by traversal. Database (or collections in options.database), graph and collections
    carry the run prefix and are dropped by name through `cleanup`."""

    client: ArangoClient
    db: str
    graph: str
    vertices: str
    edges: str

    @classmethod
    async def create(cls, client: ArangoClient, prefix: str, cleanup: Cleanup) -> MetadataGraph:
        db = client.options.database
        if db is None:
            db = f"{prefix}arangodb-flow"

            async def drop_db() -> None:
                await client.call("DELETE", f"/_api/database/{quote(db, safe='')}", ok=(200, 404))

            cleanup(drop_db, f"drop database {db}")
            await client.call("POST", "/_api/database", json={"name": db}, ok=(201,))
        graph, vertices, edges = f"{prefix}flow", f"{prefix}flow-docs", f"{prefix}flow-links"
        for name in (vertices, edges):  # the graph creates them; dropped after the graph

            async def drop(name: str = name) -> None:
                path = f"/_api/collection/{quote(name, safe='')}"
                await client.call("DELETE", path, db=db, ok=(200, 404))

            cleanup(drop, f"drop collection {name}")

        async def drop_graph() -> None:
            await client.call(
                "DELETE", f"/_api/gharial/{quote(graph, safe='')}", db=db, ok=(202, 404)
            )

        cleanup(drop_graph, f"drop graph {graph}")
        definition = {"collection": edges, "from": [vertices], "to": [vertices]}
        await client.call(
            "POST", "/_api/gharial", db=db, json={"name": graph, "edgeDefinitions": [definition]}
        )
        return cls(client, db, graph, vertices, edges)

    async def link(self, source: dict[str, Any], target: dict[str, Any]) -> None:
        """Insert both documents (each with its `_key`) and the edge source → target."""
        inserted = await self.client.call(
            "POST", f"/_api/document/{quote(self.vertices, safe='')}", db=self.db, json=[source, target]
        )  # fmt: skip
        refused = [r for r in inserted if isinstance(r, dict) and r.get("error")]
        if refused:
            raise CheckFailed(f"document insert into {self.vertices}: {len(refused)} of 2 refused: {refused[0]}")  # fmt: skip
        response = await self.client.request(
            "POST",
            f"/_api/gharial/{quote(self.graph, safe='')}/edge/{quote(self.edges, safe='')}",
            db=self.db,
            json={"_from": f"{self.vertices}/{source['_key']}", "_to": f"{self.vertices}/{target['_key']}"},
        )  # fmt: skip
        if response.status_code not in (201, 202):
            raise CheckFailed(f"edge {source['_key']}→{target['_key']} through the graph API: expected HTTP 201/202, saw {_said(response)}")  # fmt: skip

    async def targets(self, key: str) -> list[list[str]]:
        """The paths (vertex keys) one edge away from `key`."""
        start = f"{self.vertices}/{key}"
        cursor = await self.client.aql(LINKED, {"start": start, "graph": self.graph}, db=self.db)
        return [list(path) for path in cursor.get("result") or []]


# --- connectivity ----------------------------------------------------------------------------


@check(
    "connectivity",
    title="server available, version with the configured credentials, an AQL round trip",
    name="version_and_aql",
)
async def check_connectivity(ctx: CheckContext[ArangoClient]) -> str:
    client = ctx.client
    started = time.perf_counter()
    availability = await client.http.get("/_admin/server/availability")
    ctx.evidence["availability_ms"] = ms(time.perf_counter() - started)
    refuse_auth(availability)
    body = json_or_none(availability)
    mode = body.get("mode") if isinstance(body, dict) else None
    if availability.status_code != 200 or mode not in (None, "default"):
        raise CheckFailed(
            "GET /_admin/server/availability: expected 200 with mode default, saw "
            f"{_said(availability) if availability.status_code != 200 else f'mode {mode!r}'} "
            "(503 means starting, shutting down, read-only or overloaded)"
        )
    ctx.evidence["mode"] = mode or "default"
    latencies = []
    version: dict[str, Any] = {}
    for _ in range(VERSION_SAMPLES):
        started = time.perf_counter()
        version = await client.call("GET", "/_api/version", ok=(200,))
        latencies.append(time.perf_counter() - started)
    ctx.evidence.update(
        version=version.get("version"),
        license=version.get("license"),
        version_p50_ms=ms(statistics.median(latencies)),
        version_max_ms=ms(max(latencies)),
    )
    db = client.options.database or "_system"
    nonce = secrets.randbelow(10**9)
    started = time.perf_counter()
    cursor = await client.aql("RETURN @nonce", {"nonce": nonce}, db=db)
    ctx.evidence.update(aql_ms=ms(time.perf_counter() - started), aql_database=db)
    if cursor.get("result") != [nonce]:
        raise CheckFailed(f"AQL RETURN @nonce in {db}: expected [{nonce}], saw {cursor.get('result')!r}")  # fmt: skip
    return (
        f"ArangoDB {version.get('version')} ({version.get('license')}), "
        f"version p50 {ctx.evidence['version_p50_ms']} ms, AQL round trip {ctx.evidence['aql_ms']} ms"
    )


# --- metadata-storage ------------------------------------------------------------------------

SCHEMA_MESSAGE = "stackprobe schema: sku (string) and version (integer >= 1) are required"
SCHEMA = {
    "rule": {
        "type": "object",
        "properties": {"sku": {"type": "string"}, "version": {"type": "integer", "minimum": 1}},
        "required": ["sku", "version"],
    },
    "level": "moderate",
    "message": SCHEMA_MESSAGE,
}


@check(
    "metadata-storage",
    title="documents round-trip; stale _rev refused (412); unique index (409) and schema (400) enforced",
    name="documents_and_guarantees",
    timeout=20,
)
async def check_metadata_storage(ctx: CheckContext[ArangoClient]) -> str:
    client = ctx.client
    db = await workspace(ctx, "meta")
    coll, created = await create_collection(ctx, db, "meta-docs", schema=SCHEMA)
    schema_supported = created.get("schema") is not None
    index = await create_index(ctx, db, coll, ["sku"], unique=True)
    ctx.evidence.update(
        collection=coll, unique_index=index.get("name"), schema_supported=schema_supported
    )
    base = f"/_api/document/{quote(coll, safe='')}"
    sku = f"sku-{secrets.token_hex(6)}"
    doc = {
        "sku": sku,
        "version": 1,
        "labels": {"tier": "gold"},
        "tags": ["a", "b"],
        "note": "héllo ✓",
    }

    started = time.perf_counter()
    inserted = await client.request("POST", base, db=db, json=doc)
    ctx.evidence["insert_ms"] = ms(time.perf_counter() - started)
    if inserted.status_code not in (201, 202):
        raise CheckFailed(f"insert: expected HTTP 201/202, saw {_said(inserted)}")
    meta = inserted.json()
    key, rev1 = meta["_key"], meta["_rev"]

    started = time.perf_counter()
    read = await client.request("GET", f"{base}/{quote(key, safe='')}", db=db)
    ctx.evidence["read_ms"] = ms(time.perf_counter() - started)
    if read.status_code != 200:
        raise CheckFailed(f"read back {coll}/{key}: expected HTTP 200, saw {_said(read)}")
    stored = read.json()
    seen = {k: v for k, v in stored.items() if not k.startswith("_")}
    if seen != doc or stored.get("_rev") != rev1:
        raise CheckFailed(
            f"read back {coll}/{key}: expected {doc} at _rev {rev1}, saw {seen} at _rev {stored.get('_rev')}"
        )

    replacement = {**doc, "version": 2}
    started = time.perf_counter()
    updated = await client.request(
        "PUT", f"{base}/{quote(key, safe='')}", db=db, json=replacement, headers={"If-Match": f'"{rev1}"'}
    )  # fmt: skip
    ctx.evidence["update_ms"] = ms(time.perf_counter() - started)
    if updated.status_code not in (201, 202):
        raise CheckFailed(
            f"replace with the current _rev (If-Match {rev1}): expected HTTP 201/202, saw {_said(updated)}"
        )
    rev2 = updated.json().get("_rev")
    if not rev2 or rev2 == rev1 or updated.json().get("_oldRev") != rev1:
        raise CheckFailed(f"replace: expected a new _rev and _oldRev {rev1}, saw {updated.json()}")
    ctx.evidence["revisions"] = [rev1, rev2]

    stale = await client.request(
        "PUT", f"{base}/{quote(key, safe='')}", db=db, json={**doc, "version": 99}, headers={"If-Match": f'"{rev1}"'}
    )  # fmt: skip
    conflict = _expect_error(
        stale,
        412,
        ERR_CONFLICT,
        f"replace with the stale _rev {rev1}",
        "optimistic concurrency is not enforced (a lost update went through)",
    )
    if conflict.get("_rev") != rev2:
        raise CheckFailed(f"412 answer: expected the current _rev {rev2}, saw {conflict.get('_rev')!r}")  # fmt: skip
    after = (await client.call("GET", f"{base}/{quote(key, safe='')}", db=db, ok=(200,)))["version"]
    if after != 2:
        raise CheckFailed(f"after the refused stale write: expected version 2, saw {after!r}")

    duplicate = await client.request("POST", base, db=db, json={"sku": sku, "version": 1})
    _expect_error(
        duplicate,
        409,
        ERR_UNIQUE,
        f"insert of a second document with sku {sku!r}",
        f"the unique index {index.get('name')} did not refuse the duplicate",
    )
    checked = ["round trip", "stale _rev 412", "unique 409"]
    if schema_supported:
        invalid = await client.request("POST", base, db=db, json={"sku": 7, "version": "one"})
        refused = _expect_error(
            invalid,
            400,
            ERR_SCHEMA,
            "insert of a document that breaks the collection schema",
            "the schema is not enforced",
        )
        if refused.get("errorMessage") != SCHEMA_MESSAGE:
            raise CheckFailed(
                f"schema violation: expected the schema's message {SCHEMA_MESSAGE!r}, saw {refused.get('errorMessage')!r}"
            )
        checked.append("schema 400")
    ctx.evidence["proven"] = checked
    schema_note = "" if schema_supported else " (schema validation not supported by this server)"
    return f"{', '.join(checked)}; insert {ctx.evidence['insert_ms']} ms, read {ctx.evidence['read_ms']} ms{schema_note}"


# --- graph-relationships ---------------------------------------------------------------------

# a→b→c→d→g, b→f, e→a: OUTBOUND 1..3 from a must reach b, c, f, d (not g: depth 4; not e:
# its edge points into a)
EDGES = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "g"), ("b", "f"), ("e", "a")]
EXPECTED_PATHS = {("a", "b"), ("a", "b", "c"), ("a", "b", "c", "d"), ("a", "b", "f")}
TRAVERSAL = "FOR v, e, p IN 1..3 OUTBOUND @start GRAPH @graph RETURN p.vertices[*]._key"


def _paths(paths: set[tuple[str, ...]]) -> str:
    return ", ".join("→".join(p) for p in sorted(paths)) or "none"


@check(
    "graph-relationships",
    title="a named graph's edges are traversed: OUTBOUND 1..3 returns exactly the expected paths",
    name="named_graph_traversal",
    timeout=20,
)
async def check_graph(ctx: CheckContext[ArangoClient]) -> str:
    client = ctx.client
    db = await workspace(ctx, "graph")
    graph, vertices, keys = await probe_graph(ctx, db)
    started = time.perf_counter()
    cursor = await client.aql(TRAVERSAL, {"start": f"{vertices}/a", "graph": graph}, db=db)
    ctx.evidence["traversal_ms"] = ms(time.perf_counter() - started)
    seen = {tuple(path) for path in cursor.get("result") or []}
    ctx.evidence.update(
        graph=graph, vertices=len(keys), edges=len(EDGES), paths=sorted("→".join(p) for p in seen)
    )
    if seen != EXPECTED_PATHS or len(cursor.get("result") or []) != len(EXPECTED_PATHS):
        missing, unexpected = EXPECTED_PATHS - seen, seen - EXPECTED_PATHS
        raise CheckFailed(
            f"traversal {TRAVERSAL!r} from a: expected paths {_paths(EXPECTED_PATHS)}; "
            f"saw {_paths(seen)} (missing: {_paths(missing)}; unexpected: {_paths(unexpected)})"
        )
    return f"{len(seen)} paths as expected (depth ≤ 3, direction kept) in {ctx.evidence['traversal_ms']} ms"


async def probe_graph(ctx: CheckContext[ArangoClient], db: str) -> tuple[str, str, list[str]]:
    """The probe graph of EDGES in `db` (dropped by name afterwards): (graph, vertex
    collection, vertex keys); CheckFailed when ArangoDB does not build it as asked."""
    client = ctx.client
    graph = ctx.name("graph")
    vertices = ctx.name("graph-vertices")
    edges = ctx.name("graph-edges")
    # the graph creates its collections: drop them (registered first, so they go last) and
    # the graph, by name
    await drop_collection_later(ctx, db, vertices)
    await drop_collection_later(ctx, db, edges)

    async def drop_graph() -> None:
        await client.call("DELETE", f"/_api/gharial/{quote(graph, safe='')}", db=db, ok=(202, 404))

    ctx.cleanup(drop_graph, f"drop graph {graph}")
    definition = {"collection": edges, "from": [vertices], "to": [vertices]}
    created = await client.call(
        "POST", "/_api/gharial", db=db, json={"name": graph, "edgeDefinitions": [definition]}
    )
    if created["graph"]["edgeDefinitions"] != [definition]:
        raise CheckFailed(
            f"graph {graph}: expected edge definition {definition}, saw {created['graph']['edgeDefinitions']}"
        )
    keys = sorted({k for edge in EDGES for k in edge})
    inserted = await client.call(
        "POST", f"/_api/document/{quote(vertices, safe='')}", db=db, json=[{"_key": k} for k in keys]
    )  # fmt: skip
    failed = [r for r in inserted if r.get("error")]
    if failed:
        raise CheckFailed(f"vertex insert: {len(failed)} of {len(keys)} refused: {failed[0]}")
    for source, target in EDGES:
        response = await client.request(
            "POST",
            f"/_api/gharial/{quote(graph, safe='')}/edge/{quote(edges, safe='')}",
            db=db,
            json={"_from": f"{vertices}/{source}", "_to": f"{vertices}/{target}"},
        )
        if response.status_code not in (201, 202):
            raise CheckFailed(f"edge {source}→{target} through the graph API: expected HTTP 201/202, saw {_said(response)}")  # fmt: skip
    return graph, vertices, keys


# --- query-performance -----------------------------------------------------------------------

LOOKUP = "FOR d IN @@coll FILTER d.n == @n RETURN d"


def _plan_summary(plan: dict[str, Any]) -> list[str]:
    return [str(node.get("type")) for node in plan.get("nodes", [])]


@check(
    "query-performance",
    title="AQL on an indexed attribute uses the persistent index (explain), within expectations.query_ms",
    name="indexed_lookup",
    timeout=30,
)
async def check_query_performance(ctx: CheckContext[ArangoClient]) -> str:
    client = ctx.client
    threshold = ctx.expectations.query_ms
    db = await workspace(ctx, "aql")
    coll, _ = await create_collection(ctx, db, "aql-docs")
    index = await create_index(ctx, db, coll, ["n"], unique=False)
    docs = [{"n": i, "pad": secrets.token_hex(8)} for i in range(LOOKUP_DOCS)]
    imported = await client.call(
        "POST", "/_api/import", db=db, json=docs, params={"collection": coll, "type": "list"}, ok=(201,)
    )  # fmt: skip
    if imported.get("created") != LOOKUP_DOCS or imported.get("errors"):
        raise CheckFailed(f"import of {LOOKUP_DOCS} documents: saw {imported}")
    bind = {"@coll": coll, "n": 42}
    explained = await client.call(
        "POST", "/_api/explain", db=db, json={"query": LOOKUP, "bindVars": bind}, ok=(200,)
    )
    plan = explained.get("plan") or {}
    ctx.evidence.update(
        collection=coll,
        documents=LOOKUP_DOCS,
        index=index.get("name"),
        plan=_plan_summary(plan),
        rules=plan.get("rules", []),
        estimated_cost=plan.get("estimatedCost"),
    )
    # an IndexNode lists the index with its bare id ("70035"), not "<collection>/70035"
    index_ids = {str(index.get("id", "")).split("/")[-1], str(index.get("name"))}
    used = [
        node
        for node in plan.get("nodes", [])
        if node.get("type") == "IndexNode"
        and node.get("collection") == coll
        and any(
            i.get("type") == "persistent" and {str(i.get("id")), str(i.get("name"))} & index_ids
            for i in node.get("indexes", [])
        )
    ]
    if not used:
        scans = [n for n in plan.get("nodes", []) if n.get("type") == "EnumerateCollectionNode"]
        seen = "a full collection scan (EnumerateCollectionNode)" if scans else "no IndexNode"
        raise CheckFailed(
            f"explain {LOOKUP!r}: expected an IndexNode using the persistent index {index.get('name')} on n, "
            f"saw {seen}; plan {' → '.join(_plan_summary(plan))}, rules {plan.get('rules', [])}"
        )
    latencies = []
    for n in random.sample(range(LOOKUP_DOCS), LOOKUPS):
        started = time.perf_counter()
        cursor = await client.aql(LOOKUP, {"@coll": coll, "n": n}, db=db)
        latencies.append(time.perf_counter() - started)
        result = cursor.get("result") or []
        if len(result) != 1 or result[0].get("n") != n:
            raise CheckFailed(f"lookup n == {n}: expected exactly that document, saw {len(result)} result(s)")  # fmt: skip
        scanned_full = (cursor.get("extra") or {}).get("stats", {}).get("scannedFull", 0)
        if scanned_full:
            raise CheckFailed(
                f"lookup n == {n}: explain shows the index, but execution scanned {scanned_full} documents in full"
            )
    p50 = ms(statistics.median(latencies))
    ordered = sorted(latencies)
    ctx.evidence.update(
        lookups=LOOKUPS,
        p50_ms=p50,
        p95_ms=ms(ordered[int(0.95 * (len(ordered) - 1))]),
        max_ms=ms(ordered[-1]),
        threshold_ms=threshold,
    )
    if p50 > threshold:
        raise CheckFailed(
            f"indexed lookup: expected a median at most {threshold:g} ms (expectations.query_ms), saw {p50} ms over {LOOKUPS} queries"
        )
    return f"IndexNode on {index.get('name')}; {LOOKUPS} lookups p50 {p50} ms (≤ {threshold:g} ms), max {ctx.evidence['max_ms']} ms"
