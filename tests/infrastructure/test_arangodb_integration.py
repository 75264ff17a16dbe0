"""ArangoDB as metadata store and telemetry graph, through its documented HTTP API.

Every test works in its own database named under `arango_db.ns`, dropped after the test, so
nothing of the application's data is touched. Skips when the stack has no ArangoDB.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from stackprobe.pytest_plugin import ServiceHandle


@pytest.fixture
def scratch_db(arango_db: ServiceHandle[Any]) -> str:
    """A database of this test's own (`/_db/<name>/...`), dropped afterwards."""
    name = arango_db.name("db").replace("-", "_")
    arango_db.cleanup(lambda: arango_db.http.delete(f"/_api/database/{name}"))
    answer = arango_db.http.post("/_api/database", json={"name": name})
    assert answer.status_code == 201, answer.text
    return f"/_db/{name}"


def aql(arango: ServiceHandle[Any], db: str, query: str, **bind: Any) -> list[Any]:
    answer = arango.http.post(f"{db}/_api/cursor", json={"query": query, "bindVars": bind})
    assert answer.status_code == 201, answer.text
    result: list[Any] = answer.json()["result"]
    return result


@pytest.mark.stackprobe(kind="arangodb", capability="connectivity")
def test_server_answers_with_its_version(arango_db: ServiceHandle[Any]) -> None:
    answer = arango_db.http.get("/_api/version")
    assert answer.status_code == 200
    assert answer.json()["server"] == "arango"
    assert int(answer.json()["version"].split(".")[0]) >= 3


@pytest.mark.stackprobe(kind="arangodb", capability="metadata-storage")
def test_documents_round_trip_and_stale_revisions_are_refused(
    arango_db: ServiceHandle[Any], scratch_db: str
) -> None:
    http = arango_db.http
    assert http.post(f"{scratch_db}/_api/collection", json={"name": "assets"}).status_code == 200
    created = http.post(f"{scratch_db}/_api/document/assets", json={"_key": "a1", "owner": "ada"})
    assert created.status_code in (201, 202)
    rev = created.json()["_rev"]
    doc = http.get(f"{scratch_db}/_api/document/assets/a1").json()
    assert doc["owner"] == "ada"
    assert http.patch(
        f"{scratch_db}/_api/document/assets/a1", json={"owner": "bob"}
    ).status_code in (201, 202)
    stale = http.patch(
        f"{scratch_db}/_api/document/assets/a1", json={"owner": "eve"}, headers={"If-Match": rev}
    )
    assert (stale.status_code, stale.json()["errorNum"]) == (412, 1200)


@pytest.mark.stackprobe(kind="arangodb", capability="graph-relationships")
def test_telemetry_graph_traversal_follows_edges(
    arango_db: ServiceHandle[Any], scratch_db: str
) -> None:
    http = arango_db.http
    graph = {
        "name": "topology",
        "edgeDefinitions": [{"collection": "calls", "from": ["services"], "to": ["services"]}],
    }
    assert http.post(f"{scratch_db}/_api/gharial", json=graph).status_code in (201, 202)
    for key in ("web", "api", "db"):
        http.post(f"{scratch_db}/_api/document/services", json={"_key": key}).raise_for_status()
    for src, dst in (("web", "api"), ("api", "db")):
        edge = {"_from": f"services/{src}", "_to": f"services/{dst}"}
        answer = http.post(f"{scratch_db}/_api/gharial/topology/edge/calls", json=edge)
        assert answer.status_code in (201, 202), answer.text
    paths = aql(
        arango_db, scratch_db,
        "FOR v, e, p IN 1..3 OUTBOUND @start GRAPH @g RETURN p.vertices[*]._key",
        start="services/web", g="topology",
    )  # fmt: skip
    assert paths == [["web", "api"], ["web", "api", "db"]]


@pytest.mark.stackprobe(kind="arangodb", capability="query-performance")
def test_indexed_lookup_uses_the_index_and_is_fast(
    arango_db: ServiceHandle[Any], scratch_db: str
) -> None:
    http = arango_db.http
    http.post(f"{scratch_db}/_api/collection", json={"name": "spans"}).raise_for_status()
    index = {"type": "persistent", "fields": ["trace_id"], "unique": False}
    assert http.post(f"{scratch_db}/_api/index?collection=spans", json=index).status_code in (
        200,
        201,
    )
    docs = [{"trace_id": str(i % 50), "n": i} for i in range(500)]
    assert http.post(f"{scratch_db}/_api/document/spans", json=docs).status_code in (201, 202)
    query = "FOR d IN @@c FILTER d.trace_id == @v RETURN d"
    bind = {"@c": "spans", "v": "7"}
    plan = http.post(f"{scratch_db}/_api/explain", json={"query": query, "bindVars": bind})
    assert "IndexNode" in {n["type"] for n in plan.json()["plan"]["nodes"]}
    started = time.perf_counter()
    assert sorted(d["n"] for d in aql(arango_db, scratch_db, query, **bind)) == list(
        range(7, 500, 50)
    )
    assert time.perf_counter() - started < 0.5
