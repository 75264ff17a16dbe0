"""A stand-in for ArangoDB 3.12's HTTP API (single server), for tests only.

Why it exists: ArangoDB cannot be installed on the machines that run these tests (DESIGN.md,
"Services available to tests"), yet the arangodb kind (`stackprobe.services.arangodb`) has to
be exercised end to end. DESIGN.md rule 1 allows a stand-in under tests/standins/ for such
kinds, provided its answers follow recorded real responses.

What it is faithful to: `recordings/arangodb-3.12/` (a copy of the project's shared
recordings: transcripts from ArangoDB's generated doc examples, schemas and derived errors, see
its README) plus `docs-transcripts.json` there (more transcripts of the same kind). Status codes
and bodies, errors included, follow them; `test_arangodb_standin.py` replays the recorded
requests and compares the parsed answers. Where the recordings are silent the behaviour
follows ArangoDB's documentation and errors.yaml and is marked "(documented, not recorded)".
What is valid for ArangoDB but not implemented here answers 501 with errorNum 9 ("not
implemented") and a message starting "arangodb stand-in:", so it is never mistaken for an
ArangoDB answer.

It serves what it was sent: databases, collections (with schema), persistent indexes,
documents with revisions, named graphs and edges live in memory, and AQL reads them.

Modelled behaviour (recorded unless marked):
- `/_db/<db>/...` selects a database (default `_system`); unknown → 404 1228 (documented).
- Basic auth for one user when `password` is set: missing or wrong credentials → 401
  `{"error":true,"errorNum":11,"errorMessage":"not authorized to execute this request",...}`;
  `/_admin/server/availability` needs none. `password=None` is a server with auth off.
- `/_admin/server/availability` 200 `{error,code,mode}`; `/_api/version` (`details=true` adds
  string-valued details).
- Databases: create 201 (only in `_system`, else 403 1230), duplicate 409 1207, bad name 400
  1229 (documented); list `{result:[...]}`; drop 200, unknown 404 1228.
- Collections: create 200 with the recorded property set (type 2 or 3, `schema` echoed),
  duplicate 409 1207, bad name 400 1208 (documented); list (system collections included);
  drop 200 `{error,code,id}`, unknown 404 1203.
- Persistent indexes: create 201 (recorded shape; `unique` as requested), the same definition
  again 200 with `isNewlyCreated:false` (documented, not recorded).
- Documents: insert 202 (201 with waitForSync) with a quoted `etag` and `location`; arrays
  202 with one entry (or error entry) per document; read 200 with etag; replace (PUT) and
  update (PATCH) 202 `{_id,_key,_rev,_oldRev}`; `If-Match` with another revision → 412 1200
  with the current `_id/_key/_rev` and etag; unknown document 404 1202, unknown collection 404
  1203 `collection or view not found: <name>`. A second unique value → 409 1210
  `unique constraint violated - in index <name> of type persistent over '<fields>';
  conflicting key: <key>`; a schema violation → 400 1620 with the schema's `message`
  (levels new/moderate/strict; JSON Schema keywords type, properties, required, minimum,
  maximum, enum; others 501).
- `POST /_api/import` (type list/documents) 201 `{error,created,errors,empty,updated,ignored}`
  (no `code`), conflicts counted as errors.
- Named graphs: create 202 (collections created as needed), duplicate 409 1925
  (documented); list; drop 202 `{removed:true}` (`dropCollections=true` drops collections no
  other graph uses), unknown 404 1924; edges through `/_api/gharial/<g>/edge/<c>` 202 with an
  unquoted etag; a missing `_from`/`_to` vertex 404 1202 (issue reports, unverified), a vertex
  collection outside the graph 400 1947, an edge collection outside it 404 1930.
- AQL (`/_api/cursor` 201, `/_api/explain` 200), a subset, each with its real plan shape:
  `RETURN @x`; `FOR d IN @@c|name FILTER d.attr == @v [LIMIT n] RETURN d` (an IndexNode with
  the persistent index whose first field is `attr`, else EnumerateCollectionNode +
  FilterNode; cursor `extra.stats` scannedIndex/scannedFull to match); `FOR v, e, p IN
  min..max OUTBOUND|INBOUND|ANY @start GRAPH @g RETURN p.vertices[*]._key` (depth first,
  uniqueEdges path, as ArangoDB's defaults). Unknown collection 404 1203 `AQL: collection or
  view not found: <name> (while parsing)`, a missing bind parameter 400 1551, an unused one
  400 1552 (documented). Other queries 501.

Fault switches (attributes, settable while running): `available` (False: availability 503),
`unauthorized` (every authenticated call 401, as after a password change), `accept_stale_rev`
(If-Match is ignored: no 412), `ignore_unique` (unique indexes accept duplicates),
`ignore_schema` (schemas accept anything), `full_scan` (the optimizer ignores indexes: explain
shows EnumerateCollectionNode, queries scan), `break_traversal` (the longest traversal path
loses its second vertex), `query_delay_s` (each collection lookup query takes that long).
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.standins._http import Answer, Request, Served

RECORDINGS = Path(__file__).parent / "recordings" / "arangodb-3.12"
# headers every recorded transcript carries
COMMON_HEADERS = {
    "Server": "ArangoDB",
    "X-Arango-Queue-Time-Seconds": "0.000000",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache, no-store, must-revalidate, pre-check=0, post-check=0, max-age=0, s-maxage=0",
    "Content-Security-Policy": "frame-ancestors 'self'; form-action 'self';",
    "Strict-Transport-Security": "max-age=31536000 ; includeSubDomains",
    "Expires": "0",
    "Pragma": "no-cache",
}
NOT_AUTHORIZED = "not authorized to execute this request"
_REV_ALPHABET = "-_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$")  # traditional names (databases: 64 bytes)
_COLLECTION_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,255}$")
SYSTEM_COLLECTIONS = ("_analyzers", "_graphs", "_aqlfunctions", "_queues", "_jobs", "_apps", "_appbundles", "_frontend")  # fmt: skip


def recording(name: str) -> dict[str, Any]:
    """One recorded endpoint file (`{endpoint, schema, examples, source}`)."""
    data: dict[str, Any] = json.loads((RECORDINGS / name).read_text())
    return data


def _json(status: int, body: Any, **headers: str) -> Answer:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return Answer(status, text.encode(), "application/json", {**COMMON_HEADERS, **headers})


class ArangoFailure(Exception):
    """An ArangoDB error answer; `order` follows the handler that produces it (README 4)."""

    def __init__(
        self,
        status: int,
        num: int,
        message: str,
        order: str = "generic",
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.num, self.message = status, num, message
        self.order, self.extra, self.headers = order, extra or {}, headers or {}

    def answer(self) -> Answer:
        if (
            self.order == "aql"
        ):  # AQL and some document handlers: {code, error, errorMessage, errorNum}
            body: dict[str, Any] = {"code": self.status, "error": True}
            body.update(errorMessage=self.message, errorNum=self.num)
        elif self.order == "document":  # 412: {error, code, errorNum, errorMessage, _id, ...}
            body = {"error": True, "code": self.status, "errorNum": self.num}
            body.update(errorMessage=self.message, **self.extra)
        else:  # auth and most others: {error, errorNum, errorMessage, code}
            body = {"error": True, "errorNum": self.num, "errorMessage": self.message}
            body["code"] = self.status
        return _json(self.status, body, **self.headers)


def not_implemented(what: str) -> ArangoFailure:
    return ArangoFailure(501, 9, f"arangodb stand-in: {what} is not implemented")


# --- stored data -----------------------------------------------------------------------------


@dataclass
class Index:
    id: str  # "<collection>/<number>"
    name: str
    fields: list[str]
    unique: bool
    sparse: bool

    def describe(self) -> dict[str, Any]:
        """The index as /_api/index answers (recorded key order)."""
        return {
            "cacheEnabled": False,
            "deduplicate": True,
            "estimates": True,
            "fields": list(self.fields),
            "id": self.id,
            "isNewlyCreated": True,
            "name": self.name,
            "selectivityEstimate": 1,
            "sparse": self.sparse,
            "type": "persistent",
            "unique": self.unique,
        }

    def in_plan(self) -> dict[str, Any]:
        """The index as an explain plan's IndexNode lists it: the id without the collection."""
        return {
            "id": self.id.split("/", 1)[1],
            "type": "persistent",
            "name": self.name,
            "fields": list(self.fields),
            "selectivityEstimate": 1,
            "unique": self.unique,
            "sparse": self.sparse,
            "deduplicate": True,
            "estimates": True,
            "cacheEnabled": False,
        }


@dataclass
class Collection:
    id: str
    name: str
    type: int  # 2 document, 3 edge
    schema: dict[str, Any] | None = None
    wait_for_sync: bool = False
    indexes: list[Index] = field(default_factory=list)
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # insertion order kept

    @property
    def is_system(self) -> bool:
        return self.name.startswith("_")


@dataclass
class Graph:
    name: str
    rev: str
    edge_definitions: list[dict[str, Any]]
    orphans: list[str]

    def describe(self) -> dict[str, Any]:
        return {
            "_key": self.name,
            "edgeDefinitions": copy.deepcopy(self.edge_definitions),
            "orphanCollections": list(self.orphans),
            "_rev": self.rev,
            "_id": f"_graphs/{self.name}",
            "name": self.name,
        }

    def listed(self) -> dict[str, Any]:
        """The graph as GET /_api/gharial lists it (another key order than creation answers)."""
        described = self.describe()
        order = ("_id", "_key", "_rev", "edgeDefinitions", "orphanCollections", "name")
        return {key: described[key] for key in order}

    def vertex_collections(self) -> set[str]:
        names = set(self.orphans)
        for definition in self.edge_definitions:
            names.update(definition["from"])
            names.update(definition["to"])
        return names


@dataclass
class Database:
    name: str
    collections: dict[str, Collection] = field(default_factory=dict)
    graphs: dict[str, Graph] = field(default_factory=dict)


# --- a small JSON Schema (the keywords ArangoDB users write most) -------------------------------

_SCHEMA_KEYWORDS = {"type", "properties", "required", "minimum", "maximum", "enum", "additionalProperties"}  # fmt: skip


def _schema_valid(rule: dict[str, Any], value: Any) -> bool:
    for keyword in rule:
        if keyword not in _SCHEMA_KEYWORDS:
            raise not_implemented(f"JSON Schema keyword {keyword!r}")
    kind = rule.get("type")
    types = {
        "object": dict,
        "string": str,
        "array": list,
        "boolean": bool,
        "null": type(None),
    }
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return False
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
    elif kind is not None and not isinstance(value, types[kind]):
        return False
    if "enum" in rule and value not in rule["enum"]:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in rule and value < rule["minimum"]:
            return False
        if "maximum" in rule and value > rule["maximum"]:
            return False
    if isinstance(value, dict):
        if any(name not in value for name in rule.get("required", [])):
            return False
        properties = rule.get("properties", {})
        for name, sub in properties.items():
            if name in value and not _schema_valid(sub, value[name]):
                return False
        if rule.get("additionalProperties") is False:
            extra = [k for k in value if k not in properties and not k.startswith("_")]
            if extra:
                return False
    return True


# --- AQL subset ------------------------------------------------------------------------------

_RETURN_BIND = re.compile(r"^\s*RETURN\s+@(?P<var>\w+)\s*$", re.IGNORECASE)
_SCAN = re.compile(
    r"^\s*FOR\s+(?P<doc>\w+)\s+IN\s+(?P<coll>@@\w+|[a-zA-Z]\w*)(?:\s+LIMIT\s+(?P<limit>\d+))?\s+RETURN\s+(?P=doc)\s*$",
    re.IGNORECASE,
)
# the one syntax error modelled: `=` where `==` was meant (RestQueryInvalid)
_ASSIGNMENT_IN_FILTER = re.compile(r"\bFILTER\s+[^=!<>]*?[^=!<>\s]\s*(?P<eq>=)(?!=)", re.IGNORECASE)
_LOOKUP = re.compile(
    r"^\s*FOR\s+(?P<doc>\w+)\s+IN\s+(?P<coll>@@\w+|\w+)\s+FILTER\s+(?P=doc)\.(?P<attr>\w+)\s*==\s*@(?P<value>\w+)"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s+RETURN\s+(?P=doc)\s*$",
    re.IGNORECASE,
)
_TRAVERSAL = re.compile(
    r"^\s*FOR\s+(?P<v>\w+)\s*,\s*(?P<e>\w+)\s*,\s*(?P<p>\w+)\s+IN\s+(?P<min>\d+)\.\.(?P<max>\d+)\s+"
    r"(?P<direction>OUTBOUND|INBOUND|ANY)\s+@(?P<start>\w+)\s+GRAPH\s+@(?P<graph>\w+)\s+"
    r"RETURN\s+(?P=p)\.vertices\[\*\]\._key\s*$",
    re.IGNORECASE,
)
_BIND = re.compile(r"@(@?\w+)")


def _check_syntax(query: str) -> None:
    if match := _ASSIGNMENT_IN_FILTER.search(query):
        at = match.start("eq")
        raise ArangoFailure(
            400,
            1501,
            f"syntax error, unexpected assignment near '{query[at:]}' at position 1:{at + 1}",
            "aql",
        )


def _check_bind_vars(query: str, bind_vars: dict[str, Any]) -> None:
    declared = set(_BIND.findall(query))
    for name in sorted(declared):
        if name not in bind_vars:
            raise ArangoFailure(
                400,
                1551,
                f"no value specified for declared bind parameter '{name.lstrip('@')}' (while parsing)",
                "aql",
            )
    for name in bind_vars:
        if name not in declared:
            raise ArangoFailure(
                400,
                1552,
                f"bind parameter '{name.lstrip('@')}' was not declared in the query (while parsing)",
                "aql",
            )


@dataclass
class _Lookup:
    doc_var: str
    collection: Collection
    attr: str
    value: Any
    limit: int | None
    index: Index | None


def _stats(**counts: int) -> dict[str, Any]:
    stats: dict[str, Any] = dict.fromkeys(
        (
            "writesExecuted",
            "writesIgnored",
            "scannedFull",
            "scannedIndex",
            "cursorsCreated",
            "cursorsRearmed",
            "cacheHits",
            "cacheMisses",
            "filtered",
            "httpRequests",
        ),
        0,
    )
    stats.update(counts)
    stats.update(executionTime=0.0001, peakMemoryUsage=0, intermediateCommits=0)
    return stats


# --- the stand-in ----------------------------------------------------------------------------


class ArangoStandin(Served):
    """A running stand-in: `with ArangoStandin(password="pw") as arango: ... arango.url`."""

    def __init__(
        self,
        *,
        version: str = "3.12.0-devel",
        license: str = "enterprise",
        username: str = "root",
        password: str | None = "arango-root-pw",
    ) -> None:
        self.version = version
        self.license = license
        self.username = username
        self.password = password
        self.available = True
        self.unauthorized = False
        self.accept_stale_rev = False
        self.ignore_unique = False
        self.ignore_schema = False
        self.full_scan = False
        self.break_traversal = False
        self.query_delay_s = 0.0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(68000)
        self._keys = itertools.count(69000)
        self._revs = itertools.count(int(time.time() * 1_000_000) << 6)
        self._server_id = "hA5AE75AEF7B6"
        self._dbs: dict[str, Database] = {}
        self._create_database("_system")

    # --- test helpers: seed and inspect ----------------------------------------------------

    def databases(self) -> list[str]:
        with self._lock:
            return sorted(self._dbs)

    def collections(self, db: str = "_system") -> list[str]:
        with self._lock:
            return sorted(c for c in self._dbs[db].collections if not c.startswith("_"))

    def graphs(self, db: str = "_system") -> list[str]:
        with self._lock:
            return sorted(self._dbs[db].graphs)

    def documents(self, db: str, collection: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._dbs[db].collections[collection].docs.values()))

    def snapshot(self) -> dict[str, Any]:
        """Everything stored, for before/after comparisons."""
        with self._lock:
            return {
                name: {
                    "collections": {
                        c.name: {
                            "type": c.type,
                            "indexes": [i.describe() for i in c.indexes],
                            "docs": copy.deepcopy(c.docs),
                        }
                        for c in db.collections.values()
                    },
                    "graphs": {g.name: g.describe() for g in db.graphs.values()},
                }
                for name, db in self._dbs.items()
            }

    def seed(self, db: str, collection: str, docs: list[dict[str, Any]]) -> None:
        """Create a database and collection (when missing) holding `docs`: a user's data."""
        with self._lock:
            if db not in self._dbs:
                self._create_database(db)
            colls = self._dbs[db].collections
            if collection not in colls:
                colls[collection] = self._new_collection(collection, 2)
            for doc in docs:
                self._insert(self._dbs[db], colls[collection], dict(doc))

    # --- routing ---------------------------------------------------------------------------

    def route(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append((request.method, request.target))
        try:
            return self._route(request)
        except ArangoFailure as failure:
            return failure.answer()

    def _route(self, request: Request) -> Answer:
        path = request.path
        db_name = "_system"
        if match := re.match(r"^/_db/([^/]+)(/.*)$", path):
            db_name, path = match.group(1), match.group(2)
        if path == "/_admin/server/availability":
            if not self.available:  # (errors.yaml 503 "service unavailable"; body not recorded)
                raise ArangoFailure(503, 503, "service unavailable")
            return _json(200, {"error": False, "code": 200, "mode": "default"})
        self._authenticate(request)
        with self._lock:
            db = self._dbs.get(db_name)
            if db is None:
                raise ArangoFailure(404, 1228, "database not found")
        if path == "/_api/version":
            return self._version(request)
        if path == "/_api/database" or path.startswith("/_api/database/"):
            return self._databases(request, db, path)
        if path == "/_api/collection" or path.startswith("/_api/collection/"):
            return self._collections(request, db, path)
        if path == "/_api/index":
            return self._index(request, db)
        if path.startswith("/_api/document/"):
            return self._document(request, db, path)
        if path == "/_api/import":
            return self._import(request, db)
        if path == "/_api/gharial" or path.startswith("/_api/gharial/"):
            return self._gharial(request, db, path)
        if path == "/_api/cursor" and request.method == "POST":
            return self._cursor(request, db)
        if path == "/_api/explain" and request.method == "POST":
            return self._explain(request, db)
        raise not_implemented(f"{request.method} {path}")

    def _authenticate(self, request: Request) -> None:
        if self.password is None and not self.unauthorized:
            return
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        sent = request.headers.get("authorization", "")
        if self.unauthorized or sent != f"Basic {expected}":
            raise ArangoFailure(401, 11, NOT_AUTHORIZED, headers={"Www-Authenticate": "Basic, realm=\"ArangoDB\""})  # fmt: skip

    def _version(self, request: Request) -> Answer:
        body: dict[str, Any] = {
            "server": "arango",
            "license": self.license,
            "version": self.version,
        }
        if request.query.get("details") == "true":
            body["details"] = {
                "architecture": "64bit",
                "mode": "server",
                "role": "SINGLE",
                "server-version": self.version,
                "license": self.license,
                "debug": "false",
            }
        return _json(200, body)

    # --- databases -------------------------------------------------------------------------

    def _create_database(self, name: str) -> Database:
        db = Database(name)
        for system in SYSTEM_COLLECTIONS:
            db.collections[system] = self._new_collection(system, 2)
        self._dbs[name] = db
        return db

    def _databases(self, request: Request, db: Database, path: str) -> Answer:
        if db.name != "_system":
            raise ArangoFailure(403, 1230, "operation only allowed in system database")
        with self._lock:
            if path == "/_api/database" and request.method == "GET":
                return _json(200, {"error": False, "code": 200, "result": sorted(self._dbs)})
            if path == "/_api/database" and request.method == "POST":
                name = str((request.json() or {}).get("name", ""))
                if not _NAME.match(name):  # (documented, not recorded)
                    raise ArangoFailure(400, 1229, "database name invalid")
                if name in self._dbs:
                    raise ArangoFailure(409, 1207, f"duplicate database name '{name}'")
                self._create_database(name)
                return _json(201, {"error": False, "code": 201, "result": True})
            name = path.removeprefix("/_api/database/")
            if request.method == "DELETE":
                if name == "_system":  # (documented, not recorded)
                    raise ArangoFailure(403, 1230, "operation only allowed in system database")
                if name not in self._dbs:
                    raise ArangoFailure(404, 1228, "database not found")
                del self._dbs[name]
                return _json(200, {"error": False, "code": 200, "result": True})
        raise not_implemented(f"{request.method} {path}")

    # --- collections and indexes -----------------------------------------------------------

    def _new_collection(
        self, name: str, type_: int, schema: dict[str, Any] | None = None, sync: bool = False
    ) -> Collection:
        return Collection(str(next(self._ids)), name, type_, schema, sync)

    def _describe_collection(self, c: Collection) -> dict[str, Any]:
        """The recorded answer of POST /_api/collection, for this collection."""
        return {
            "error": False,
            "code": 200,
            "writeConcern": 1,
            "waitForSync": c.wait_for_sync,
            "usesRevisionsAsDocumentIds": True,
            "syncByRevision": True,
            "statusString": "loaded",
            "id": c.id,
            "isSmartChild": False,
            "schema": copy.deepcopy(c.schema),
            "name": c.name,
            "type": c.type,
            "status": 3,
            "cacheEnabled": False,
            "isSystem": c.is_system,
            "internalValidatorType": 0,
            "globallyUniqueId": c.name if c.is_system else f"{self._server_id}/{c.id}",
            "keyOptions": {"allowUserKeys": True, "type": "traditional", "lastValue": 0},
            "computedValues": None,
            "objectId": str(int(c.id) - 1),
        }

    def _collection(self, db: Database, name: str, order: str = "generic") -> Collection:
        coll = db.collections.get(name)
        if coll is None:
            raise ArangoFailure(404, 1203, f"collection or view not found: {name}", order)
        return coll

    def _collections(self, request: Request, db: Database, path: str) -> Answer:
        with self._lock:
            if path == "/_api/collection" and request.method == "POST":
                spec = request.json() or {}
                name = str(spec.get("name", ""))
                if not _COLLECTION_NAME.match(name):  # (documented, not recorded)
                    raise ArangoFailure(400, 1208, "illegal name")
                if name in db.collections:
                    raise ArangoFailure(409, 1207, "duplicate name")
                schema = spec.get("schema")
                if schema is not None:
                    if not isinstance(schema, dict) or not isinstance(schema.get("rule"), dict):
                        raise ArangoFailure(400, 1621, "invalid schema validation parameter")
                    schema = {
                        "rule": schema["rule"],
                        "level": schema.get("level", "strict"),
                        "message": schema.get("message", "Schema validation failed"),
                        "type": "json",
                    }
                type_ = int(spec.get("type", 2))
                coll = self._new_collection(name, type_, schema, bool(spec.get("waitForSync")))
                db.collections[name] = coll
                return _json(200, self._describe_collection(coll))
            if path == "/_api/collection" and request.method == "GET":
                exclude = request.query.get("excludeSystem") == "true"
                result = [
                    {
                        "id": c.id,
                        "name": c.name,
                        "status": 3,
                        "type": c.type,
                        "isSystem": c.is_system,
                        "globallyUniqueId": c.name if c.is_system else f"{self._server_id}/{c.id}",
                    }
                    for c in db.collections.values()
                    if not (exclude and c.is_system)
                ]
                return _json(200, {"error": False, "code": 200, "result": result})
            name = path.removeprefix("/_api/collection/")
            if request.method == "DELETE" and "/" not in name:
                coll = self._collection(db, name)
                del db.collections[name]
                return _json(200, {"error": False, "code": 200, "id": coll.id})
        raise not_implemented(f"{request.method} {path}")

    def _index(self, request: Request, db: Database) -> Answer:
        if request.method != "POST":
            raise not_implemented(f"{request.method} /_api/index")
        spec = request.json() or {}
        if spec.get("type") != "persistent":
            raise not_implemented(f"index type {spec.get('type')!r}")
        with self._lock:
            coll = self._collection(db, request.query.get("collection", ""))
            fields = [str(f) for f in spec.get("fields", [])]
            if not fields:
                raise ArangoFailure(400, 10, "bad parameter")
            unique, sparse = bool(spec.get("unique")), bool(spec.get("sparse"))
            for existing in coll.indexes:  # (documented, not recorded)
                if (existing.fields, existing.unique, existing.sparse) == (fields, unique, sparse):
                    body = {**existing.describe(), "isNewlyCreated": False}
                    return _json(200, {**body, "code": 200, "error": False})
            name = str(spec.get("name") or f"idx_{secrets.randbelow(10**19):019d}")
            index = Index(f"{coll.name}/{next(self._ids)}", name, fields, unique, sparse)
            if unique and not self.ignore_unique:
                seen: dict[tuple[str, ...], str] = {}
                for doc in coll.docs.values():
                    values = tuple(json.dumps(doc.get(f)) for f in fields)
                    if values in seen:  # (documented, not recorded)
                        raise ArangoFailure(409, 1210, self._unique_message(index, seen[values]))
                    seen[values] = doc["_key"]
            coll.indexes.append(index)
            return _json(201, {**index.describe(), "code": 201, "error": False})

    # --- documents -------------------------------------------------------------------------

    def _new_rev(self) -> str:
        value = next(self._revs)
        chars = []
        for _ in range(10):
            chars.append(_REV_ALPHABET[value & 63])
            value >>= 6
        return "_" + "".join(reversed(chars))

    @staticmethod
    def _unique_message(index: Index, key: str) -> str:
        return (
            f"unique constraint violated - in index {index.name} of type persistent over "
            f"'{', '.join(index.fields)}'; conflicting key: {key}"
        )

    def _validate(self, coll: Collection, doc: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Schema and unique indexes, as ArangoDB applies them to an insert or a modification."""
        schema = coll.schema
        if schema is not None and not self.ignore_schema:
            level = schema.get("level", "strict")
            applies = (
                level == "strict"
                or (level in ("new", "moderate") and old is None)
                or (level == "moderate" and old is not None and _schema_valid(schema["rule"], old))
            )
            if applies and not _schema_valid(schema["rule"], doc):
                raise ArangoFailure(400, 1620, str(schema.get("message")))
        if self.ignore_unique:
            return
        for index in coll.indexes:
            if not index.unique:
                continue
            values = [doc.get(f) for f in index.fields]
            if index.sparse and any(v is None for v in values):
                continue
            for other in coll.docs.values():
                if other["_key"] != doc.get("_key") and [other.get(f) for f in index.fields] == values:  # fmt: skip
                    raise ArangoFailure(409, 1210, self._unique_message(index, other["_key"]))

    def _insert(self, db: Database, coll: Collection, doc: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise ArangoFailure(400, 1227, "invalid document type")
        key = str(doc.get("_key") or next(self._keys))
        if key in coll.docs:
            raise ArangoFailure(
                409,
                1210,
                f"unique constraint violated - in index primary of type primary over '_key'; conflicting key: {key}",
            )
        if coll.type == 3 and not (isinstance(doc.get("_from"), str) and isinstance(doc.get("_to"), str)):  # fmt: skip
            raise ArangoFailure(400, 1233, "edge attribute missing or invalid")
        stored = {"_key": key, "_id": f"{coll.name}/{key}", "_rev": self._new_rev()}
        stored.update({k: v for k, v in doc.items() if k not in ("_key", "_id", "_rev")})
        self._validate(coll, stored, None)
        coll.docs[key] = stored
        return stored

    def _document(self, request: Request, db: Database, path: str) -> Answer:
        parts = path.removeprefix("/_api/document/").split("/")
        with self._lock:
            if len(parts) == 1 and request.method == "POST":
                return self._insert_documents(request, db, parts[0])
            if len(parts) != 2:
                raise not_implemented(f"{request.method} {path}")
            coll = self._collection(db, parts[0], "aql")
            doc = coll.docs.get(parts[1])
            if doc is None:
                raise ArangoFailure(404, 1202, "document not found", "aql")
            if request.method == "GET":
                return _json(200, doc, Etag=f'"{doc["_rev"]}"')
            if request.method in ("PUT", "PATCH"):
                return self._modify(request, db, coll, doc)
        raise not_implemented(f"{request.method} {path}")

    def _insert_documents(self, request: Request, db: Database, name: str) -> Answer:
        coll = self._collection(db, name, "aql")
        payload = request.json()
        return_new = request.query.get("returnNew") == "true"
        sync = coll.wait_for_sync or request.query.get("waitForSync") == "true"
        status = 201 if sync else 202

        def entry(doc: dict[str, Any]) -> dict[str, Any]:
            out = {"_id": doc["_id"], "_key": doc["_key"], "_rev": doc["_rev"]}
            if return_new:
                out["new"] = copy.deepcopy(doc)
            return out

        if isinstance(payload, list):
            results: list[dict[str, Any]] = []
            for item in payload:
                try:
                    results.append(entry(self._insert(db, coll, item)))
                except ArangoFailure as failure:
                    results.append(
                        {"error": True, "errorNum": failure.num, "errorMessage": failure.message}
                    )
            return _json(status, results)
        stored = self._insert(db, coll, payload)
        return _json(
            status,
            entry(stored),
            Etag=f'"{stored["_rev"]}"',
            Location=f"/_db/{db.name}/_api/document/{coll.name}/{stored['_key']}",
        )

    def _modify(
        self, request: Request, db: Database, coll: Collection, doc: dict[str, Any]
    ) -> Answer:
        body = request.json()
        if not isinstance(body, dict):
            raise ArangoFailure(400, 1227, "invalid document type")
        wanted = request.headers.get("if-match", "").strip().strip('"')
        if not wanted and request.query.get("ignoreRevs") == "false":
            wanted = str(body.get("_rev", ""))
        if wanted and wanted != doc["_rev"] and not self.accept_stale_rev:
            raise ArangoFailure(
                412,
                1200,
                "conflict, _rev values do not match",
                "document",
                extra={"_id": doc["_id"], "_key": doc["_key"], "_rev": doc["_rev"]},
                headers={"Etag": f'"{doc["_rev"]}"'},
            )
        system = {"_key": doc["_key"], "_id": doc["_id"]}
        changes = {k: v for k, v in body.items() if k not in ("_key", "_id", "_rev")}
        if request.method == "PUT":
            updated = {**system, "_rev": "", **changes}
        else:
            updated = {**doc, **changes}
        self._validate(coll, updated, doc)
        old_rev = doc["_rev"]
        updated["_rev"] = self._new_rev()
        coll.docs[doc["_key"]] = updated
        return _json(
            201 if coll.wait_for_sync else 202,
            {"_id": doc["_id"], "_key": doc["_key"], "_rev": updated["_rev"], "_oldRev": old_rev},
            Etag=f'"{updated["_rev"]}"',
            Location=f"/_db/{db.name}/_api/document/{coll.name}/{doc['_key']}",
        )

    def _import(self, request: Request, db: Database) -> Answer:
        if request.method != "POST" or request.query.get("type") not in ("list", "documents"):
            raise not_implemented("import without type=list or type=documents")
        with self._lock:
            coll = self._collection(db, request.query.get("collection", ""))
            if request.query.get("type") == "list":
                docs = request.json()
            else:
                docs = [json.loads(line) for line in request.body.splitlines() if line.strip()]
            created = errors = 0
            for doc in docs:
                try:
                    self._insert(db, coll, doc)
                    created += 1
                except ArangoFailure:
                    errors += 1
            body = {"error": False, "created": created, "errors": errors, "empty": 0}
            body.update(updated=0, ignored=0)
            return _json(201, body)

    # --- graphs ----------------------------------------------------------------------------

    def _gharial(self, request: Request, db: Database, path: str) -> Answer:
        parts = [p for p in path.removeprefix("/_api/gharial").split("/") if p]
        with self._lock:
            if not parts and request.method == "GET":
                graphs = [g.listed() for g in db.graphs.values()]
                return _json(200, {"error": False, "code": 200, "graphs": graphs})
            if not parts and request.method == "POST":
                return self._create_graph(request, db)
            graph = db.graphs.get(parts[0])
            if graph is None:
                raise ArangoFailure(404, 1924, f"graph '{parts[0]}' not found")
            if len(parts) == 1 and request.method == "DELETE":
                del db.graphs[graph.name]
                if request.query.get("dropCollections") == "true":
                    used = {c for g in db.graphs.values() for c in g.vertex_collections()}
                    used |= {d["collection"] for g in db.graphs.values() for d in g.edge_definitions}  # fmt: skip
                    mine = graph.vertex_collections() | {
                        d["collection"] for d in graph.edge_definitions
                    }
                    for name in mine - used:
                        db.collections.pop(name, None)
                return _json(202, {"error": False, "code": 202, "removed": True})
            if len(parts) == 3 and parts[1] == "edge" and request.method == "POST":
                return self._add_edge(request, db, graph, parts[2])
        raise not_implemented(f"{request.method} {path}")

    def _create_graph(self, request: Request, db: Database) -> Answer:
        spec = request.json() or {}
        name = str(spec.get("name") or "")
        if not name:  # (documented, not recorded)
            raise ArangoFailure(400, 1922, "graph name is missing")
        if name in db.graphs:
            raise ArangoFailure(409, 1925, "graph already exists")
        definitions: list[dict[str, Any]] = []
        for raw in spec.get("edgeDefinitions", []):
            if not isinstance(raw, dict) or not raw.get("collection"):
                raise ArangoFailure(400, 1923, "malformed edge definition")
            definitions.append(
                {
                    "collection": str(raw["collection"]),
                    "from": sorted(str(c) for c in raw.get("from", [])),
                    "to": sorted(str(c) for c in raw.get("to", [])),
                }
            )
        orphans = [str(c) for c in spec.get("orphanCollections", [])]
        graph = Graph(name, self._new_rev(), definitions, orphans)
        for edges in (str(d["collection"]) for d in definitions):
            if edges not in db.collections:
                db.collections[edges] = self._new_collection(edges, 3)
        for vertex in sorted(graph.vertex_collections()):
            if vertex not in db.collections:
                db.collections[vertex] = self._new_collection(vertex, 2)
        db.graphs[name] = graph
        status = 201 if request.query.get("waitForSync") == "true" else 202
        return _json(
            status, {"error": False, "code": status, "graph": graph.describe()}, Etag=graph.rev
        )

    def _add_edge(self, request: Request, db: Database, graph: Graph, name: str) -> Answer:
        definition = next((d for d in graph.edge_definitions if d["collection"] == name), None)
        if definition is None:  # (documented, not recorded)
            raise ArangoFailure(404, 1930, "edge collection not used in graph")
        doc = request.json() or {}
        for attr, allowed in (("_from", definition["from"]), ("_to", definition["to"])):
            ref = str(doc.get(attr) or "")
            if "/" not in ref:
                raise ArangoFailure(400, 1233, "edge attribute missing or invalid")
            vertex_coll, key = ref.split("/", 1)
            if vertex_coll not in allowed:  # (documented, not recorded)
                raise ArangoFailure(400, 1947, "referenced vertex collection is not part of the graph")  # fmt: skip
            target = db.collections.get(vertex_coll)
            if target is None or key not in target.docs:  # (issue reports, unverified)
                raise ArangoFailure(404, 1202, "document not found")
        stored = self._insert(db, self._collection(db, name), doc)
        status = 201 if request.query.get("waitForSync") == "true" else 202
        edge = {"_id": stored["_id"], "_key": stored["_key"], "_rev": stored["_rev"]}
        return _json(status, {"error": False, "code": status, "edge": edge}, Etag=stored["_rev"])

    # --- AQL -------------------------------------------------------------------------------

    @staticmethod
    def _query_collection(db: Database, ref: str, bind: dict[str, Any]) -> Collection:
        name = str(bind[ref[1:]]) if ref.startswith("@@") else ref
        coll = db.collections.get(name)
        if coll is None:
            raise ArangoFailure(
                404, 1203, f"AQL: collection or view not found: {name} (while parsing)", "aql"
            )
        return coll

    def _parse_lookup(self, db: Database, match: re.Match[str], bind: dict[str, Any]) -> _Lookup:
        coll = self._query_collection(db, match["coll"], bind)
        index = None
        if not self.full_scan:
            index = next((i for i in coll.indexes if i.fields[0] == match["attr"]), None)
        limit = int(match["limit"]) if match["limit"] else None
        return _Lookup(match["doc"], coll, match["attr"], bind[match["value"]], limit, index)

    def _query(self, request: Request) -> tuple[str, dict[str, Any]]:
        spec = request.json()
        if not isinstance(spec, dict) or not isinstance(spec.get("query"), str):
            raise ArangoFailure(400, 10, "query is empty", "aql")
        bind = spec.get("bindVars") or {}
        _check_syntax(spec["query"])
        _check_bind_vars(spec["query"], bind)
        return spec["query"], bind

    def _cursor(self, request: Request, db: Database) -> Answer:
        query, bind = self._query(request)
        spec = request.json()
        stats: dict[str, int] = {}
        if match := _RETURN_BIND.match(query):
            result: list[Any] = [bind[match["var"]]]
        elif match := _LOOKUP.match(query):
            with self._lock:
                lookup = self._parse_lookup(db, match, bind)
                docs = list(lookup.collection.docs.values())
                result = [copy.deepcopy(d) for d in docs if d.get(lookup.attr) == lookup.value]
            if lookup.limit is not None:
                result = result[: lookup.limit]
            if lookup.index is not None:
                stats = {"scannedIndex": len(result)}
            else:
                stats = {"scannedFull": len(docs), "filtered": len(docs) - len(result)}
            if self.query_delay_s:
                time.sleep(self.query_delay_s)
        elif match := _SCAN.match(query):
            with self._lock:
                coll = self._query_collection(db, match["coll"], bind)
                docs = [copy.deepcopy(d) for d in coll.docs.values()]
            result = docs[: int(match["limit"])] if match["limit"] else docs
            stats = {"scannedFull": len(result)}
        elif match := _TRAVERSAL.match(query):
            with self._lock:
                result = self._traverse(db, match, bind)
            stats = {"scannedIndex": len(result)}
        else:
            raise not_implemented(f"AQL outside the stand-in's subset: {query!r}")
        body: dict[str, Any] = {"result": result, "hasMore": False}
        if spec.get("count"):
            body["count"] = len(result)
        body.update(cached=False, extra={"warnings": [], "stats": _stats(**stats)})
        body.update(error=False, code=201)
        return _json(201, body)

    def _traverse(self, db: Database, match: re.Match[str], bind: dict[str, Any]) -> list[Any]:
        graph = db.graphs.get(str(bind[match["graph"]]))
        if graph is None:
            raise ArangoFailure(404, 1924, f"graph '{bind[match['graph']]}' not found", "aql")
        lo, hi, direction = int(match["min"]), int(match["max"]), match["direction"].upper()
        edges = [
            doc
            for definition in graph.edge_definitions
            for doc in db.collections[definition["collection"]].docs.values()
        ]

        def neighbours(vertex: str) -> list[tuple[dict[str, Any], str]]:
            out = []
            for edge in edges:
                if direction in ("OUTBOUND", "ANY") and edge["_from"] == vertex:
                    out.append((edge, edge["_to"]))
                if direction in ("INBOUND", "ANY") and edge["_to"] == vertex:
                    out.append((edge, edge["_from"]))
            return out

        paths: list[list[str]] = []

        def walk(path: list[str], used: list[str]) -> None:  # depth first, uniqueEdges "path"
            depth = len(path) - 1
            if lo <= depth <= hi and depth > 0:
                paths.append(path)
            if depth == hi:
                return
            for edge, target in neighbours(path[-1]):
                if edge["_id"] not in used:
                    walk([*path, target], [*used, edge["_id"]])

        start = str(bind[match["start"]])
        vertex_coll, _, key = start.partition("/")
        if vertex_coll in db.collections and key in db.collections[vertex_coll].docs:
            walk([start], [])
        keys = [[vertex.split("/", 1)[1] for vertex in path] for path in paths]
        if self.break_traversal and keys:
            longest = max(keys, key=len)
            if len(longest) > 2:
                del longest[1]
        return keys

    def _explain(self, request: Request, db: Database) -> Answer:
        query, bind = self._query(request)
        nodes: list[dict[str, Any]] = [
            {
                "type": "SingletonNode",
                "dependencies": [],
                "id": 1,
                "estimatedCost": 1,
                "estimatedNrItems": 1,
            }
        ]
        rules: list[str] = []
        collections: list[dict[str, str]] = []
        variables: list[dict[str, Any]] = []
        if match := _LOOKUP.match(query):
            with self._lock:
                lookup = self._parse_lookup(db, match, bind)
                count = len(lookup.collection.docs)
            out_var = {"id": 0, "name": lookup.doc_var, "isFullDocumentFromCollection": True}
            variables.append(out_var)
            collections.append({"name": lookup.collection.name, "type": "read"})
            common = {
                "outVariable": out_var,
                "projections": [],
                "filterProjections": [],
                "count": False,
                "producesResult": True,
                "readOwnWrites": False,
                "useCache": True,
                "maxProjections": 5,
                "database": db.name,
                "collection": lookup.collection.name,
                "satellite": False,
                "isSatellite": False,
                "isSatelliteOf": None,
            }
            if lookup.index is not None:
                rules = ["use-indexes", "remove-filter-covered-by-index", "remove-unnecessary-calculations-2"]  # fmt: skip
                nodes.append(
                    {
                        "type": "IndexNode",
                        "dependencies": [1],
                        "id": 6,
                        "estimatedCost": 4.37,
                        "estimatedNrItems": 1,
                        **common,
                        "needsGatherNodeSort": False,
                        "indexCoversProjections": False,
                        "indexes": [lookup.index.in_plan()],
                        "condition": {"type": "n-ary or", "typeID": 63, "subNodes": []},
                        "allCoveredByOneIndex": False,
                        "sorted": True,
                        "ascending": True,
                        "reverse": False,
                        "evalFCalls": True,
                        "waitForSync": False,
                        "limit": 0,
                        "lookahead": 1,
                    }
                )
            else:
                nodes.append(
                    {
                        "type": "EnumerateCollectionNode",
                        "dependencies": [1],
                        "id": 2,
                        "estimatedCost": count + 2,
                        "estimatedNrItems": count,
                        "random": False,
                        "indexHint": {"forced": False, "lookahead": 1, "type": "none"},
                        **common,
                    }
                )
                nodes.append({"type": "CalculationNode", "dependencies": [2], "id": 3, "estimatedCost": 2 * count + 2, "estimatedNrItems": count})  # fmt: skip
                nodes.append({"type": "FilterNode", "dependencies": [3], "id": 4, "estimatedCost": 3 * count + 2, "estimatedNrItems": count})  # fmt: skip
            nodes.append({"type": "ReturnNode", "dependencies": [nodes[-1]["id"]], "id": 5, "estimatedCost": 4.37, "estimatedNrItems": 1, "inVariable": out_var, "count": True})  # fmt: skip
        elif match := _SCAN.match(query):
            with self._lock:
                coll = self._query_collection(db, match["coll"], bind)
                count = len(coll.docs)
            out_var = {"id": 0, "name": match["doc"], "isFullDocumentFromCollection": True}
            variables.append(out_var)
            collections.append({"name": coll.name, "type": "read"})
            nodes.append(
                {
                    "type": "EnumerateCollectionNode",
                    "dependencies": [1],
                    "id": 2,
                    "estimatedCost": count + 2,
                    "estimatedNrItems": count,
                    "random": False,
                    "indexHint": {"forced": False, "lookahead": 1, "type": "none"},
                    "outVariable": out_var,
                    "projections": [],
                    "filterProjections": [],
                    "count": False,
                    "producesResult": True,
                    "readOwnWrites": False,
                    "useCache": True,
                    "maxProjections": 5,
                    "database": db.name,
                    "collection": coll.name,
                    "satellite": False,
                    "isSatellite": False,
                    "isSatelliteOf": None,
                }
            )
            nodes.append({"type": "ReturnNode", "dependencies": [2], "id": 3, "estimatedCost": 2 * count + 2, "estimatedNrItems": count, "inVariable": out_var, "count": True})  # fmt: skip
        elif _RETURN_BIND.match(query):
            nodes.append({"type": "CalculationNode", "dependencies": [1], "id": 2, "estimatedCost": 2, "estimatedNrItems": 1})  # fmt: skip
            nodes.append({"type": "ReturnNode", "dependencies": [2], "id": 3, "estimatedCost": 3, "estimatedNrItems": 1, "count": True})  # fmt: skip
        elif _TRAVERSAL.match(query):
            nodes.append({"type": "TraversalNode", "dependencies": [1], "id": 2, "estimatedCost": 10, "estimatedNrItems": 10})  # fmt: skip
            nodes.append({"type": "CalculationNode", "dependencies": [2], "id": 3, "estimatedCost": 20, "estimatedNrItems": 10})  # fmt: skip
            nodes.append({"type": "ReturnNode", "dependencies": [3], "id": 4, "estimatedCost": 30, "estimatedNrItems": 10, "count": True})  # fmt: skip
        else:
            raise not_implemented(f"AQL outside the stand-in's subset: {query!r}")
        cost = nodes[-1]["estimatedCost"]
        plan = {
            "nodes": nodes,
            "rules": rules,
            "collections": collections,
            "variables": variables,
            "estimatedCost": cost,
            "estimatedNrItems": nodes[-1]["estimatedNrItems"],
            "isModificationQuery": False,
        }
        stats = {"rulesExecuted": 44, "rulesSkipped": 0, "plansCreated": 1, "peakMemoryUsage": 0, "executionTime": 0.0001}  # fmt: skip
        body = {"plan": plan, "cacheable": True, "warnings": [], "stats": stats}
        body.update(error=False, code=200)
        return _json(200, body)
