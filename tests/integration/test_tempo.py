"""The tempo adapter's checks, run by stackprobe's own engine, against the Tempo stand-in.

The adapter (`stackprobe.services.tempo`) is verified here against `tests/standins/tempo.py`,
a stand-in that answers like the recorded real Tempo 2.7.2 (see its tests), not against a live
Tempo: Tempo cannot be installed on these machines. The stack file names a `tempo` service
whose `url` is the stand-in's HTTP API and whose `endpoints.otlp_http` is its OTLP receiver;
there is no collector, so the probe traces go straight to the receiver.

Every capability passes on a healthy stand-in, and fails with what it saw when the stand-in
misbehaves: a dropped span, a corrupted parent id, lookups that find nothing, not ready, a
retention shorter than expected. The visibility timeout is lowered so failures come fast.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.trace.v1 import trace_pb2

from stackprobe import otlp
from stackprobe.catalog import known_kinds
from stackprobe.results import CheckResult, RunResult
from stackprobe.services import tracestore
from stackprobe.services.tempo import spans_from_otlp_json
from tests.integration.helpers import outcomes, run_stack, write_stack
from tests.standins.tempo import TempoStandin

TEMPO_CAPS = known_kinds()["tempo"].capabilities
FAST_VISIBILITY = 1.5  # seconds a check waits for a trace that the stand-in will never complete
_NOT_REACHED = (
    r"trace [0-9a-f]{{32}} with {spans} spans not reached after \d+(\.\d+)? s \(\d+ attempts\): "
)


@pytest.fixture
def tempo() -> Iterator[TempoStandin]:
    with TempoStandin() as standin:
        yield standin


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracestore, "VISIBLE_TIMEOUT", FAST_VISIBILITY)


def _stack(tmp_path: Path, tempo: TempoStandin, **service: Any) -> Path:
    config = {"kind": "tempo", "url": tempo.url, "endpoints": {"otlp_http": tempo.otlp_url}}
    return write_stack(tmp_path, {"traces": {**config, **service}})


def _by_check(result: RunResult) -> dict[str, CheckResult]:
    return {r.check: r for r in result.results}


def _stored_spans(tempo: TempoStandin, trace_id: bytes) -> list[tracestore.StoredSpan]:
    """What the stand-in holds for a trace, parsed as the adapter parses Tempo's v2 JSON."""
    data = trace_pb2.TracesData(resource_spans=tempo.batches(trace_id))
    return spans_from_otlp_json(json_format.MessageToDict(data)["resourceSpans"])


def test_every_tempo_capability_passes_on_the_standin_with_evidence(tmp_path: Path) -> None:
    with TempoStandin(version="2.7.2") as tempo:
        result = run_stack(_stack(tmp_path, tempo, expectations={"retention": "168h"}))
        received = tempo.spans_received
    assert {r.check: r.message for r in result.results if r.outcome.value != "passed"} == {}
    cov = result.coverage.services["traces"]
    assert (cov.percent, set(cov.capabilities)) == (100.0, set(TEMPO_CAPS))
    assert result.services["traces"].version == "2.7.2"
    r = _by_check(result)
    assert r["tempo.readiness.ready"].message == "ready (2.7.2)"
    assert r["tempo.readiness.ready"].evidence["go_version"] == "go1.23.5"
    ingest = r["tempo.ingest.by_id"].evidence
    assert (ingest["span_count"], ingest["sent_via"]) == (3, "tempo OTLP receiver")
    assert len(ingest["trace_id"]) == 32
    correlation = r["tempo.correlation.traceparent_hops"].evidence
    assert correlation["services"] == sorted(tracestore.HOP_SERVICES)
    assert correlation["span_count"] == 5
    assert r["tempo.query.search"].evidence["service_names"] >= 1
    retention = r["tempo.retention.configured"]
    assert retention.evidence == {"block_retention": "168h0m0s", "expected": "168h"}
    assert received == 3 + 5 + 1  # ingest, correlation and query probes, all via the receiver


def test_readiness_says_when_tempo_reports_no_version(tmp_path: Path, tempo: TempoStandin) -> None:
    result = run_stack(_stack(tmp_path, tempo), capabilities=("readiness",))
    (ready,) = result.results
    assert (ready.outcome.value, ready.message) == ("passed", "ready (version not reported)")
    assert result.services["traces"].version is None  # a source build, as recorded


def test_readiness_fails_while_tempo_is_not_ready(tmp_path: Path, tempo: TempoStandin) -> None:
    tempo.not_ready = True
    (ready,) = run_stack(_stack(tmp_path, tempo), capabilities=("readiness",)).results
    assert ready.outcome.value == "failed"
    # the stand-in answers what a starting real 2.7.2 answered; the message shows the body
    assert ready.message == (
        "GET /ready: expected 200, saw 503: "
        "Ingester not ready: ingester check ready failed: waiting for 15s after being ready"
    )


def test_retention_fails_when_the_stack_expects_more_than_tempo_keeps(
    tmp_path: Path, tempo: TempoStandin
) -> None:
    path = _stack(tmp_path, tempo, expectations={"retention": "336h"})
    (retention,) = run_stack(path, capabilities=("retention",)).results
    assert retention.outcome.value == "failed"
    assert "336h" in retention.message and "168h0m0s" in retention.message
    assert retention.message == (
        "block_retention: expected at least 336h (expectations.retention), saw 168h0m0s"
    )


def test_retention_passes_when_tempo_keeps_long_enough(tmp_path: Path) -> None:
    with TempoStandin(block_retention="720h") as tempo:
        path = _stack(tmp_path, tempo, expectations={"retention": "336h"})
        (retention,) = run_stack(path, capabilities=("retention",)).results
    assert (retention.outcome.value, retention.message) == (
        "passed",
        "block_retention 720h0m0s meets the expected 336h",
    )


def test_retention_is_skipped_without_an_expectation(tmp_path: Path, tempo: TempoStandin) -> None:
    (retention,) = run_stack(_stack(tmp_path, tempo), capabilities=("retention",)).results
    assert retention.outcome.value == "skipped"
    assert retention.message == (
        "block_retention is 168h0m0s; set expectations.retention to check it"
    )


def test_checks_fail_with_the_span_count_when_a_span_is_dropped(
    tmp_path: Path, tempo: TempoStandin, fast: None
) -> None:
    tempo.drop_span = True
    started = time.monotonic()
    path = _stack(tmp_path, tempo)
    result = run_stack(path, capabilities=("ingest", "correlation", "query"))
    took = time.monotonic() - started
    assert set(outcomes(result).values()) == {"failed"}
    r = _by_check(result)
    assert re.fullmatch(
        _NOT_REACHED.format(spans=3) + "found 2 of 3 spans", r["tempo.ingest.by_id"].message
    )
    assert re.fullmatch(
        _NOT_REACHED.format(spans=5) + "found 4 of 5 spans",
        r["tempo.correlation.traceparent_hops"].message,
    )
    # the query probe is a one-span trace: with its span lost, search cannot find it
    assert "returned 0 trace(s), not the probe trace" in r["tempo.query.search"].message
    assert took < 3 * FAST_VISIBILITY + 5


def test_correlation_names_the_span_whose_parent_was_broken(
    tmp_path: Path, tempo: TempoStandin, fast: None
) -> None:
    tempo.break_parent = True
    path = _stack(tmp_path, tempo)
    (correlation,) = run_stack(path, capabilities=("correlation",)).results
    assert correlation.outcome.value == "failed"
    (trace_id,) = tempo.trace_ids()
    tempo.break_parent = False
    intact = _stored_spans(tempo, trace_id)
    broken = next(s for s in intact if s.parent_span_id)  # the stand-in breaks the first one
    corrupted = bytes(b ^ 0xFF for b in bytes.fromhex(broken.parent_span_id)).hex()
    assert correlation.message.startswith(f"span {broken.span_id}: expected name/service/parent")
    assert f"/{broken.parent_span_id}, saw " in correlation.message
    assert correlation.message.endswith(f"/{corrupted}")


def test_ingest_fails_saying_the_trace_was_not_found(
    tmp_path: Path, tempo: TempoStandin, fast: None
) -> None:
    tempo.not_found = True
    tempo.search_lag_s = 0.2  # search must pass within the 1.5 s the fast fixture leaves it
    path = _stack(tmp_path, tempo)
    result = run_stack(path, capabilities=("ingest", "correlation", "query"))
    r = _by_check(result)
    for check, spans in (("tempo.ingest.by_id", 3), ("tempo.correlation.traceparent_hops", 5)):
        assert r[check].outcome.value == "failed"
        assert re.fullmatch(_NOT_REACHED.format(spans=spans) + "trace not found", r[check].message)
    assert r["tempo.query.search"].outcome.value == "passed"  # search is not a lookup by id


def test_checks_wait_until_tempo_makes_the_trace_visible(tmp_path: Path) -> None:
    with TempoStandin(id_lag_s=0.5, search_lag_s=1.0) as tempo:
        path = _stack(tmp_path, tempo)
        result = run_stack(path, capabilities=("ingest", "query"))
    assert set(outcomes(result).values()) == {"passed"}
    r = _by_check(result)
    assert r["tempo.ingest.by_id"].evidence["visible_after_s"] >= 0.5
    assert r["tempo.query.search"].evidence["found_by_attribute_after_s"] >= 1.0


def test_search_passes_at_a_10_s_lag_and_reports_the_lag(tmp_path: Path) -> None:
    """Real Tempo 2.7.2 made a new trace searchable after 1.6-9.9 s (the stand-in follows the
    recording, visibility.json): at a 10 s lag the search check still passes, with the lag
    it waited as evidence."""
    with TempoStandin(search_lag_s=10.0) as tempo:
        result = run_stack(_stack(tmp_path, tempo), capabilities=("query",))
    (search,) = result.results
    assert (search.outcome.value, search.check) == ("passed", "tempo.query.search"), search
    lag = search.evidence["found_by_attribute_after_s"]
    assert 10.0 <= lag < tracestore.VISIBLE_TIMEOUT, lag
    assert re.match(r"found by attribute after \d+(\.\d+)? s and by service", search.message)


def test_search_fails_saying_what_it_saw_when_the_lag_is_beyond_its_budget(
    tmp_path: Path, fast: None
) -> None:
    """A lag beyond the search budget (here the fast fixture's 1.5 s, for a 5 s lag: the
    stand-in's default, the recorded median): `failed`, saying how long it tried and what
    the last search returned."""
    with TempoStandin() as tempo:
        result = run_stack(_stack(tmp_path, tempo), capabilities=("query",))
    (search,) = result.results
    assert search.outcome.value == "failed", search
    assert re.fullmatch(
        r"attribute search not reached after \d+(\.\d+)? s \(\d+ attempts\): "
        r"search by stackprobe\.probe=\S+ returned 0 trace\(s\), not the probe trace",
        search.message,
    ), search.message


def test_search_finds_a_trace_whose_id_starts_with_zeros(
    tmp_path: Path, tempo: TempoStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tempo's search answers trace ids without leading zeros (about one run in 16 has one)
    monkeypatch.setattr(otlp, "new_trace_id", lambda: "00" + secrets.token_hex(15))
    result = run_stack(_stack(tmp_path, tempo), capabilities=("ingest", "query"))
    assert {r.check: r.message for r in result.results if r.outcome.value != "passed"} == {}
    assert _by_check(result)["tempo.ingest.by_id"].evidence["trace_id"].startswith("00")


def test_a_receiver_url_that_is_the_query_api_is_a_clear_error(
    tmp_path: Path, tempo: TempoStandin
) -> None:
    path = _stack(tmp_path, tempo, endpoints={"otlp_http": tempo.url})
    (ingest,) = run_stack(path, capabilities=("ingest",)).results
    assert ingest.outcome.value == "error"
    assert f"OTLP/HTTP export to {tempo.url}/v1/traces: HTTP 404" in ingest.message


def test_without_a_receiver_the_ingest_checks_are_skipped(
    tmp_path: Path, tempo: TempoStandin
) -> None:
    path = write_stack(tmp_path, {"traces": {"kind": "tempo", "url": tempo.url}})
    result = run_stack(path, capabilities=("ingest", "correlation", "query"))
    assert set(outcomes(result).values()) == {"skipped"}
    assert all("no endpoints.otlp_http" in r.message for r in result.results)
