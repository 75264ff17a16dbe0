"""The Tempo stand-in against the recorded answers of a real Tempo 2.7.2.

The recorded trace is rebuilt as an OTLP request from trace-v2.json (same ids, names, kinds,
times, attributes, resource attributes, scope "probe"; no status, as the recording client sent
none) and pushed to the stand-in's OTLP receiver. Then every request of `index.tsv` is replayed
and its answer compared with the recording:

- status code always equal;
- body byte for byte equal (so key order, compact layout and trailing newlines too), with one
  normalisation: `metrics.inspectedBytes` in search and tag answers is storage-dependent, so
  the recorded figure is replaced by the stand-in's before comparing (and the parsed JSON is
  compared as well);
- `/metrics` was recorded as an excerpt (`metrics-excerpt.txt`; index.tsv names it
  metrics.txt): the lines the stand-in models must appear verbatim.

Trace batches are compared in the recorded order with no reordering: the stand-in returns
batches in the order they were pushed, and the rebuilt request pushes them in recorded order.

Behaviour the recordings do not show (taken from Tempo's source) and the fault switches are
tested after the replay.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from stackprobe import otlp
from tests.standins.tempo import TempoStandin, parse_traceql, recording

TRACE_ID = "4fcacc1721e9b16aea35d3279e61c042"  # README.md of the recordings


def _key_values(items: list[dict[str, Any]]) -> list[common_pb2.KeyValue]:
    out = []
    for item in items:
        (kind, value), *rest = item["value"].items()
        assert kind == "stringValue" and not rest  # all the recorded attributes are strings
        out.append(common_pb2.KeyValue(key=item["key"], value=common_pb2.AnyValue(string_value=value)))  # fmt: skip
    return out


def _recorded_spans() -> list[tuple[list[dict[str, Any]], str, dict[str, Any]]]:
    """(resource attributes, scope name, span) of every recorded span, in recorded order."""
    trace = json.loads(recording("trace-v2.json"))["trace"]
    return [
        (rs["resource"]["attributes"], ss["scope"]["name"], span)
        for rs in trace["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]


def _resource_spans(
    resource: list[dict[str, Any]], scope: str, span: dict[str, Any]
) -> trace_pb2.ResourceSpans:
    def raw(b64: str) -> bytes:
        return base64.b64decode(b64)

    out = trace_pb2.ResourceSpans()
    out.resource.attributes.extend(_key_values(resource))
    scope_spans = out.scope_spans.add()
    scope_spans.scope.name = scope
    scope_spans.spans.add(
        trace_id=raw(span["traceId"]),
        span_id=raw(span["spanId"]),
        parent_span_id=raw(span.get("parentSpanId", "")),
        name=span["name"],
        kind=trace_pb2.Span.SpanKind.Value(span["kind"]),
        start_time_unix_nano=int(span["startTimeUnixNano"]),
        end_time_unix_nano=int(span["endTimeUnixNano"]),
        attributes=_key_values(span.get("attributes", [])),
    )
    return out


def recorded_request() -> trace_service_pb2.ExportTraceServiceRequest:
    """The recorded trace as one OTLP export (four ResourceSpans, in recorded order)."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.extend(_resource_spans(*parts) for parts in _recorded_spans())
    return request


def push(tempo: TempoStandin, request: trace_service_pb2.ExportTraceServiceRequest) -> httpx.Response:  # fmt: skip
    return httpx.post(
        f"{tempo.otlp_url}/v1/traces",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )


@pytest.fixture
def tempo() -> Iterator[TempoStandin]:
    with TempoStandin(id_lag_s=0, search_lag_s=0) as standin:
        assert push(standin, recorded_request()).status_code == 200
        yield standin


@pytest.fixture
def http(tempo: TempoStandin) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tempo.url, timeout=5) as client:
        yield client


def _index() -> list[tuple[str, int, str, dict[str, str]]]:
    rows = []
    for line in recording("index.tsv").decode().splitlines():
        name, status, request = line.split("\t")
        method, path, *header = request.strip().split(" ", 2)
        assert method == "GET"
        headers = dict([header[0].removeprefix("-H ").split(": ", 1)]) if header else {}
        rows.append((name, int(status), path, headers))
    return rows


INDEX = _index()


def _without_inspected_bytes(recorded: bytes, answer: bytes) -> tuple[bytes, Any, Any]:
    """The recording with its inspectedBytes replaced by the answer's; both parsed too."""
    got, want = json.loads(answer), json.loads(recorded)
    if "metrics" in want and "inspectedBytes" in want["metrics"]:
        assert re.fullmatch(r"\d+", got["metrics"]["inspectedBytes"])
        figure = want["metrics"]["inspectedBytes"]
        recorded = recorded.replace(
            f'"inspectedBytes":"{figure}"'.encode(),
            f'"inspectedBytes":"{got["metrics"]["inspectedBytes"]}"'.encode(),
        )
        want["metrics"]["inspectedBytes"] = got["metrics"]["inspectedBytes"]
    return recorded, got, want


# --- the replay of every recorded request -----------------------------------------------------


def test_the_recorded_trace_is_rebuilt_faithfully() -> None:
    request = recorded_request()
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
    assert [s.name for s in spans] == ["call api", "POST /orders", "INSERT orders", "GET /checkout"]
    assert {ss.scope.name for rs in request.resource_spans for ss in rs.scope_spans} == {"probe"}
    assert not any(s.HasField("status") for s in spans)  # the stand-in must add "status":{}


@pytest.mark.parametrize(
    ("name", "status", "path", "headers"), INDEX, ids=[row[0] for row in INDEX]
)
def test_every_recorded_request_gets_the_recorded_answer(
    http: httpx.Client, name: str, status: int, path: str, headers: dict[str, str]
) -> None:
    answer = http.get(path, headers=headers)
    assert answer.status_code == status
    if name == "metrics.txt":  # recorded as an excerpt
        lines = answer.text.splitlines()
        excerpt = recording("metrics-excerpt.txt").decode().splitlines()
        modelled = ("tempo_build_info{", "tempo_distributor_spans_received_total{", "tempo_ingester_traces_created_total{")  # fmt: skip
        for line in excerpt:
            if line.startswith(modelled):
                assert line in lines
        return
    recorded = recording(name)
    if name.endswith(".json") and b'"inspectedBytes"' in recorded:
        recorded, got, want = _without_inspected_bytes(recorded, answer.content)
        assert got == want
    assert answer.content == recorded


def test_json_answers_say_json_and_errors_are_plain_text(http: httpx.Client) -> None:
    assert http.get(f"/api/v2/traces/{TRACE_ID}").headers["content-type"] == "application/json"
    assert http.get("/api/search?q={}").headers["content-type"] == "application/json"
    bad = http.get("/api/traces/not-a-trace-id")
    assert bad.headers["content-type"].startswith("text/plain")


def test_the_receiver_answers_an_empty_export_response(tempo: TempoStandin) -> None:
    answer = push(tempo, recorded_request())
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-protobuf"
    assert answer.content == trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
    assert tempo.spans_received == 8 and tempo.traces_created == 1


def test_one_push_per_span_reads_back_the_same_recorded_trace() -> None:
    with TempoStandin(id_lag_s=0, search_lag_s=0) as tempo:
        for parts in _recorded_spans():  # as the recording client pushed it: span by span
            single = trace_service_pb2.ExportTraceServiceRequest()
            single.resource_spans.append(_resource_spans(*parts))
            assert push(tempo, single).status_code == 200
        with httpx.Client(base_url=tempo.url) as http:
            assert http.get(f"/api/traces/{TRACE_ID}").content == recording("trace-v1.json")
            assert http.get(f"/api/v2/traces/{TRACE_ID}").content == recording("trace-v2.json")


def test_a_request_with_several_traces_is_split_by_trace() -> None:
    ids = [otlp.new_trace_id() for _ in range(2)]
    spans = [otlp.ProbeSpan(t, otlp.new_span_id(), f"op-{t[:4]}", "svc").finish() for t in ids]
    with TempoStandin(id_lag_s=0, search_lag_s=0) as tempo:
        push(tempo, otlp.traces_request(spans))  # one ResourceSpans holding both traces
        with httpx.Client(base_url=tempo.url) as http:
            for trace_id, span in zip(ids, spans, strict=True):
                batches = http.get(f"/api/traces/{trace_id}").json()["batches"]
                names = [s["name"] for b in batches for ss in b["scopeSpans"] for s in ss["spans"]]
                assert names == [span.name]
        assert tempo.traces_created == 2


def test_attribute_types_come_back_in_protobuf_json_form() -> None:
    span = otlp.ProbeSpan(
        otlp.new_trace_id(), otlp.new_span_id(), "typed", "svc",
        attributes={"s": "héllo <&>", "i": 5, "f": 0.5, "b": True},
    ).finish()  # fmt: skip
    with TempoStandin(id_lag_s=0, search_lag_s=0) as tempo:
        push(tempo, otlp.traces_request([span]))
        with httpx.Client(base_url=tempo.url) as http:
            answer = http.get(f"/api/v2/traces/{span.trace_id}")
    (rs,) = answer.json()["trace"]["resourceSpans"]
    assert rs["scopeSpans"][0]["spans"][0]["attributes"] == [
        {"key": "s", "value": {"stringValue": "héllo <&>"}},
        {"key": "i", "value": {"intValue": "5"}},
        {"key": "f", "value": {"doubleValue": 0.5}},
        {"key": "b", "value": {"boolValue": True}},
    ]
    assert "héllo \\u003c\\u0026\\u003e".encode() in answer.content  # Go escapes HTML characters


# --- what the recordings do not show: Tempo's source --------------------------------------------


def test_ids_are_parsed_as_tempo_parses_them(http: httpx.Client) -> None:
    assert http.get(f"/api/traces/{TRACE_ID.upper()}").status_code == 200
    bad = http.get("/api/v2/traces/4fcacc17-21e9")
    assert (bad.status_code, bad.text) == (
        400,
        "trace IDs can only contain hex characters: invalid character '-' at position 9",
    )
    too_long = http.get(f"/api/traces/{TRACE_ID}00")
    assert (too_long.status_code, too_long.text) == (400, "trace IDs can't be larger than 128 bits")


def test_search_trims_leading_zeros_of_trace_ids_and_lookups_accept_them() -> None:
    trace_id = "000" + secrets.token_hex(16)[3:]
    span = otlp.ProbeSpan(trace_id, otlp.new_span_id(), "zeros", "svc-zero").finish()
    with TempoStandin(id_lag_s=0, search_lag_s=0) as tempo:
        push(tempo, otlp.traces_request([span]))
        with httpx.Client(base_url=tempo.url) as http:
            found = http.get("/api/search", params={"q": '{ resource.service.name = "svc-zero" }'})
            (trace,) = found.json()["traces"]
            assert trace["traceID"] == trace_id.lstrip("0")
            assert trace["spanSet"]["spans"][0]["spanID"] == span.span_id
            assert http.get(f"/api/traces/{trace['traceID']}").status_code == 200


def test_search_parameters_are_validated_like_tempo(http: httpx.Client) -> None:
    cases = {
        "limit=0": "invalid limit: must be a positive number",
        "limit=x": 'invalid limit: strconv.Atoi: parsing "x": invalid syntax',
        "spss=-1": "invalid spss: must be a positive number",
        "start=20&end=10": "http parameter start must be before end. received start=20 end=10",
        "tags=service.name%3Da%20service.name%3Db": "invalid tags: tag service.name has been set twice",
    }
    for query, message in cases.items():
        answer = http.get(f"/api/search?{query}")
        assert (answer.status_code, answer.text) == (400, message), query


@pytest.mark.parametrize(
    ("query", "message"),
    [
        # Tempo's own parser test (pkg/api/http_test.go): the end of input is $end, one past
        ('{ .foo="bar" ', "parse error at line 1, col 14: syntax error: unexpected $end"),
        ('{ span.a = "x" && }', "parse error at line 1, col 19: syntax error: unexpected }"),
        ('{ span.a = "x }', "parse error at line 1, col 12: literal not terminated"),
        ("{\n  span.a = = 1 }", "parse error at line 2, col 12: syntax error: unexpected ="),
    ],
)
def test_traceql_syntax_errors_name_line_column_and_token(query: str, message: str) -> None:
    with (
        TempoStandin(id_lag_s=0, search_lag_s=0) as tempo,
        httpx.Client(base_url=tempo.url) as http,
    ):
        answer = http.get("/api/search", params={"q": query})
    assert (answer.status_code, answer.text) == (400, f"invalid TraceQL query: {message}")


@pytest.mark.parametrize(
    "query",
    ['{ span.a > 1 }', '{ span.a = "x" || span.b = "y" }', '{ span.a = "x" } | count() > 1',
     "{ duration > 1s }", '{ span.a = "x" } >> { span.b = "y" }', '{ span.a =~ "x.*" }'],
)  # fmt: skip
def test_valid_traceql_outside_the_subset_is_a_501_from_the_standin(query: str) -> None:
    with (
        TempoStandin(id_lag_s=0, search_lag_s=0) as tempo,
        httpx.Client(base_url=tempo.url) as http,
    ):
        answer = http.get("/api/search", params={"q": query})
    assert answer.status_code == 501
    assert answer.text.startswith("tempo stand-in: TraceQL ")


def test_the_subset_parses_the_queries_the_adapter_sends() -> None:
    conditions = parse_traceql('{ resource.service.name = "a\\"b" && span.k = "v" && .n = 5 }')
    assert [(c.scope, c.name, c.op, c.value) for c in conditions] == [
        ("resource", "service.name", "=", 'a"b'),
        ("span", "k", "=", "v"),
        ("", "n", "=", 5),
    ]


def test_search_combines_conditions_on_one_span(http: httpx.Client) -> None:
    q = '{ resource.service.name = "probe-api" && span.probe.run = "rec1" }'
    (trace,) = http.get("/api/search", params={"q": q}).json()["traces"]
    (span,) = trace["spanSet"]["spans"]
    assert span["spanID"] == "d7787c1ca61535f0"
    assert [a["key"] for a in span["attributes"]] == ["service.name", "probe.run"]
    q = '{ resource.service.name = "probe-db" && span.probe.run = "rec1" }'
    assert http.get("/api/search", params={"q": q}).json()["traces"] == []


def test_the_two_ports_do_not_stand_in_for_each_other(tempo: TempoStandin) -> None:
    body = recorded_request().SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    on_api = httpx.post(f"{tempo.url}/v1/traces", content=body, headers=headers)
    assert (on_api.status_code, on_api.text) == (404, "404 page not found\n")
    assert httpx.get(f"{tempo.otlp_url}/api/echo").status_code == 404
    assert httpx.get(f"{tempo.otlp_url}/v1/traces").status_code == 405
    as_json = httpx.post(f"{tempo.otlp_url}/v1/traces", content=b"{}", headers={"Content-Type": "application/json"})  # fmt: skip
    assert as_json.status_code == 501


# --- settings and fault switches ----------------------------------------------------------------


def test_version_and_retention_can_be_set_and_nothing_else_changes() -> None:
    standin = TempoStandin(version="2.7.2", block_retention="336h")
    with standin as tempo, httpx.Client(base_url=tempo.url) as http:
        info = http.get("/api/status/buildinfo").json()
        config = http.get("/status/config").text.splitlines()
    assert info == {**json.loads(recording("buildinfo.json")), "version": "2.7.2"}
    recorded = recording("status-config.yaml").decode().splitlines()
    changed = [(a, b) for a, b in zip(recorded, config, strict=True) if a != b]
    assert changed == [("        block_retention: 168h0m0s", "        block_retention: 336h0m0s")]


def test_not_ready_answers_503_like_a_starting_ingester(tempo: TempoStandin, http: httpx.Client) -> None:  # fmt: skip
    """The body a real 2.7.2 answered for ~15 s after start (ready-starting.txt)."""
    tempo.not_ready = True
    answer = http.get("/ready")
    assert (answer.status_code, answer.content) == (503, recording("ready-starting.txt"))
    assert answer.text == (
        "Ingester not ready: ingester check ready failed: waiting for 15s after being ready\n"
    )
    tempo.not_ready = False
    assert http.get("/ready").text == "ready\n"


def _spans(answer: httpx.Response) -> list[dict[str, Any]]:
    batches = answer.json()["trace"]["resourceSpans"]
    return [s for b in batches for ss in b["scopeSpans"] for s in ss["spans"]]


def test_drop_span_loses_the_last_span_everywhere(tempo: TempoStandin, http: httpx.Client) -> None:
    recorded = _spans(httpx.Response(200, content=recording("trace-v2.json")))
    tempo.drop_span = True
    assert _spans(http.get(f"/api/v2/traces/{TRACE_ID}")) == recorded[:-1]
    assert len(http.get(f"/api/traces/{TRACE_ID}").json()["batches"]) == 3
    q = '{ span.probe.run = "rec1" }'
    (trace,) = http.get("/api/search", params={"q": q}).json()["traces"]
    assert trace["spanSet"]["matched"] == 1
    assert trace["rootServiceName"] == "<root span not yet received>"  # the root was last
    assert "http.method" not in http.get("/api/search/tags").json()["tagNames"]
    tempo.drop_span = False
    assert http.get(f"/api/v2/traces/{TRACE_ID}").content == recording("trace-v2.json")


def test_drop_span_makes_a_one_span_trace_disappear() -> None:
    span = otlp.ProbeSpan(otlp.new_trace_id(), otlp.new_span_id(), "only", "svc").finish()
    with (
        TempoStandin(id_lag_s=0, search_lag_s=0) as tempo,
        httpx.Client(base_url=tempo.url) as http,
    ):
        push(tempo, otlp.traces_request([span]))
        tempo.drop_span = True
        assert http.get(f"/api/traces/{span.trace_id}").status_code == 404
        assert http.get("/api/search", params={"q": "{}"}).json()["traces"] == []


def test_break_parent_corrupts_exactly_one_parent_id(tempo: TempoStandin, http: httpx.Client) -> None:  # fmt: skip
    recorded = _spans(httpx.Response(200, content=recording("trace-v2.json")))
    tempo.break_parent = True
    seen = _spans(http.get(f"/api/v2/traces/{TRACE_ID}"))
    changed = [(a, b) for a, b in zip(recorded, seen, strict=True) if a != b]
    assert len(changed) == 1
    before, after = changed[0]
    assert {k: v for k, v in after.items() if k != "parentSpanId"} == {
        k: v for k, v in before.items() if k != "parentSpanId"
    }
    inverted = bytes(b ^ 0xFF for b in base64.b64decode(before["parentSpanId"]))
    assert base64.b64decode(after["parentSpanId"]) == inverted


def test_not_found_answers_every_lookup_as_missing(tempo: TempoStandin, http: httpx.Client) -> None:  # fmt: skip
    tempo.not_found = True
    v1, v2 = http.get(f"/api/traces/{TRACE_ID}"), http.get(f"/api/v2/traces/{TRACE_ID}")
    assert (v1.status_code, v1.content) == (404, recording("trace-missing.txt"))
    assert (v2.status_code, v2.content) == (200, recording("trace-v2-missing.txt"))
    assert (
        len(http.get("/api/search", params={"q": "{}"}).json()["traces"]) == 1
    )  # search is not a lookup
    tempo.not_found = False
    assert http.get(f"/api/traces/{TRACE_ID}").content == recording("trace-v1.json")


def test_lags_delay_visibility_by_id_and_by_search() -> None:
    span = otlp.ProbeSpan(otlp.new_trace_id(), otlp.new_span_id(), "late", "svc-late").finish()
    q = {"q": '{ resource.service.name = "svc-late" }'}
    standin = TempoStandin(id_lag_s=0.3, search_lag_s=1.0)
    with standin as tempo, httpx.Client(base_url=tempo.url) as http:
        push(tempo, otlp.traces_request([span]))
        pushed = time.monotonic()
        assert http.get(f"/api/v2/traces/{span.trace_id}").json() == {"trace": {}}
        assert http.get("/api/search", params=q).json()["traces"] == []
        time.sleep(max(0.0, pushed + 0.35 - time.monotonic()))
        assert _spans(http.get(f"/api/v2/traces/{span.trace_id}"))[0]["name"] == "late"
        assert http.get("/api/search", params=q).json()["traces"] == []
        time.sleep(max(0.0, pushed + 1.05 - time.monotonic()))
        assert len(http.get("/api/search", params=q).json()["traces"]) == 1


def test_default_lags_follow_the_recorded_real_tempo() -> None:
    """Without lags set, a new trace is visible by id within the recorded 0.06-0.40 s and by
    search only after the recorded median (~5 s; visibility.json), as real users meet it."""
    facts = json.loads(recording("visibility.json"))
    span = otlp.ProbeSpan(otlp.new_trace_id(), otlp.new_span_id(), "new", "svc-new").finish()
    q = {"q": '{ resource.service.name = "svc-new" }'}
    with TempoStandin() as tempo, httpx.Client(base_url=tempo.url) as http:
        assert facts["by_id"]["min_s"] <= tempo.id_lag_s <= facts["by_id"]["max_s"]
        assert tempo.search_lag_s == facts["by_search"]["median_s"]
        push(tempo, otlp.traces_request([span]))
        pushed = time.monotonic()
        time.sleep(max(0.0, pushed + facts["by_id"]["max_s"] - time.monotonic()))
        assert _spans(http.get(f"/api/v2/traces/{span.trace_id}"))[0]["name"] == "new"
        assert http.get("/api/search", params=q).json()["traces"] == []
        assert (
            http.get("/api/search", params={"tags": "service.name=svc-new"}).json()["traces"] == []
        )
        time.sleep(max(0.0, pushed + tempo.search_lag_s + 0.1 - time.monotonic()))
        assert len(http.get("/api/search", params=q).json()["traces"]) == 1
