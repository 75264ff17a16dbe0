"""What a PromQL expression needs in order to return anything: its selectors and a formula.

Expressions are read with a real PromQL parser, `promql-parser` (PyPI: Python bindings of the
Rust `promql-parser` crate, which declares compliance with Prometheus 2.45's grammar), never
with regular expressions. It parses what Prometheus's rules API serves (numbers reformatted
as `1e+07`, durations as `1h30m`, `offset 1w`, `@ 1609746000.000`, subqueries, `__name__`
matchers...). Prometheus 2.42 has no parse endpoint and promtool no parse command; a Go helper
built from Prometheus's own parser would need a Go toolchain wherever stackprobe runs, where
this is one wheel in the pip install.

A rule "can fire" when its expression can return a series. The formula says which selectors
must select something for that:

    a and b            both;                     a or b        either;
    a unless b         a (b's absence is the point);
    a <op> b           both (one-to-one matching), a scalar side needs nothing;
    f(v, ...)          its vector and matrix arguments; scalar and string arguments nothing;
    absent(v), absent_over_time(v), vector(s), time()...   nothing: they return a series
                       exactly when their input has none, or always;
    count(v) == 0, count(v) < 1, count(v) <= 0   nothing: written to fire on absence, though
                       count() of no series is no series (reported as a hint, not dead).

Whether a selector selects something is the caller's business (Prometheus is asked).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import promql_parser as pp

# functions that PromQL 2.x has and the parser (tracking 3.x) may not know: name -> types
_LEGACY_FUNCTIONS = {"holt_winters": ([pp.ValueType.Matrix, pp.ValueType.Scalar, pp.ValueType.Scalar], pp.ValueType.Vector)}  # fmt: skip
ABSENCE_FUNCTIONS = frozenset({"absent", "absent_over_time"})
GENERATED_METRICS = frozenset({"ALERTS", "ALERTS_FOR_STATE"})  # written by alerting rules
DEFAULT_LOOKBACK = timedelta(minutes=5)
MAX_LOOKBACK = timedelta(hours=1)  # existence is asked over at most this window


def _register_legacy() -> None:
    for name, (args, returns) in _LEGACY_FUNCTIONS.items():
        with contextlib.suppress(ValueError):  # a parser version that knows it already
            pp.register_extra_functions([pp.Function(name, args, returns)])


_register_legacy()

_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def quote(value: str) -> str:
    """A PromQL string literal (Go's escapes are a superset of JSON's)."""
    return json.dumps(value, ensure_ascii=False)


_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LEGACY_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def label_name(name: str) -> str:
    """A label name as PromQL writes it: bare when legacy, quoted otherwise. Prometheus 3
    accepts any UTF-8 name (OpenTelemetry's `http.method`, `k8s.pod.name`) written quoted;
    a bare dotted name is a parse error there."""
    return name if _LEGACY_NAME.fullmatch(name) else quote(name)


def legacy_metric_name(name: str) -> bool:
    """Whether a metric name can be written bare (`a:b_total`), not only as `{"a.b"}`."""
    return _LEGACY_METRIC.fullmatch(name) is not None


@dataclass(frozen=True, order=True)
class Matcher:
    label: str
    op: str  # =, !=, =~, !~
    value: str

    def __str__(self) -> str:
        return f"{label_name(self.label)}{self.op}{quote(self.value)}"

    def matches(self, value: str) -> bool:
        """Whether a label value satisfies the matcher (RE2 anchored, like Prometheus)."""
        if self.op in ("=", "!="):
            return (value == self.value) == (self.op == "=")
        try:
            found = re.fullmatch(self.value, value) is not None
        except re.error:
            return True  # a regex Python cannot read: never call it dead on that
        return found == (self.op == "=~")


@dataclass(frozen=True, order=True)
class Selector:
    """One series selector: the metric name (when fixed) and its other matchers."""

    metric: str | None
    matchers: tuple[Matcher, ...] = ()
    lookback: timedelta = DEFAULT_LOOKBACK  # the range of a matrix selector, capped

    def promql(self) -> str:
        """Valid PromQL selecting the same series (offset and @ dropped: existence now)."""
        parts = ([f'__name__="{self.metric}"'] if self.metric else []) + [str(m) for m in self.matchers]  # fmt: skip
        return "{" + ",".join(parts) + "}"

    def __str__(self) -> str:
        inner = ",".join(str(m) for m in self.matchers)
        if self.metric and not legacy_metric_name(self.metric):  # 3.x: {"http.server.duration"}
            return "{" + ",".join((quote(self.metric), *(str(m) for m in self.matchers))) + "}"
        if self.metric:
            return f"{self.metric}{{{inner}}}" if inner else self.metric
        return "{" + inner + "}"

    @property
    def label_matchers(self) -> tuple[Matcher, ...]:
        """The matchers other than a `__name__` regex."""
        return tuple(m for m in self.matchers if m.label != "__name__")

    @property
    def base(self) -> Selector:
        """The selector without its label matchers: does the metric exist at all?"""
        return Selector(self.metric, tuple(m for m in self.matchers if m.label == "__name__"))

    def without(self, matcher: Matcher) -> Selector:
        return Selector(self.metric, tuple(m for m in self.matchers if m != matcher), self.lookback)


# --- the formula ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """What must select something for an expression to return a series."""

    op: str  # "always", "sel", "all", "any"
    selector: Selector | None = None
    parts: tuple[Need, ...] = ()

    def selectors(self) -> Iterator[Selector]:
        if self.selector is not None:
            yield self.selector
        for part in self.parts:
            yield from part.selectors()

    def evaluate(self, alive: Callable[[Selector], bool]) -> tuple[bool, list[Selector]]:
        """(can return a series, the selectors that select nothing and are why not)."""
        if self.op == "always":
            return True, []
        if self.op == "sel":
            assert self.selector is not None
            return (True, []) if alive(self.selector) else (False, [self.selector])
        results = [part.evaluate(alive) for part in self.parts]
        culprits = [s for ok, found in results if not ok for s in found]
        if self.op == "all":
            return all(ok for ok, _ in results), list(dict.fromkeys(culprits))
        if any(ok for ok, _ in results):  # "any"
            return True, []
        return False, list(dict.fromkeys(culprits))


ALWAYS = Need("always")


def _all(parts: list[Need]) -> Need:
    kept = tuple(dict.fromkeys(p for p in parts if p.op != "always"))
    if not kept:
        return ALWAYS
    return kept[0] if len(kept) == 1 else Need("all", parts=kept)


def _any(parts: list[Need]) -> Need:
    if any(p.op == "always" for p in parts):
        return ALWAYS
    kept = tuple(dict.fromkeys(parts))
    return kept[0] if len(kept) == 1 else Need("any", parts=kept)


@dataclass
class Analysis:
    """One expression read: what it needs, and hints about constructs that never fire."""

    expr: str
    need: Need = ALWAYS
    error: str | None = None  # the parser's message when the expression could not be read
    hints: list[str] = field(default_factory=list)


def analyse(expr: str) -> Analysis:
    """Parse `expr` and build its formula; a parse error is returned, never raised."""
    try:
        tree = pp.parse(expr)
    except (ValueError, RuntimeError) as exc:  # the parser raises ValueError with its message
        return Analysis(expr, error=str(exc) or type(exc).__name__)
    result = Analysis(expr)
    result.need = _need(tree, result)
    return result


def _type(node: Any) -> str:
    """PromQL's static type of a node: scalar, vector, matrix or string."""
    if isinstance(node, pp.NumberLiteral):
        return "scalar"
    if isinstance(node, pp.StringLiteral):
        return "string"
    if isinstance(node, pp.VectorSelector | pp.AggregateExpr):
        return "vector"
    if isinstance(node, pp.MatrixSelector | pp.SubqueryExpr):
        return "matrix"
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr):
        return _type(node.expr)
    if isinstance(node, pp.Call):
        return str(node.func.return_type).rpartition(".")[2].lower()
    if isinstance(node, pp.BinaryExpr):
        sides = {_type(node.lhs), _type(node.rhs)}
        return "vector" if "vector" in sides else "scalar"
    return "vector"


def _selectors(node: Any, lookback: timedelta = DEFAULT_LOOKBACK) -> list[Selector]:
    """The selector(s) of a vector selector node (several with 3.x `or` matcher groups)."""
    groups = [node.matchers.matchers, *(node.matchers.or_matchers or [])]
    found = []
    for group in groups:
        matchers = [Matcher(m.name, _OPS[str(m.op).rpartition(".")[2]], m.value) for m in group]
        metric = node.name
        if metric is None:
            named = [m for m in matchers if m.label == "__name__" and m.op == "="]
            if named:
                metric = named[0].value
                matchers.remove(named[0])
        found.append(Selector(metric, tuple(sorted(matchers)), lookback))
    return found


def _is_count_zero_test(node: Any) -> bool:
    """`count(...) == 0`, `< 1`, `<= 0` (either side), without `bool`: never true."""
    if not isinstance(node, pp.BinaryExpr) or (node.modifier and node.modifier.return_bool):
        return False
    op = str(node.op)
    for agg, number, flipped in ((node.lhs, node.rhs, False), (node.rhs, node.lhs, True)):
        while isinstance(agg, pp.ParenExpr):
            agg = agg.expr
        if isinstance(agg, pp.AggregateExpr) and str(agg.op) == "count" and isinstance(number, pp.NumberLiteral):  # fmt: skip
            wanted = {"==": 0.0, "<": 1.0, "<=": 0.0} if not flipped else {"==": 0.0, ">": 1.0, ">=": 0.0}  # fmt: skip
            return wanted.get(op) == number.val
    return False


def _need(node: Any, result: Analysis) -> Need:
    if isinstance(node, pp.NumberLiteral | pp.StringLiteral):
        return ALWAYS
    if isinstance(node, pp.VectorSelector):
        return _any([Need("sel", s) for s in _selectors(node)])
    if isinstance(node, pp.MatrixSelector):
        lookback = min(max(node.range, DEFAULT_LOOKBACK), MAX_LOOKBACK)
        return _any([Need("sel", s) for s in _selectors(node.vector_selector, lookback)])
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        return _need(node.expr, result)
    if isinstance(node, pp.AggregateExpr):
        return _need(node.expr, result)
    if isinstance(node, pp.Call):
        name = node.func.name
        if name in ABSENCE_FUNCTIONS:
            return ALWAYS
        types = list(node.func.arg_types)
        needs = []
        for i, arg in enumerate(node.args):
            kind = types[min(i, len(types) - 1)] if types else pp.ValueType.Vector
            if kind in (pp.ValueType.Vector, pp.ValueType.Matrix):
                needs.append(_need(arg, result))
        return _all(needs)
    if isinstance(node, pp.BinaryExpr):
        op = str(node.op)
        if op == "or":
            return _any([_need(node.lhs, result), _need(node.rhs, result)])
        if op == "unless":
            return _need(node.lhs, result)
        if _is_count_zero_test(node):
            result.hints.append(
                f"{_short(node)}: count() of no series is no series, never 0, so this never fires; "
                "use absent(...) or (count(...) or vector(0)) == 0"
            )
            return ALWAYS
        sides = [s for s in (node.lhs, node.rhs) if _type(s) != "scalar"]
        return _all([_need(s, result) for s in sides])
    return ALWAYS  # a node this version does not know: never call it dead


def _short(node: Any, limit: int = 80) -> str:
    text = " ".join(str(node).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
