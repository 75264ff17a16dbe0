"""The arangodb kind's checks, run by stackprobe's own engine, against the ArangoDB stand-in.

The kind (`stackprobe.services.arangodb`) is verified here against `tests/standins/arangodb.py`,
a stand-in built from recorded ArangoDB 3.12 answers (transcripts of ArangoDB's generated doc
examples; see its tests), not against a live ArangoDB: ArangoDB cannot be installed on these
machines. Behaviour the recordings only describe (unique and schema errors, edges to missing
vertices) follows ArangoDB's documentation and is marked so in the stand-in.

Every capability passes on a healthy stand-in, in both workspaces (a probe database per
check, or prefixed collections inside `options.database`), and fails with what it saw when the
stand-in misbehaves: unavailable, stale `_rev` accepted, duplicates or schema violations
accepted, a broken traversal path, a full scan, slow queries. After every run, also a failed
or timed-out one, the stand-in holds exactly what it held before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackprobe.catalog import known_kinds
from stackprobe.results import CheckResult, RunResult
from tests.conftest import CliRunner
from tests.integration.helpers import outcomes, run_stack, write_stack
from tests.standins.arangodb import ArangoStandin

ARANGO_CAPS = known_kinds()["arangodb"].capabilities
PASSWORD = "s3cret-arango-pw"
USER_DATA = [{"_key": "o1", "total": 5}, {"_key": "o2", "total": 7}]


@pytest.fixture
def arango() -> Iterator[ArangoStandin]:
    with ArangoStandin(password=PASSWORD) as standin:
        standin.seed("shop", "orders", USER_DATA)  # the application's own data
        yield standin


def _stack(tmp_path: Path, arango: ArangoStandin, **service: Any) -> Path:
    config = {"kind": "arangodb", "url": arango.url, "password_file": "arango.pw"}
    (tmp_path / "arango.pw").write_text(PASSWORD + "\n")
    return write_stack(tmp_path, {"graphdb": {**config, **service}})


def _by_check(result: RunResult) -> dict[str, CheckResult]:
    return {r.check: r for r in result.results}


def _run(tmp_path: Path, arango: ArangoStandin, *caps: str, **service: Any) -> RunResult:
    before = arango.snapshot()
    result = run_stack(_stack(tmp_path, arango, **service), capabilities=caps)
    assert arango.snapshot() == before, "the run left something behind or changed user data"
    return result


def test_every_capability_passes_with_evidence_and_leaves_nothing(
    tmp_path: Path, arango: ArangoStandin
) -> None:
    result = _run(tmp_path, arango)
    assert {r.check: r.message for r in result.results if r.outcome.value != "passed"} == {}
    cov = result.coverage.services["graphdb"]
    assert (cov.percent, set(cov.capabilities)) == (100.0, set(ARANGO_CAPS))
    assert result.services["graphdb"].version == "3.12.0-devel"
    r = _by_check(result)
    connectivity = r["arangodb.connectivity.version_and_aql"]
    assert connectivity.message.startswith("ArangoDB 3.12.0-devel (enterprise), version p50 ")
    assert connectivity.evidence["mode"] == "default"
    storage = r["arangodb.metadata-storage.documents_and_guarantees"].evidence
    assert storage["proven"] == ["round trip", "stale _rev 412", "unique 409", "schema 400"]
    assert storage["database"].startswith("stackprobe-") and storage["database"].endswith("-arangodb-meta")  # fmt: skip
    assert storage["revisions"][0] != storage["revisions"][1]
    graph = r["arangodb.graph-relationships.named_graph_traversal"].evidence
    assert graph["paths"] == ["a→b", "a→b→c", "a→b→c→d", "a→b→f"]
    query = r["arangodb.query-performance.indexed_lookup"].evidence
    assert query["plan"] == ["SingletonNode", "IndexNode", "ReturnNode"]
    assert query["lookups"] == 20 and query["p50_ms"] <= query["threshold_ms"] == 100.0
    assert arango.databases() == ["_system", "shop"]
    assert PASSWORD not in result.to_json()


def test_inside_an_existing_database_only_prefixed_collections_come_and_go(
    tmp_path: Path, arango: ArangoStandin
) -> None:
    result = _run(tmp_path, arango, options={"database": "shop"})
    assert set(outcomes(result).values()) == {"passed"}
    assert {r.evidence["database"] for r in result.results if "database" in r.evidence} == {"shop"}
    created = [t for m, t in arango.requests if m == "POST" and t.startswith("/_db/shop/_api/collection")]  # fmt: skip
    assert len(created) == 2  # metadata and query collections; the graph makes its own two
    assert not [t for m, t in arango.requests if m == "POST" and t.endswith("/_api/database")]
    assert arango.collections("shop") == ["orders"]


def test_connectivity_fails_while_the_server_is_unavailable(
    tmp_path: Path, arango: ArangoStandin
) -> None:
    arango.available = False
    (check,) = _run(tmp_path, arango, "connectivity").results
    assert check.outcome.value == "failed"
    assert check.message == (
        "GET /_admin/server/availability: expected 200 with mode default, saw HTTP 503 errorNum 503 "
        '"service unavailable" (503 means starting, shutting down, read-only or overloaded)'
    )


def test_refused_credentials_are_an_error_with_arangodbs_errornum(
    tmp_path: Path, arango: ArangoStandin
) -> None:
    arango.unauthorized = True
    result = _run(tmp_path, arango)
    assert set(outcomes(result).values()) == {"error"}
    r = _by_check(result)
    assert r["arangodb.connectivity.version_and_aql"].message == (
        "arangodb: HTTP 401 from GET /_db/_system/_api/version: [ERR 11] not authorized to "
        "execute this request: check username and password"
    )
    assert all(PASSWORD not in c.message for c in result.results)


def test_metadata_storage_fails_when_a_stale_rev_is_accepted(
    tmp_path: Path, arango: ArangoStandin
) -> None:
    arango.accept_stale_rev = True
    (check,) = _run(tmp_path, arango, "metadata-storage").results
    assert check.outcome.value == "failed"
    revisions = check.evidence["revisions"]
    assert check.message == (
        f"replace with the stale _rev {revisions[0]}: expected HTTP 412 errorNum 1200, saw HTTP 202 "
        f"(written as _rev {check.message.split('written as _rev ')[1][:11]}): "
        "optimistic concurrency is not enforced (a lost update went through)"
    )
    assert revisions[1] not in check.message  # the stale write replaced the current revision


def test_metadata_storage_fails_when_the_unique_index_takes_a_duplicate(
    tmp_path: Path, arango: ArangoStandin
) -> None:
    arango.ignore_unique = True
    (check,) = _run(tmp_path, arango, "metadata-storage").results
    assert check.outcome.value == "failed"
    assert "expected HTTP 409 errorNum 1210, saw HTTP 202" in check.message
    assert check.message.endswith("the unique index sku_probe did not refuse the duplicate")


def test_metadata_storage_fails_when_the_schema_is_not_enforced(
    tmp_path: Path, arango: ArangoStandin
) -> None:
    arango.ignore_schema = True
    (check,) = _run(tmp_path, arango, "metadata-storage").results
    assert check.outcome.value == "failed"
    assert check.message.startswith(
        "insert of a document that breaks the collection schema: expected HTTP 400 errorNum 1620, saw HTTP 202"
    )
    assert check.message.endswith("the schema is not enforced")


def test_graph_fails_with_the_paths_it_saw_when_traversal_breaks(
    tmp_path: Path, arango: ArangoStandin
) -> None:
    arango.break_traversal = True
    (check,) = _run(tmp_path, arango, "graph-relationships").results
    assert check.outcome.value == "failed"
    assert check.message == (
        "traversal 'FOR v, e, p IN 1..3 OUTBOUND @start GRAPH @graph RETURN p.vertices[*]._key' "
        "from a: expected paths a→b, a→b→c, a→b→c→d, a→b→f; saw a→b, a→b→c, a→b→f, a→c→d "
        "(missing: a→b→c→d; unexpected: a→c→d)"
    )


def test_query_performance_fails_on_a_full_scan(tmp_path: Path, arango: ArangoStandin) -> None:
    arango.full_scan = True
    (check,) = _run(tmp_path, arango, "query-performance").results
    assert check.outcome.value == "failed"
    assert check.message == (
        "explain 'FOR d IN @@coll FILTER d.n == @n RETURN d': expected an IndexNode using the "
        "persistent index n_probe on n, saw a full collection scan (EnumerateCollectionNode); "
        "plan SingletonNode → EnumerateCollectionNode → CalculationNode → FilterNode → ReturnNode, rules []"
    )


def test_query_performance_fails_above_the_threshold(tmp_path: Path, arango: ArangoStandin) -> None:
    arango.query_delay_s = 0.03
    result = _run(tmp_path, arango, "query-performance", expectations={"query_ms": 10})
    (check,) = result.results
    assert check.outcome.value == "failed"
    assert check.message.startswith(
        "indexed lookup: expected a median at most 10 ms (expectations.query_ms), saw "
    )
    assert check.message.endswith(" ms over 20 queries")
    assert check.evidence["p50_ms"] >= 30


def test_a_timed_out_check_still_drops_its_database(tmp_path: Path, arango: ArangoStandin) -> None:
    arango.query_delay_s = 0.5  # 20 lookups would take 10 s
    before = arango.snapshot()
    result = run_stack(_stack(tmp_path, arango), timeout=2, capabilities=("query-performance",))
    (check,) = result.results
    assert (check.outcome.value, check.message) == ("error", "timed out after 2 s")
    assert arango.snapshot() == before


def test_clean_removes_only_leftovers_of_old_runs(
    tmp_path: Path, arango: ArangoStandin, cli: CliRunner
) -> None:
    old, recent = "stackprobe-20200101T000000Z-aaaaaa-", "stackprobe-29990101T000000Z-bbbbbb-"
    arango.seed(f"{old}arangodb-meta", "x", [])
    arango.seed(f"{recent}arangodb-meta", "x", [])
    arango.seed("shop", f"{old}aql-docs", [{"n": 1}])
    arango.seed("shop", f"{recent}aql-docs", [])
    arango.seed("shop", "stackprobe-notes", [])  # our word, but no run id: not ours
    path = _stack(tmp_path, arango, options={"database": "shop"})
    done = cli("clean", "-c", str(path))
    assert done.code == 0, done.stderr
    assert done.stdout.splitlines() == [
        "graphdb: removed 2 leftover(s)",
        f"  database {old}arangodb-meta",
        f"  collection shop/{old}aql-docs",
    ]
    assert arango.databases() == ["_system", "shop", f"{recent}arangodb-meta"]
    assert arango.collections("shop") == sorted([f"{recent}aql-docs", "orders", "stackprobe-notes"])  # fmt: skip
