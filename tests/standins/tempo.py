"""A stand-in for Grafana Tempo 2.7.2 (HTTP API and OTLP/HTTP receiver), for tests only.

Why it exists: Tempo cannot be installed on the machines that run these tests (DESIGN.md,
"Services available to tests"), yet the tempo adapter (`stackprobe.services.tempo`) has to be
exercised end to end. DESIGN.md rule 1 allows a stand-in under tests/standins/ for such kinds,
provided its answers follow recorded real responses.

What it is faithful to: the answers of a real Tempo 2.7.2 recorded in
`recordings/tempo-2.7.2/` (a copy of the project's shared recordings; `index.tsv` lists every
file with the request that produced it and its status). Status codes and bodies, errors
included, are reproduced byte for byte where a recording exists, and
`test_tempo_standin.py` re-sends the recorded trace and compares every answer with its
recording. Where the recordings are silent, behaviour follows Tempo's source and is marked
"(source, not recorded)" below. What the stand-in does not implement answers 501 with a body
starting "tempo stand-in:", so it can never be mistaken for a Tempo answer.

It serves what it was sent: spans pushed to the OTLP/HTTP receiver are stored by trace id with
their resource and scope, exactly as the distributor splits a request by trace, and are read
back by id, by search and through the tag endpoints.

Two listeners, like Tempo: `url` (the HTTP API, port 3200 on a real Tempo) and `otlp_url` (the
OTLP/HTTP receiver, 4318). The API does not accept pushes and the receiver serves no queries,
so a client that sends to the wrong one fails here as it would against Tempo.

Modelled behaviour (recorded unless marked):
- `POST /v1/traces` (receiver): OTLP protobuf `ExportTraceServiceRequest` → 200, body a
  serialized empty `ExportTraceServiceResponse`, `application/x-protobuf`.
- `GET /ready` "ready\\n", `/api/echo` "echo\\n", `/api/status/buildinfo` (recorded JSON; the
  `version` can be set), `/status/config` (recorded YAML, including the "GET /status/config"
  line Tempo writes before the document; `block_retention` can be set), `/metrics` (a few
  lines in the recorded format: build info, spans received, traces created).
- `GET /api/traces/<id>`: `{"batches":[...]}` with base64 ids, the OTLP JSON field layout of
  trace-v1.json and an always-present `"status":{}`; `Accept: application/protobuf` gives the
  protobuf form (trace-v1.pb); missing → 404 with an empty body; a non-hex id → 400 `trace IDs
  can only contain hex characters: invalid character 'c' at position N`; more than 32 hex
  digits → 400 (source, not recorded). Shorter ids are left-padded with zeros (source).
- `GET /api/v2/traces/<id>`: `{"trace":{"resourceSpans":[...]}}`; missing → 200 `{"trace":{}}`.
- Batches come back in the order they were received (one per received ResourceSpans and
  trace). A real Tempo may reorder a trace whose parts it had to combine; the recording shows
  one order only, which is the order the recording client pushed, so no sort is modelled.
- `GET /api/search`: `q=` a TraceQL subset (below) → traces with `spanSet`/`spanSets`/
  `serviceStats`; `tags=` logfmt (or bare `key=value` parameters) → traces without span sets;
  both → 400 `invalid request: can't specify tags and q in the same query`; a TraceQL syntax
  error → 400 `invalid TraceQL query: parse error at line L, col C: syntax error: unexpected
  <token>` (the lexer follows Tempo's: tokens shown by their literal, `$end` at the end, the
  column of the offending token; Tempo's ", expecting ..." suffix for four or fewer candidates
  is not modelled). Results newest first, `limit` (20), `spss` (3), `start`/`end` (overlap).
  `traceID` has its leading zeros trimmed and span ids are 16 hex digits (source, not
  recorded: Tempo's TraceIDToHexString/SpanIDToHexString). Root span missing →
  `rootServiceName` "<root span not yet received>" (source). `durationMs` is truncated and
  omitted when 0, as protobuf JSON omits zero values.
- TraceQL subset: `{}` and `{ c && c ... }` where `c` is `span.k`, `resource.k`, `.k` or `name`,
  `=` or `!=`, and a string, integer, float, `true` or `false`. Other valid TraceQL → 501.
  A span set lists the attributes the query named, in query order (the recordings name one).
- `/api/search/tags` (`tagNames`, sorted), `/api/v2/search/tags` (`scopes` resource, span,
  intrinsic; an empty scope is left out, not recorded), `/api/search/tag/<k>/values` (sorted
  strings), `/api/v2/search/tag/<scope.k>/values` (`{type,value}` in first-seen order).
- `metrics.inspectedBytes` is the size of the stored data, not Tempo's figure.

Fault switches (attributes, settable while running): `drop_span` (the last span of every
stored trace is lost: by id, in search and in tags; a one-span trace disappears),
`break_parent` (the first span with a parent gets a corrupted parent id, each byte inverted),
`not_found` (every lookup by id answers as missing: v1 404 empty body, v2 200 `{"trace":{}}`),
`not_ready` (`/ready` answers 503 with `ready-starting.txt`, `Ingester not ready: ingester check
ready failed: waiting for 15s after being ready`, as a real 2.7.2 does for about 15 s after
start; recorded), `block_retention` (the value in `/status/config`), `version` (buildinfo),
`id_lag_s`/`search_lag_s` (spans become visible by id or by search only that long after they
were received). The lags default to what a real 2.7.2 showed (`visibility.json`: by id
0.06-0.40 s, by search 1.6-9.9 s, median about 5 s): ID_LAG_S 0.2 s and SEARCH_LAG_S 5 s, so
tests meet the lag real users meet; a test that needs speed sets them lower explicitly.
"""

from __future__ import annotations

import gzip
import json
import re
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

RECORDINGS = Path(__file__).parent / "recordings" / "tempo-2.7.2"
TENANT = "single-tenant"
ROOT_SPAN_NOT_YET_RECEIVED = "<root span not yet received>"
# the recorded answer of a starting Tempo's /ready, and the recorded visibility lags
NOT_READY = (RECORDINGS / "ready-starting.txt").read_text()
_VISIBILITY = json.loads((RECORDINGS / "visibility.json").read_text())
ID_LAG_S = 0.2  # within the recorded by_id range
SEARCH_LAG_S = float(_VISIBILITY["by_search"]["median_s"])

Value = str | int | float | bool


def recording(name: str) -> bytes:
    """The bytes of one recorded answer."""
    return (RECORDINGS / name).read_bytes()


# --- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


class BadRequest(Exception):
    """Answered 400 with the message as the body (no trailing newline, as Tempo writes it)."""


class NotImplementedByStandin(Exception):
    """Valid for a real Tempo, not implemented here: answered 501 naming the stand-in."""


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}  # fmt: skip
_GO_ESCAPE = re.compile("[<>&\u2028\u2029]")


def go_json(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it (UTF-8, HTML characters escaped)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _GO_ESCAPE.sub(lambda m: _GO_ESCAPES[m.group()], text).encode()


def _json(obj: Any) -> Answer:
    return Answer(200, go_json(obj), "application/json")


def _text(status: int, text: str) -> Answer:
    return Answer(status, text.encode())


PAGE_NOT_FOUND = _text(404, "404 page not found\n")  # Go's default NotFound handler


# --- ids and durations -----------------------------------------------------------------------


def parse_trace_id(text: str) -> bytes:
    """Tempo's HexStringToTraceID: hex only, odd lengths allowed, left-padded to 16 bytes."""
    for i, ch in enumerate(text):
        if ch not in string.hexdigits:
            position = len(text[:i].encode()) + 1  # Go reports the byte offset, 1-based
            raise BadRequest(
                f"trace IDs can only contain hex characters: invalid character '{ch}' at position {position}"
            )
    if len(text) % 2:
        text = "0" + text
    raw = bytes.fromhex(text)
    if len(raw) > 16:
        raise BadRequest("trace IDs can't be larger than 128 bits")
    return raw.rjust(16, b"\0")


def trace_id_hex(raw: bytes) -> str:
    """Tempo's TraceIDToHexString: lowercase hex without leading zeros."""
    return raw.hex().lstrip("0")


def span_id_hex(raw: bytes) -> str:
    """Tempo's SpanIDToHexString: lowercase hex, zero-padded to 16 digits."""
    return raw.hex().lstrip("0").rjust(16, "0")


_GO_DURATION_PART = re.compile(r"(\d+)(d|h|m|s)")


def go_duration(text: str) -> str:
    """A duration ("336h", "14d", "90m") as Go's time.Duration prints it ("336h0m0s")."""
    parts = _GO_DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a whole-second duration: {text!r}")
    seconds = sum(int(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    return f"{m}m{s}s" if m else f"{s}s"


# --- TraceQL (a subset, with Tempo's lexer and error messages) --------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SCOPES = ("span.", "resource.", "parent.", "event.", "link.", "instrumentation.")
_ATTRIBUTE_STARTS = frozenset((".", *_SCOPES))
_INTRINSICS = _words(
    "duration childCount name status statusMessage kind rootName rootServiceName traceDuration "
    "nestedSetLeft nestedSetRight nestedSetParent parent"
)
_STATICS = _words(
    "true false nil ok error unset unspecified internal server client producer consumer"
)
_AGGREGATES = _words(
    "count avg max min sum by coalesce select rate count_over_time quantile_over_time with"
)
_SYMBOLS = _words(
    ", . { } ( ) = != =~ !~ > >= < <= + - / % * ^ && || ! | >> << ~ !> !< !>> !<< &~ &> &< &>> &<<"
)
_TOKENS = _SYMBOLS | _INTRINSICS | _STATICS | _AGGREGATES | frozenset(_SCOPES)
_NOT_ATTRIBUTE_RUNES = frozenset("{}()=~!<>&|^,")
_GO_WHITESPACE = frozenset("\t\n\r ")
_DURATION = re.compile(r"(?:\d+(?:\.\d*)?(?:ns|us|µs|ms|s|m|h|d|w|y))+")
_DURATION_RUNES = frozenset("0123456789.nsumhµdwy")


class TraceQLError(BadRequest):
    pass


@dataclass(frozen=True)
class Token:
    kind: str  # the token's literal (as Tempo shows it in errors), or IDENTIFIER, STRING...
    value: Any
    line: int
    col: int


def _attribute_rune(ch: str) -> bool:
    return ch != "" and not ch.isspace() and ch not in _NOT_ATTRIBUTE_RUNES


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}  # fmt: skip


def _unquote(body: str) -> str:
    """Go's strconv.Unquote of a double-quoted literal's inside; ValueError on a bad escape."""
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1 : i + 2]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc in ("x", "u", "U"):
            size = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + size]
            if len(digits) != size or any(c not in string.hexdigits for c in digits):
                raise ValueError("invalid syntax")
            out.append(chr(int(digits, 16)))
            i += 2 + size
        elif esc and esc in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits):
                raise ValueError("invalid syntax")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ValueError("invalid syntax")
    return "".join(out)


class _Lexer:
    """Tokens the way Tempo's lexer (text/scanner plus its token table) produces them."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.i = 0
        self.line = 1
        self.col = 1  # of the last scanned token: Tempo reports errors there
        self.in_attribute = False

    def error(self, message: str) -> TraceQLError:
        return TraceQLError(f"parse error at line {self.line}, col {self.col}: {message}")

    def _peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.src[j] if j < len(self.src) else ""

    def _token(self, kind: str, value: Any = None) -> Token:
        return Token(kind, value, self.line, self.col)

    def next(self) -> Token:
        if self.in_attribute:
            if not _attribute_rune(self._peek()):
                self.in_attribute = False
                return self._token("END_ATTRIBUTE")
            return self._token("IDENTIFIER", self._attribute_name())
        self._skip_space_and_comments()
        start = self.i
        self.line = self.src.count("\n", 0, start) + 1
        self.col = start - (self.src.rfind("\n", 0, start) + 1) + 1
        ch = self._peek()
        if ch == "":
            return self._token("$end")
        if ch in '"`':
            return self._string(ch)
        if ch.isdigit() or (ch == "." and self._peek(1).isdigit()):
            return self._number()
        if ch.isalpha() or ch == "_":
            while self._peek().isalnum() or self._peek() == "_":
                self.i += 1
        else:
            self.i += 1
        text = self.src[start : self.i]
        extended = text
        while self._peek() and extended + self._peek() in _TOKENS:
            extended += self._peek()
            self.i += 1
        if extended in _TOKENS:
            self.in_attribute = extended in _ATTRIBUTE_STARTS
            return self._token(extended, extended)
        return self._token("IDENTIFIER", text)

    def _skip_space_and_comments(self) -> None:
        while True:
            while self._peek() in _GO_WHITESPACE and self._peek():
                self.i += 1
            if self.src.startswith("//", self.i):
                end = self.src.find("\n", self.i)
                self.i = len(self.src) if end < 0 else end
            elif self.src.startswith("/*", self.i):
                end = self.src.find("*/", self.i + 2)
                self.i = len(self.src) if end < 0 else end + 2
            else:
                return

    def _string(self, quote: str) -> Token:
        j = self.i + 1
        while j < len(self.src) and self.src[j] != quote:
            if quote == '"' and self.src[j] == "\n":
                break
            j += 2 if quote == '"' and self.src[j] == "\\" else 1
        if j >= len(self.src) or self.src[j] != quote:
            raise self.error("literal not terminated")
        body = self.src[self.i + 1 : j]
        self.i = j + 1
        if quote == "`":
            return self._token("STRING", body)
        try:
            return self._token("STRING", _unquote(body))
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def _number(self) -> Token:
        start = self.i
        while self._peek().isdigit():
            self.i += 1
        is_float = False
        if self._peek() == ".":
            is_float = True
            self.i += 1
            while self._peek().isdigit():
                self.i += 1
        if self._peek() in ("e", "E") and (
            self._peek(1).isdigit() or (self._peek(1) in "+-" and self._peek(2).isdigit())
        ):
            is_float = True
            self.i += 2
            while self._peek().isdigit():
                self.i += 1
        number = self.src[start : self.i]
        j = self.i
        while j < len(self.src) and self.src[j] in _DURATION_RUNES:
            j += 1
        if j > self.i and _DURATION.fullmatch(self.src[start:j]):
            self.i = j
            return self._token("DURATION", self.src[start:j])
        return self._token("FLOAT", float(number)) if is_float else self._token("INTEGER", int(number))  # fmt: skip

    def _attribute_name(self) -> str:
        out = []
        while _attribute_rune(self._peek()):
            if self._peek() != '"':
                out.append(self._peek())
                self.i += 1
                continue
            self.i += 1  # a quoted part: "...", only \" and \\ escaped
            while True:
                ch = self._peek()
                if ch == "":
                    raise self.error('unexpected EOF, expecting "')
                self.i += 1
                if ch == '"':
                    break
                if ch == "\\":
                    if self._peek() not in ('"', "\\") or not self._peek():
                        raise self.error("invalid escape sequence")
                    ch = self._peek()
                    self.i += 1
                out.append(ch)
        return "".join(out)


@dataclass(frozen=True)
class Condition:
    """`scope.name op value`; scope is span, resource, "" (either) or intrinsic."""

    scope: str
    name: str
    op: str
    value: Value

    def matches(self, span: SpanView) -> bool:
        if self.scope == "intrinsic":
            actual: Value | None = span.span.name
        else:
            actual = span.lookup(self.scope, self.name)
        if actual is None:
            return False
        if isinstance(actual, bool) != isinstance(self.value, bool):
            return False
        if isinstance(actual, str) != isinstance(self.value, str):
            return False
        return (actual == self.value) == (self.op == "=")


_EXPRESSION_STARTS = (
    _ATTRIBUTE_STARTS
    | _INTRINSICS
    | _STATICS
    | frozenset(("(", "!", "-", "STRING", "INTEGER", "FLOAT", "DURATION"))
)
_COMPARISONS = _words("= != =~ !~ > >= < <=")
_ARITHMETIC = _words("+ - * / % ^")
_SPANSET_OPERATORS = _words("&& || > >> < << ~ !> !< !>> !<< !~ &~ &> &< &>> &<< | with")
_SUBSET = "{ c && ... } with c = span.k, resource.k, .k or name; = or !=; a string, number or bool"


def parse_traceql(query: str) -> list[Condition]:
    """The conditions of a query in the subset; TraceQLError (400) or NotImplementedByStandin."""
    lexer = _Lexer(query)

    def step(supported: frozenset[str] | set[str], valid: frozenset[str] | set[str]) -> Token:
        tok = lexer.next()
        if tok.kind in supported:
            return tok
        if tok.kind in valid:
            raise NotImplementedByStandin(
                f"tempo stand-in: TraceQL {tok.kind} at line {tok.line}, col {tok.col} is not implemented (supported: {_SUBSET})"
            )
        raise TraceQLError(
            f"parse error at line {tok.line}, col {tok.col}: syntax error: unexpected {tok.kind}"
        )

    step({"{"}, {"("})
    conditions: list[Condition] = []
    tok = step({"}", ".", "span.", "resource.", "name"}, _EXPRESSION_STARTS)
    while tok.kind != "}":
        if tok.kind == "name":
            scope, name = "intrinsic", "name"
        else:
            scope = tok.kind.removesuffix(".")
            name = step({"IDENTIFIER"}, set()).value
            step({"END_ATTRIBUTE"}, set())
        op = step({"=", "!="}, _COMPARISONS | _ARITHMETIC | {"&&", "||", "}"}).kind
        value = step({"STRING", "INTEGER", "FLOAT", "true", "false"}, _EXPRESSION_STARTS)
        static = {"true": True, "false": False}.get(value.kind, value.value)
        conditions.append(Condition(scope, name, op, static))
        if step({"&&", "}"}, _COMPARISONS | _ARITHMETIC | {"||"}).kind == "}":
            break
        tok = step({".", "span.", "resource.", "name"}, _EXPRESSION_STARTS)
    step({"$end"}, _SPANSET_OPERATORS)
    return conditions


# --- stored data -----------------------------------------------------------------------------


def _py(value: common_pb2.AnyValue) -> Value | None:
    which = value.WhichOneof("value")
    if which in ("string_value", "int_value", "double_value", "bool_value"):
        result: Value = getattr(value, which)
        return result
    return None


def _attrs(items: Any) -> dict[str, common_pb2.AnyValue]:
    return {kv.key: kv.value for kv in items}


@dataclass
class SpanView:
    """One stored span with its resource, as search and tags see it."""

    span: trace_pb2.Span
    resource: dict[str, common_pb2.AnyValue]
    attributes: dict[str, common_pb2.AnyValue]

    @property
    def service(self) -> str:
        value = self.resource.get("service.name")
        return str(_py(value)) if value is not None else ""

    def any_value(self, scope: str, name: str) -> common_pb2.AnyValue | None:
        if scope in ("span", "") and name in self.attributes:
            return self.attributes[name]
        if scope in ("resource", "") and name in self.resource:
            return self.resource[name]
        return None

    def lookup(self, scope: str, name: str) -> Value | None:
        value = self.any_value(scope, name)
        return _py(value) if value is not None else None


def _views(batches: list[trace_pb2.ResourceSpans]) -> list[SpanView]:
    views: list[SpanView] = []
    for rs in batches:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            views.extend(SpanView(span, resource, _attrs(span.attributes)) for span in ss.spans)
    return views


def _value_type(value: Value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "float" if isinstance(value, float) else "string"


def _value_text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- the stand-in ----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], route: Callable[..., Answer]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.route = route

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is not the stand-in's problem


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end on their own

    def _answer(self) -> None:
        assert isinstance(self.server, _Server)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.route(self.command, self.path, self.headers, body)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TempoStandin:
    """A running stand-in: `with TempoStandin() as tempo: ... tempo.url, tempo.otlp_url`."""

    def __init__(
        self,
        *,
        version: str = "",
        block_retention: str | None = None,
        id_lag_s: float = ID_LAG_S,
        search_lag_s: float = SEARCH_LAG_S,
    ) -> None:
        self.version = version
        self.block_retention = block_retention
        self.id_lag_s = id_lag_s
        self.search_lag_s = search_lag_s
        self.drop_span = False
        self.break_parent = False
        self.not_found = False
        self.not_ready = False
        self.spans_received = 0
        self.traces_created = 0
        self._traces: dict[bytes, list[tuple[trace_pb2.ResourceSpans, float]]] = {}
        self._lock = threading.Lock()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self.url = ""
        self.otlp_url = ""

    # lifecycle

    def start(self) -> TempoStandin:
        for route in (self._api, self._otlp):
            server = _Server(_Handler, route)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        api, otlp = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        self.url, self.otlp_url = api, otlp
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> TempoStandin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # storage

    def ingest(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        """Store a request as the distributor does: one batch per ResourceSpans and trace."""
        now = time.monotonic()
        with self._lock:
            for rs in request.resource_spans:
                per_trace: dict[bytes, trace_pb2.ResourceSpans] = {}
                for ss in rs.scope_spans:
                    scopes: dict[bytes, trace_pb2.ScopeSpans] = {}
                    for span in ss.spans:
                        if not span.trace_id:
                            continue
                        batch = per_trace.get(span.trace_id)
                        if batch is None:
                            batch = per_trace[span.trace_id] = trace_pb2.ResourceSpans(
                                resource=rs.resource, schema_url=rs.schema_url
                            )
                        scope = scopes.get(span.trace_id)
                        if scope is None:
                            scope = scopes[span.trace_id] = batch.scope_spans.add()
                            scope.scope.CopyFrom(ss.scope)
                            scope.schema_url = ss.schema_url
                        stored = scope.spans.add()
                        stored.CopyFrom(span)
                        stored.status.SetInParent()  # Tempo always has a status
                        self.spans_received += 1
                for trace_id, batch in per_trace.items():
                    if trace_id not in self._traces:
                        self._traces[trace_id] = []
                        self.traces_created += 1
                    self._traces[trace_id].append((batch, now))

    def batches(self, trace_id: bytes, lag_s: float = 0.0) -> list[trace_pb2.ResourceSpans]:
        """Copies of a trace's batches as readers see them: lag and faults applied."""
        now = time.monotonic()
        with self._lock:
            stored = list(self._traces.get(trace_id, ()))
        out = []
        for batch, received in stored:
            if now - received >= lag_s:
                copy = trace_pb2.ResourceSpans()
                copy.CopyFrom(batch)
                out.append(copy)
        if self.drop_span:
            for batch in reversed(out):
                scope = next((ss for ss in reversed(batch.scope_spans) if ss.spans), None)
                if scope is not None:
                    del scope.spans[-1]
                    break
            for batch in out:
                kept = [ss for ss in batch.scope_spans if ss.spans]
                del batch.scope_spans[:]
                batch.scope_spans.extend(kept)
            out = [batch for batch in out if batch.scope_spans]
        if self.break_parent:
            for view in _views(out):
                if view.span.parent_span_id:
                    view.span.parent_span_id = bytes(b ^ 0xFF for b in view.span.parent_span_id)
                    break
        return out

    def trace_ids(self) -> list[bytes]:
        with self._lock:
            return list(self._traces)

    # the OTLP/HTTP receiver

    def _otlp(self, method: str, path: str, headers: Any, body: bytes) -> Answer:
        if urlsplit(path).path != "/v1/traces":
            return PAGE_NOT_FOUND
        if method != "POST":
            return _text(405, "405 method not allowed, supported: [POST]")
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type == "application/json":
            return _text(501, "tempo stand-in: OTLP/JSON is not implemented, send protobuf")
        if content_type != "application/x-protobuf":
            return _text(
                415,
                "415 unsupported media type, supported: [application/json, application/x-protobuf]",
            )
        if (headers.get("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        try:
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            return _text(400, f"tempo stand-in: cannot decode ExportTraceServiceRequest: {exc}")
        self.ingest(request)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return Answer(200, reply, "application/x-protobuf")

    # the HTTP API

    def _api(self, method: str, path: str, headers: Any, body: bytes) -> Answer:
        parts = urlsplit(path)
        route, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        params = {k: v[0] for k, v in query.items()}
        try:
            if route == "/ready":
                return _text(503, NOT_READY) if self.not_ready else _text(200, "ready\n")
            if route == "/api/echo":
                return _text(200, "echo\n")
            if route == "/api/status/buildinfo":
                info = json.loads(recording("buildinfo.json"))
                info["version"] = self.version
                return Answer(200, go_json(info) + b"\n", "application/json")
            if route == "/status/config":
                return Answer(200, self.status_config(), "text/plain; charset=utf-8")
            if route == "/metrics":
                return Answer(200, self.metrics().encode(), "text/plain; version=0.0.4")
            if match := re.fullmatch(r"/api/(v2/)?traces/(.*)", route):
                accept = headers.get("Accept") or ""
                return self._trace(unquote(match.group(2)), bool(match.group(1)), accept)
            if route == "/api/search":
                return self._search(params)
            if route in ("/api/search/tags", "/api/v2/search/tags"):
                return self._tags(params.get("scope", ""), v2=route.startswith("/api/v2"))
            if match := re.fullmatch(r"/api/(v2/)?search/tag/(.+)/values", route):
                return self._tag_values(unquote(match.group(2)), v2=bool(match.group(1)))
        except BadRequest as exc:
            return _text(400, str(exc))
        except NotImplementedByStandin as exc:
            return _text(501, str(exc))
        return PAGE_NOT_FOUND

    def status_config(self) -> bytes:
        text = recording("status-config.yaml").decode()
        if self.block_retention is not None:
            value = go_duration(self.block_retention)
            text = re.sub(
                r"(?m)^(\s+block_retention: ).*$", lambda m: m.group(1) + value, text, count=1
            )
        return text.encode()

    def metrics(self) -> str:
        build = (
            f'tempo_build_info{{branch="",goarch="amd64",goos="linux",goversion="go1.23.5",'
            f'revision="unknown",tags="unknown",version="{self.version}"}} 1'
        )
        return (
            f"# TYPE tempo_build_info gauge\n{build}\n"
            "# TYPE tempo_distributor_spans_received_total counter\n"
            f'tempo_distributor_spans_received_total{{tenant="{TENANT}"}} {self.spans_received}\n'
            "# TYPE tempo_ingester_traces_created_total counter\n"
            f'tempo_ingester_traces_created_total{{tenant="{TENANT}"}} {self.traces_created}\n'
        )

    def _trace(self, text_id: str, v2: bool, accept: str) -> Answer:
        trace_id = parse_trace_id(text_id)
        batches = [] if self.not_found else self.batches(trace_id, self.id_lag_s)
        if not batches:
            return _json({"trace": {}}) if v2 else Answer(404)
        data = trace_pb2.TracesData(resource_spans=batches)
        if not v2 and "application/protobuf" in accept:
            return Answer(200, data.SerializeToString(), "application/protobuf")
        resource_spans = json_format.MessageToDict(data)["resourceSpans"]
        return _json({"trace": {"resourceSpans": resource_spans}} if v2 else {"batches": resource_spans})  # fmt: skip

    def _visible(self) -> list[tuple[bytes, list[trace_pb2.ResourceSpans]]]:
        out = []
        for trace_id in self.trace_ids():
            batches = self.batches(trace_id, self.search_lag_s)
            if batches:
                out.append((trace_id, batches))
        return out

    def _search(self, params: dict[str, str]) -> Answer:
        # validation in the order of Tempo's ParseSearchRequest (source)
        start, end = _int_param(params, "start", 0), _int_param(params, "end", 0)
        q, tags_param = params.get("q", ""), params.get("tags", "")
        try:
            conditions = parse_traceql(q) if q else None
        except TraceQLError as exc:
            raise BadRequest(f"invalid TraceQL query: {exc}") from None
        if q and tags_param:
            raise BadRequest("invalid request: can't specify tags and q in the same query")
        tags = _logfmt(tags_param) if tags_param else {}
        if not q and not tags_param and not start and not end:  # bare key=value parameters
            skip = {"limit", "spss", "minDuration", "maxDuration", "start", "end"}
            tags = {k: v for k, v in params.items() if k not in skip and v}
        min_ms = _duration_ms(params, "minDuration")
        max_ms = _duration_ms(params, "maxDuration")
        if min_ms and max_ms and min_ms > max_ms:
            raise BadRequest("invalid maxDuration: must be greater than minDuration")
        limit = _positive(params, "limit", 20)
        spss = _positive(params, "spss", 3)
        if (start or end) and end <= start:
            raise BadRequest(
                f"http parameter start must be before end. received start={start} end={end}"
            )
        found, inspected = [], 0
        visible = self._visible()
        for trace_id, batches in visible:
            inspected += sum(b.ByteSize() for b in batches)
            views = _views(batches)
            first = min(v.span.start_time_unix_nano for v in views)
            last = max(v.span.end_time_unix_nano for v in views)
            duration_ms = (last - first) // 1_000_000
            if start and end and (last < start * 10**9 or first > end * 10**9):
                continue
            if conditions is None:
                if (min_ms and duration_ms < min_ms) or (max_ms and duration_ms > max_ms):
                    continue
                if not any(_tags_match(v, tags) for v in views):
                    continue
                found.append((first, _trace_summary(trace_id, views, first, duration_ms)))
                continue
            matched = [v for v in views if all(c.matches(v) for c in conditions)]
            if matched:
                summary = _trace_summary(trace_id, views, first, duration_ms)
                span_set = {"spans": [_span_entry(v, conditions) for v in matched[:spss]], "matched": len(matched)}  # fmt: skip
                summary.update(spanSet=span_set, spanSets=[span_set])
                summary["serviceStats"] = _service_stats(views)
                found.append((first, summary))
        found.sort(key=lambda item: item[0], reverse=True)
        metrics: dict[str, Any] = {}
        if conditions is None and visible:
            metrics["inspectedTraces"] = len(visible)
        metrics.update(inspectedBytes=str(inspected), completedJobs=1, totalJobs=1)
        return _json({"traces": [summary for _, summary in found[:limit]], "metrics": metrics})

    def _all_views(self) -> list[SpanView]:
        return [view for _, batches in self._visible() for view in _views(batches)]

    def _inspected(self) -> dict[str, str]:
        size = sum(b.ByteSize() for _, batches in self._visible() for b in batches)
        return {"inspectedBytes": str(size)}

    def _tags(self, scope: str, v2: bool) -> Answer:
        if scope not in ("", "none", "all", "resource", "span", "intrinsic"):
            raise BadRequest(f"invalid scope: {scope}")
        views = self._all_views()
        resource = sorted({k for v in views for k in v.resource})
        span = sorted({k for v in views for k in v.attributes})
        intrinsic = _recorded_intrinsics()
        wanted = {"resource": resource, "span": span, "intrinsic": intrinsic}
        if scope in wanted:
            wanted = {scope: wanted[scope]}
        if v2:
            scopes = [{"name": name, "tags": tags} for name, tags in wanted.items() if tags]
            return _json({"scopes": scopes, "metrics": self._inspected()})
        if scope in ("", "none", "all"):
            names = sorted(set(resource) | set(span))
        else:
            names = next(iter(wanted.values()))
        return _json({"tagNames": names, "metrics": self._inspected()})

    def _tag_values(self, tag: str, v2: bool) -> Answer:
        views = self._all_views()
        values: list[Value] = []
        if not v2:
            for view in views:
                found = view.lookup("", tag)
                if found is not None:
                    values.append(found)
            strings = sorted({_value_text(v) for v in values})
            return _json({"tagValues": strings, "metrics": self._inspected()})
        if tag == "name":
            values = [view.span.name for view in views]
        else:
            scope, dot, name = tag.partition(".")
            if not dot or scope not in ("", "span", "resource") or not name:
                raise NotImplementedByStandin(
                    f"tempo stand-in: tag {tag!r} is not implemented (use span.k, resource.k, .k or name)"
                )
            for view in views:
                found = view.lookup(scope, name)
                if found is not None:
                    values.append(found)
        seen: dict[tuple[str, str], None] = {}
        for value in values:
            seen.setdefault((_value_type(value), _value_text(value)), None)
        tag_values = [{"type": t, "value": v} for t, v in seen]
        return _json({"tagValues": tag_values, "metrics": self._inspected()})

    def __repr__(self) -> str:
        return f"TempoStandin(url={self.url!r}, otlp_url={self.otlp_url!r})"


def _recorded_intrinsics() -> list[str]:
    scopes = json.loads(recording("search-tags-v2.json"))["scopes"]
    return list(next(s["tags"] for s in scopes if s["name"] == "intrinsic"))


def _trace_summary(
    trace_id: bytes, views: list[SpanView], first: int, duration_ms: int
) -> dict[str, Any]:
    root = next((v for v in views if not v.span.parent_span_id), None)
    summary: dict[str, Any] = {"traceID": trace_id_hex(trace_id)}
    if root is None:
        summary["rootServiceName"] = ROOT_SPAN_NOT_YET_RECEIVED
    else:
        summary.update(rootServiceName=root.service, rootTraceName=root.span.name)
    summary["startTimeUnixNano"] = str(first)
    if duration_ms:
        summary["durationMs"] = duration_ms
    return summary


def _span_entry(view: SpanView, conditions: list[Condition]) -> dict[str, Any]:
    span = view.span
    entry: dict[str, Any] = {"spanID": span_id_hex(span.span_id)}
    if any(c.scope == "intrinsic" for c in conditions):
        entry["name"] = span.name
    entry["startTimeUnixNano"] = str(span.start_time_unix_nano)
    entry["durationNanos"] = str(span.end_time_unix_nano - span.start_time_unix_nano)
    attributes: dict[str, Any] = {}
    for c in conditions:
        if c.scope != "intrinsic" and c.name not in attributes:
            value = view.any_value(c.scope, c.name)
            if value is not None:
                attributes[c.name] = json_format.MessageToDict(value)
    if attributes:
        entry["attributes"] = [{"key": k, "value": v} for k, v in attributes.items()]
    return entry


def _service_stats(views: list[SpanView]) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = {}
    for view in views:
        entry = stats.setdefault(view.service, {"spanCount": 0})
        entry["spanCount"] += 1
        if view.span.status.code == trace_pb2.Status.STATUS_CODE_ERROR:
            entry["errorCount"] = entry.get("errorCount", 0) + 1
    return dict(sorted(stats.items()))


def _tags_match(view: SpanView, tags: dict[str, str]) -> bool:
    for key, wanted in tags.items():
        value = view.lookup("", key)
        if value is None or _value_text(value) != wanted:
            return False
    return True


_LOGFMT = re.compile(r'\s*([^\s="]+)(?:=("(?:[^"\\]|\\.)*"|[^\s"]*))?')


def _logfmt(text: str) -> dict[str, str]:
    """`k=v k2="v 2"` as Tempo's logfmt decoder reads the `tags` parameter."""
    tags: dict[str, str] = {}
    pos = 0
    while pos < len(text.rstrip()):
        match = _LOGFMT.match(text, pos)
        if not match or match.end() == pos:
            raise BadRequest(f"invalid tags: unexpected '{text[pos]}' at pos {pos + 1}")
        key, value = match.group(1), match.group(2) or ""
        if value.startswith('"'):
            value = json.loads(value)
        if key in tags:
            raise BadRequest(f"invalid tags: tag {key} has been set twice")
        tags[key] = value
        pos = match.end()
    return tags


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    text = params.get(name, "")
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise BadRequest(
            f'invalid {name}: strconv.ParseInt: parsing "{text}": invalid syntax'
        ) from None


def _positive(params: dict[str, str], name: str, default: int) -> int:
    text = params.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(
            f'invalid {name}: strconv.Atoi: parsing "{text}": invalid syntax'
        ) from None
    if value <= 0:
        raise BadRequest(f"invalid {name}: must be a positive number")
    return value


_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def _duration_ms(params: dict[str, str], name: str) -> int:
    text = params.get(name, "")
    if not text:
        return 0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise BadRequest(f'invalid {name}: time: invalid duration "{text}"')
    return int(sum(float(n) * _MS[u] for n, u in parts))
