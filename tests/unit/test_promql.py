"""What a PromQL expression needs to return a series (services/promql.py), as the rules API
serves expressions: numbers in every notation, durations, offsets, `@`, subqueries, `__name__`
regexes, vector matching, and the constructs built to fire on absence."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stackprobe.services.promql import Matcher, Selector, analyse, label_name


def selectors(expr: str) -> set[str]:
    analysis = analyse(expr)
    assert analysis.error is None, analysis.error
    return {str(s) for s in analysis.need.selectors()}


@pytest.mark.parametrize(
    ("expr", "needed"),
    [
        # numbers, durations and offsets are never metric names (the old "e", "w", "h", "m")
        ("x > 1e+07", {"x"}),
        ("x > 1.23456789012e+11", {"x"}),
        ("x > 0x1F and x < -Inf or x != NaN", {"x"}),
        ("rate(x[5m] offset 1w) > 0.0005", {"x"}),
        ("rate(x[1h30m] offset 2h) > 1e-09", {"x"}),
        ("x offset 10m > .5", {"x"}),
        ("x @ 1609746000.000 > 31", {"x"}),
        ("x @ start() > 1 and y @ end() offset 1m > 2", {"x", "y"}),
        ("max_over_time(rate(x[5m])[30m:1m]) > 1", {"x"}),
        ("rate(x[5m])[30m:] offset 5m", {"x"}),
        ('{__name__=~"job:.*",env="prod"} > 1.5', {'{__name__=~"job:.*",env="prod"}'}),
        ('{__name__="up",job="a"} == 0', {'up{job="a"}'}),
        ('label_replace(up, "host", "$1", "instance", "(.*):\\\\d+") == 0', {"up"}),
        ("a * on (instance) group_left (nodename) b > 1", {"a", "b"}),
        ("sum by (code) (a) / ignoring (code) group_left sum(a) > 2", {"a"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) > 1", {"h_bucket"}),
        (
            "rate(h_sum[5m]) / rate(h_count[5m]) > 0.1 and c_total > 0",
            {"h_sum", "h_count", "c_total"},
        ),
        ("holt_winters(x[10m], 0.5, 0.5) > 1", {"x"}),
        ("predict_linear(x[1h], 4 * 3600) < 0", {"x"}),
        ("time() - x > 3600", {"x"}),
        ('topk(5, x{a!~"b|c"}) > 1', {'x{a!~"b|c"}'}),
        # built to fire on absence: nothing is needed
        ('absent(up{job="api"})', set()),
        ("absent_over_time(heartbeat[5m]) or lag_seconds > 30", set()),
        ('(count(x{role="master"}) or vector(0)) < 1', set()),
        ("x == 0 or absent(x)", set()),
        ("vector(1)", set()),
        ("a unless b", {"a"}),
        (
            'ALERTS{alertname="X",alertstate="firing"}',
            {'ALERTS{alertname="X",alertstate="firing"}'},
        ),
    ],
)
def test_what_an_expression_needs(expr: str, needed: set[str]) -> None:
    assert selectors(expr) == needed


def test_the_formula_says_which_selector_makes_an_expression_empty() -> None:
    alive = {"a", "c"}
    need = analyse("(a and b) or (c and d)").need
    assert need.evaluate(lambda s: str(s) in alive) == (False, [Selector("b"), Selector("d")])
    assert analyse("a unless b").need.evaluate(lambda s: str(s) in alive) == (True, [])
    assert analyse("a * b").need.evaluate(lambda s: str(s) in alive)[1] == [Selector("b")]


def test_count_compared_with_zero_needs_nothing_and_is_a_hint() -> None:
    for expr in ("count(x) == 0", "count(up{job='a'}) < 1", "0 == count(x)", "(count(x)) <= 0"):
        analysis = analyse(expr)
        assert analysis.need.op == "always", expr
        assert "count() of no series is no series" in analysis.hints[0]
    assert analyse("count(x) == bool 0").hints == []  # returns 0/1 for each series of count


def test_selectors_render_as_valid_promql_and_keep_quoting() -> None:
    [s] = analyse('x{a="tab\\there \\"q\\" back\\\\slash"} > 0').need.selectors()
    assert s.matchers == (Matcher("a", "=", 'tab\there "q" back\\slash'),)
    assert s.promql() == '{__name__="x",a="tab\\there \\"q\\" back\\\\slash"}'
    assert s.base == Selector("x")
    [m] = analyse("rate(x[1d])").need.selectors()
    assert m.lookback == timedelta(hours=1)  # existence is asked over at most an hour


def test_utf8_names_of_prometheus_3_render_quoted_so_the_query_parses() -> None:
    """Prometheus 3 names (OpenTelemetry's dots) are quoted; a bare `http.method=` would be a
    parse error in every query the dead-rule check sends. Legacy names stay bare for 2.x."""
    [s] = analyse('rate({"http.server.duration_count", "http.method"="GET", job="a"}[5m]) > 1').need.selectors()  # fmt: skip
    assert s.metric == "http.server.duration_count"
    assert s.promql() == '{__name__="http.server.duration_count","http.method"="GET",job="a"}'
    assert str(s) == '{"http.server.duration_count","http.method"="GET",job="a"}'
    assert analyse(f"{s} > 1").error is None and analyse(f"count({s.promql()})").error is None
    assert str(Selector("job:up:sum", (Matcher("job", "=", "a"),))) == 'job:up:sum{job="a"}'
    assert label_name("http.method") == '"http.method"' and label_name("le") == "le"


def test_an_expression_the_parser_cannot_read_is_an_error_not_a_guess() -> None:
    analysis = analyse("sum((")
    assert analysis.error and analysis.need.op == "always"


def test_regex_matchers_are_anchored_like_prometheus() -> None:
    assert Matcher("alertname", "=~", "Watch.*").matches("Watchdog")
    assert not Matcher("alertname", "=~", "dog").matches("Watchdog")
    assert Matcher("alertname", "!=", "X").matches("Y")


def test_a_batch_prometheus_refuses_is_halved_until_the_refused_selector_is_alone() -> None:
    import asyncio
    from typing import Any

    from stackprobe.check import CheckFailed
    from stackprobe.services.prometheus import SeriesProbe

    class FakeApi:
        def __init__(self) -> None:
            self.selector_cache: dict[Selector, bool] = {}
            self.sent: list[str] = []

        async def query_post(self, expr: str) -> list[dict[str, Any]]:
            self.sent.append(expr)
            if "too_many" in expr:
                raise CheckFailed("POST /api/v1/query: HTTP 422 execution: query processing would load too many samples")  # fmt: skip
            found = []
            for part in expr.split(" or "):
                index = part.rsplit('"stackprobe_probe", "', 1)[1].split('"', 1)[0]
                if "present" in part:
                    found.append({"metric": {"stackprobe_probe": index}})
            return found

    names = ["present_a", "missing_b", "too_many_c", "present_d"]
    probe = SeriesProbe(FakeApi())  # type: ignore[arg-type]
    exists = asyncio.run(probe.exist([Selector(n) for n in names]))
    assert {s.metric: ok for s, ok in exists.items()} == {"present_a": True, "missing_b": False, "too_many_c": True, "present_d": True}  # fmt: skip
    assert list(probe.refused) == ['count({__name__="too_many_c"})']
    assert probe.queries == 5  # 4 together, refused; 2 + 2; the refused pair halved again
