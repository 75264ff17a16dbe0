"""The ArangoDB stand-in against the recorded ArangoDB 3.12 answers.

Each recorded request (recordings/arangodb-3.12/, transcripts of ArangoDB's generated doc
examples, plus docs-transcripts.json) is sent to the stand-in after creating the state the
transcript needed (the `products` collection, its documents, the `social` graph...), and the
answer is compared with the recording as parsed JSON (README: key order differs between
handlers, so where the recording is a transcript the key order is compared too). Values that
a server makes up (ids, revisions, index names) are compared by shape; everything else must be
equal. Then the behaviour the checks rely on that the recordings describe without a
transcript, and every fault switch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.standins.arangodb import COMMON_HEADERS, ArangoStandin, recording

PASSWORD = "standin-pw"
REV = re.compile(r"^_[A-Za-z0-9_-]{10}$")


@pytest.fixture
def arango() -> Iterator[ArangoStandin]:
    with ArangoStandin(password=PASSWORD) as standin:
        yield standin


@pytest.fixture
def http(arango: ArangoStandin) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=arango.url, auth=("root", PASSWORD)) as client:
        yield client


def example(file: str, index: int = 0) -> dict[str, Any]:
    examples: list[dict[str, Any]] = recording(file)["examples"]
    return examples[index]


def transcript(name: str) -> dict[str, Any]:
    return next(e for e in recording("docs-transcripts.json")["examples"] if e["name"] == name)


def same_shape(seen: Any, recorded: Any, made_up: frozenset[str] | set[str] = frozenset()) -> None:
    """Same keys in the same order and equal values, except keys a server makes up."""
    if isinstance(recorded, dict):
        assert isinstance(seen, dict)
        assert list(seen) == list(recorded), (list(seen), list(recorded))
        for key, value in recorded.items():
            if key not in made_up:
                same_shape(seen[key], value, made_up)
    elif isinstance(recorded, list):
        assert isinstance(seen, list) and len(seen) == len(recorded)
        for s, r in zip(seen, recorded, strict=True):
            same_shape(s, r, made_up)
    else:
        assert seen == recorded


def products(http: httpx.Client, count: int = 0, **spec: Any) -> None:
    assert http.post("/_api/collection", json={"name": "products", **spec}).status_code == 200
    for i in range(count):
        assert http.post("/_api/document/products", json={"id": i}).status_code in (201, 202)


# --- replayed recordings -----------------------------------------------------------------------


def test_version_and_its_headers_match_the_transcript(http: httpx.Client) -> None:
    recorded = example("GET__api_version.json")
    answer = http.get("/_api/version")
    assert answer.status_code == 200
    same_shape(answer.json(), recorded["body"])
    assert answer.headers["content-length"] == recorded["headers"]["content-length"]
    for name in COMMON_HEADERS:
        assert answer.headers[name] == recorded["headers"][name.lower()]
    details = http.get("/_api/version", params={"details": "true"}).json()["details"]
    excerpt = example("GET__api_version.json", 1)["body_excerpt"]["details"]
    assert {k: v for k, v in details.items()} == {k: v for k, v in excerpt.items() if k != "..."}
    assert all(isinstance(v, str) for v in details.values())  # every detail is a string


def test_unauthenticated_and_wrong_password_get_the_recorded_401(arango: ArangoStandin) -> None:
    recorded = example("AUTH_401.json")
    for auth in (None, ("root", "wrong")):
        answer = httpx.get(f"{arango.url}/_api/version", auth=auth)
        assert answer.status_code == 401
        same_shape(answer.json(), recorded["body"])
    answer = httpx.get(f"{arango.url}/_admin/server/availability")  # needs no credentials
    assert answer.status_code == 200
    same_shape(answer.json(), example("GET__admin_server_availability.json")["body"])


def test_databases_create_duplicate_list_and_drop(http: httpx.Client) -> None:
    created = example("POST__api_database.json")
    answer = http.post("/_api/database", json=created["request"])
    assert answer.status_code == 201
    same_shape(answer.json(), created["body"])
    duplicate = example("POST__api_database.json", 1)
    answer = http.post("/_api/database", json=created["request"])
    assert answer.status_code == 409
    same_shape(answer.json(), duplicate["body"])
    listing = transcript("list databases")
    answer = http.get("/_api/database")
    same_shape(answer.json(), {**listing["body"], "result": ["_system", "example"]})
    dropped = example("DELETE__api_database_name.json")
    answer = http.delete("/_api/database/example")
    assert answer.status_code == 200
    same_shape(answer.json(), dropped["body"])
    answer = http.delete("/_api/database/example")
    assert (answer.status_code, answer.json()["errorNum"], answer.json()["errorMessage"]) == (
        404,
        1228,
        "database not found",
    )  # DELETE__api_database_name.json: errors.yaml + mapping
    answer = http.post("/_db/_system/_api/database", json={"name": "stackprobe-20261125T115700Z-a1b2c3-x"})  # fmt: skip
    assert answer.status_code == 201  # the run prefix is a valid traditional name as it is
    assert (
        http.post("/_db/example-missing/_api/cursor", json={"query": "RETURN 1"}).status_code == 404
    )


def test_collections_document_and_edge_match_the_transcript(http: httpx.Client) -> None:
    made_up = {"id", "globallyUniqueId", "objectId"}
    for index in (0, 1):
        recorded = example("POST__api_collection.json", index)
        answer = http.post("/_api/collection", json=recorded["request"])
        assert answer.status_code == 200
        same_shape(answer.json(), recorded["body"], made_up)
    listing = http.get("/_api/collection").json()
    recorded_list = transcript("list collections")["body"]
    same_shape(listing["result"][0], recorded_list["result"][0], {"id"})  # _analyzers, a system one
    user = [c for c in listing["result"] if not c["isSystem"]]
    same_shape(user[0], {**recorded_list["result"][1], "name": "testCollectionBasics"}, made_up)
    dropped = http.delete("/_api/collection/testCollectionEdges")
    same_shape(dropped.json(), transcript("drop collection")["body"], {"id"})
    missing = http.delete("/_api/collection/testCollectionEdges")
    assert (missing.status_code, missing.json()["errorNum"]) == (404, 1203)


def test_insert_read_replace_and_update_match_the_transcripts(http: httpx.Client) -> None:
    made_up = {"_id", "_key", "_rev", "_oldRev"}
    products(http, waitForSync=True)  # the recorded 201 was on a waitForSync collection
    recorded = example("POST__api_document_collection.json")
    answer = http.post("/_api/document/products", json=recorded["request"])
    assert answer.status_code == 201
    same_shape(answer.json(), recorded["body"], made_up)
    key, rev = answer.json()["_key"], answer.json()["_rev"]
    assert REV.match(rev) and answer.headers["etag"] == f'"{rev}"'  # quoted in the document API
    assert answer.headers["location"] == f"/_db/_system/_api/document/products/{key}"
    read = http.get(f"/_api/document/products/{key}")
    recorded_read = transcript("read document")["body"]
    assert list(read.json()) == [*list(recorded_read)[:3], "Hello"]  # _key, _id, _rev first
    assert read.json()["Hello"] == "World"
    assert read.headers["etag"] == f'"{rev}"'
    replaced = http.put(f"/_api/document/products/{key}", json={"Hello": "you"})
    same_shape(replaced.json(), transcript("replace document")["body"], made_up)
    assert replaced.status_code == 201 and replaced.json()["_oldRev"] == rev
    patched = http.patch(f"/_api/document/products/{key}", json={"hello": "world"})
    same_shape(patched.json(), transcript("update (patch) document")["body"], made_up)
    assert http.get(f"/_api/document/products/{key}").json()["Hello"] == "you"  # merged
    unknown = http.get("/_api/document/unknowncoll/1")
    same_shape(
        unknown.json(),
        {**transcript("read document of an unknown collection")["body"], "errorMessage": "collection or view not found: unknowncoll"},
    )  # fmt: skip


def test_default_inserts_are_202_and_arrays_answer_per_document(http: httpx.Client) -> None:
    products(http)
    single = http.post("/_api/document/products", json={"Hello": "World"})
    assert single.status_code == 202  # README gotcha 1: waitForSync off is 202
    recorded = example("POST__api_document_collection.json", 1)
    docs = [{"Hello": "Earth"}, {"Hello": "Venus"}]
    answer = http.post("/_api/document/products", params={"returnNew": "true"}, json=docs)
    assert answer.status_code == 202
    same_shape(answer.json(), recorded["body"], {"_id", "_key", "_rev"})


def test_stale_revision_gets_the_recorded_412(http: httpx.Client) -> None:
    recorded = example("PUT_PATCH__api_document_stale_rev.json")
    products(http)
    first = http.post("/_api/document/products", json={"other": "x"}).json()
    current = http.put(f"/_api/document/products/{first['_key']}", json={"other": "y"}).json()
    for method in ("PUT", "PATCH"):
        answer = http.request(
            method,
            f"/_api/document/products/{first['_key']}",
            json={"other": "content"},
            headers={"If-Match": f'"{first["_rev"]}"'},
        )
        assert answer.status_code == 412
        same_shape(answer.json(), recorded["body"], {"_id", "_key", "_rev"})
        assert answer.json()["_rev"] == current["_rev"]  # the current revision, as recorded
        assert answer.headers["etag"] == f'"{current["_rev"]}"'
    ok = http.put(
        f"/_api/document/products/{first['_key']}",
        json={"other": "z"},
        headers={"If-Match": f'"{current["_rev"]}"'},
    )
    assert ok.status_code == 202


def test_unique_index_and_schema_errors_follow_the_derived_bodies(http: httpx.Client) -> None:
    schema = {"rule": {"type": "object", "required": ["sku"]}, "level": "moderate", "message": "needs sku"}  # fmt: skip
    products(http, schema=schema)
    recorded_index = example("POST__api_index_persistent_unique.json")
    index = http.post(
        "/_api/index",
        params={"collection": "products"},
        json={**recorded_index["request"], "fields": ["sku"], "unique": True},
    )
    assert index.status_code == 201
    same_shape(index.json(), {**recorded_index["body"], "fields": ["sku"], "unique": True}, {"id", "name"})  # fmt: skip
    assert re.fullmatch(r"products/\d+", index.json()["id"])
    assert re.fullmatch(r"idx_\d{19}", index.json()["name"])
    again = http.post("/_api/index", params={"collection": "products"}, json={"type": "persistent", "fields": ["sku"], "unique": True})  # fmt: skip
    assert (again.status_code, again.json()["isNewlyCreated"]) == (200, False)
    first = http.post("/_api/document/products", json={"sku": "s1"}).json()
    duplicate = http.post("/_api/document/products", json={"sku": "s1"})
    recorded = example("POST__api_document_collection.json", 3)["body"]
    same_shape(duplicate.json(), recorded, {"errorMessage"})
    assert duplicate.status_code == 409
    assert duplicate.json()["errorMessage"] == (
        f"unique constraint violated - in index {index.json()['name']} of type persistent "
        f"over 'sku'; conflicting key: {first['_key']}"
    )
    invalid = http.post("/_api/document/products", json={"name": "no sku"})
    same_shape(invalid.json(), {**example("POST__api_document_collection.json", 2)["body"], "errorMessage": "needs sku"})  # fmt: skip
    assert invalid.status_code == 400
    echoed = http.post("/_api/collection", json={"name": "withschema", "schema": schema}).json()
    assert echoed["schema"]["rule"] == schema["rule"]  # echoed instead of null


def test_graph_create_and_edge_match_the_transcripts(http: httpx.Client) -> None:
    recorded = example("POST__api_gharial.json")
    answer = http.post("/_api/gharial", json=recorded["request"])
    assert answer.status_code == 202
    same_shape(answer.json(), recorded["body"], {"_rev"})
    assert answer.headers["etag"] == answer.json()["graph"]["_rev"]  # unquoted in gharial
    types = {c["name"]: c["type"] for c in http.get("/_api/collection").json()["result"]}
    assert (types["edges"], types["startVertices"], types["endVertices"]) == (3, 2, 2)
    assert http.post("/_api/gharial", json=recorded["request"]).json()["errorNum"] == 1925
    social = {"name": "social", "edgeDefinitions": [{"collection": "relation", "from": ["female", "male"], "to": ["female", "male"]}]}  # fmt: skip
    assert http.post("/_api/gharial", json=social).status_code == 202
    listing = http.get("/_api/gharial").json()
    same_shape(listing["graphs"][1], transcript("list graphs")["body"]["graphs"][0], {"_rev"})
    assert http.post("/_api/document/female", json=[{"_key": "alice"}, {"_key": "diana"}]).status_code == 202  # fmt: skip
    edge_recorded = example("POST__api_gharial_graph_edge_collection.json")
    edge = http.post("/_api/gharial/social/edge/relation", json=edge_recorded["request"])
    assert edge.status_code == 202
    same_shape(edge.json(), edge_recorded["body"], {"_id", "_key", "_rev"})
    assert edge.headers["etag"] == edge.json()["edge"]["_rev"]
    missing = http.post("/_api/gharial/social/edge/relation", json={"_from": "female/alice", "_to": "male/bob"})  # fmt: skip
    assert (missing.status_code, missing.json()["errorNum"]) == (404, 1202)
    outside = http.post("/_api/gharial/social/edge/relation", json={"_from": "female/alice", "_to": "other/x"})  # fmt: skip
    assert (outside.status_code, outside.json()["errorNum"]) == (400, 1947)
    dropped = http.delete("/_api/gharial/social", params={"dropCollections": "true"})
    same_shape(dropped.json(), transcript("drop graph")["body"])
    assert dropped.status_code == 202
    names = {c["name"] for c in http.get("/_api/collection").json()["result"]}
    assert not names & {"relation", "female", "male"} and "edges" in names


def test_cursor_and_its_errors_match_the_transcripts(http: httpx.Client) -> None:
    products(http)
    for doc in ({"hello1": "world1"}, {"hello2": "world1"}):
        http.post("/_api/document/products", json=doc)
    recorded = example("POST__api_cursor.json")
    answer = http.post("/_api/cursor", json=recorded["request"])
    assert answer.status_code == 201
    same_shape(answer.json(), recorded["body"], {"_key", "_id", "_rev", "executionTime"})
    for index in (1, 2):  # parse error 1501, unknown collection 1203
        recorded = example("POST__api_cursor.json", index)
        answer = http.post("/_api/cursor", json=recorded["request"])
        assert answer.status_code == recorded["status"]
        same_shape(answer.json(), recorded["body"])


def test_explain_shows_a_full_scan_or_the_persistent_index(http: httpx.Client) -> None:
    products(http, count=10)
    recorded = example("POST__api_explain.json", 1)
    answer = http.post("/_api/explain", json=recorded["request"])
    assert answer.status_code == 200
    same_shape(answer.json(), recorded["body"], {"executionTime"})  # the recorded full scan
    index = http.post("/_api/index", params={"collection": "products"}, json={"type": "persistent", "fields": ["id"]}).json()  # fmt: skip
    query = {"query": "FOR p IN products FILTER p.id == @id RETURN p", "bindVars": {"id": 4}}
    plan = http.post("/_api/explain", json=query).json()["plan"]
    assert [n["type"] for n in plan["nodes"]] == ["SingletonNode", "IndexNode", "ReturnNode"]
    recorded_node = example("POST__api_explain.json", 0)["body"]["plan"]["nodes"][1]
    node = plan["nodes"][1]
    assert set(recorded_node) - {"condition"} <= set(node)
    same_shape(node["indexes"], [{**recorded_node["indexes"][0], "unique": False}], {"id", "name"})
    assert node["indexes"][0]["id"] == index["id"].split("/")[1]  # bare id in a plan
    assert "use-indexes" in plan["rules"]
    recorded = example("POST__api_explain.json", 2)
    answer = http.post("/_api/explain", json=recorded["request"])
    assert answer.status_code == 400
    same_shape(answer.json(), recorded["body"])


def test_import_matches_the_transcript(http: httpx.Client) -> None:
    products(http)
    recorded = example("POST__api_import.json")
    answer = http.post("/_api/import", params={"collection": "products", "type": "list"}, json=recorded["request"])  # fmt: skip
    assert answer.status_code == 201
    same_shape(answer.json(), recorded["body"])  # no `code` key
    again = http.post("/_api/import", params={"collection": "products", "type": "list"}, json=recorded["request"][:2])  # fmt: skip
    assert again.json()["errors"] == 2  # the keys abc and foo exist


# --- serves what it was sent -----------------------------------------------------------------


def _graph(http: httpx.Client) -> None:
    definition = {"collection": "e", "from": ["v"], "to": ["v"]}
    http.post("/_api/gharial", json={"name": "g", "edgeDefinitions": [definition]})
    http.post("/_api/document/v", json=[{"_key": k} for k in "abcdx"])
    for s, t in (("a", "b"), ("b", "c"), ("c", "d"), ("x", "a")):
        http.post("/_api/gharial/g/edge/e", json={"_from": f"v/{s}", "_to": f"v/{t}"})


TRAVERSE = "FOR v, e, p IN {lo}..{hi} {direction} @start GRAPH @g RETURN p.vertices[*]._key"


def test_traversal_follows_direction_and_depth(http: httpx.Client) -> None:
    _graph(http)

    def paths(lo: int, hi: int, direction: str, start: str = "v/a") -> list[list[str]]:
        query = TRAVERSE.format(lo=lo, hi=hi, direction=direction)
        answer = http.post("/_api/cursor", json={"query": query, "bindVars": {"start": start, "g": "g"}})  # fmt: skip
        assert answer.status_code == 201
        result: list[list[str]] = answer.json()["result"]
        return result

    assert paths(1, 3, "OUTBOUND") == [["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"]]
    assert paths(2, 2, "OUTBOUND") == [["a", "b", "c"]]
    assert paths(1, 1, "INBOUND") == [["a", "x"]]
    assert sorted(paths(1, 1, "ANY")) == [["a", "b"], ["a", "x"]]
    missing = http.post("/_api/cursor", json={"query": TRAVERSE.format(lo=1, hi=1, direction="ANY"), "bindVars": {"start": "v/a", "g": "nope"}})  # fmt: skip
    assert (missing.status_code, missing.json()["errorNum"]) == (404, 1924)


def test_lookup_uses_the_index_only_when_one_covers_the_attribute(http: httpx.Client) -> None:
    products(http, count=5)
    query = {"query": "FOR d IN @@c FILTER d.id == @v RETURN d", "bindVars": {"@c": "products", "v": 3}}  # fmt: skip
    scan = http.post("/_api/cursor", json=query).json()
    assert [d["id"] for d in scan["result"]] == [3]
    assert (scan["extra"]["stats"]["scannedFull"], scan["extra"]["stats"]["scannedIndex"]) == (5, 0)
    http.post("/_api/index", params={"collection": "products"}, json={"type": "persistent", "fields": ["id"]})  # fmt: skip
    indexed = http.post("/_api/cursor", json=query).json()
    assert (indexed["extra"]["stats"]["scannedFull"], indexed["extra"]["stats"]["scannedIndex"]) == (0, 1)  # fmt: skip
    unused = http.post("/_api/cursor", json={**query, "bindVars": {**query["bindVars"], "x": 1}})  # type: ignore[dict-item]
    assert (unused.status_code, unused.json()["errorNum"]) == (400, 1552)


def test_unsupported_requests_say_they_come_from_the_standin(http: httpx.Client) -> None:
    answer = http.post("/_api/cursor", json={"query": "FOR x IN 1..3 COLLECT y = x RETURN y"})
    assert answer.status_code == 501
    assert answer.json()["errorMessage"].startswith("arangodb stand-in:")


# --- fault switches --------------------------------------------------------------------------


def test_fault_unavailable_and_unauthorized(arango: ArangoStandin, http: httpx.Client) -> None:
    arango.available = False
    assert httpx.get(f"{arango.url}/_admin/server/availability").status_code == 503
    arango.unauthorized = True
    answer = http.get("/_api/version")  # the right password, refused: a rotated credential
    assert answer.status_code == 401
    same_shape(answer.json(), example("AUTH_401.json")["body"])


def test_fault_stale_rev_unique_and_schema_switches(arango: ArangoStandin, http: httpx.Client) -> None:  # fmt: skip
    products(http, schema={"rule": {"type": "object", "required": ["sku"]}, "level": "moderate", "message": "m"})  # fmt: skip
    http.post("/_api/index", params={"collection": "products"}, json={"type": "persistent", "fields": ["sku"], "unique": True})  # fmt: skip
    first = http.post("/_api/document/products", json={"sku": "a"}).json()
    http.put(f"/_api/document/products/{first['_key']}", json={"sku": "a", "v": 2})
    arango.accept_stale_rev = arango.ignore_unique = arango.ignore_schema = True
    stale = http.put(
        f"/_api/document/products/{first['_key']}",
        json={"sku": "a", "v": 3},
        headers={"If-Match": f'"{first["_rev"]}"'},
    )
    assert stale.status_code == 202
    assert http.post("/_api/document/products", json={"sku": "a"}).status_code == 202
    assert http.post("/_api/document/products", json={"no": "sku"}).status_code == 202


def test_fault_full_scan_and_broken_traversal(arango: ArangoStandin, http: httpx.Client) -> None:
    products(http, count=3)
    http.post("/_api/index", params={"collection": "products"}, json={"type": "persistent", "fields": ["id"]})  # fmt: skip
    arango.full_scan = True
    query = {"query": "FOR d IN products FILTER d.id == @v RETURN d", "bindVars": {"v": 1}}
    nodes = [n["type"] for n in http.post("/_api/explain", json=query).json()["plan"]["nodes"]]
    assert "EnumerateCollectionNode" in nodes and "IndexNode" not in nodes
    assert http.post("/_api/cursor", json=query).json()["extra"]["stats"]["scannedFull"] == 3
    _graph(http)
    arango.break_traversal = True
    query = {"query": TRAVERSE.format(lo=1, hi=3, direction="OUTBOUND"), "bindVars": {"start": "v/a", "g": "g"}}  # fmt: skip
    assert http.post("/_api/cursor", json=query).json()["result"][-1] == ["a", "c", "d"]


def test_fault_query_delay(arango: ArangoStandin, http: httpx.Client) -> None:
    products(http, count=1)
    arango.query_delay_s = 0.2
    started = time.monotonic()
    http.post("/_api/cursor", json={"query": "FOR d IN products FILTER d.id == @v RETURN d", "bindVars": {"v": 0}})  # fmt: skip
    assert time.monotonic() - started >= 0.2


def test_seed_and_snapshot_show_a_users_data(arango: ArangoStandin) -> None:
    arango.seed("shop", "orders", [{"_key": "o1", "total": 5}])
    assert arango.databases() == ["_system", "shop"]
    assert arango.collections("shop") == ["orders"]
    assert arango.documents("shop", "orders")[0]["total"] == 5
    assert "orders" in arango.snapshot()["shop"]["collections"]
