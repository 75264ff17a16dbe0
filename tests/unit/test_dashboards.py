"""Grafana's datasource resolution rules as services/dashboards.py applies them (the same
rules the integration tests exercise through the stand-in, here one rule at a time)."""

from __future__ import annotations

from typing import Any

import pytest

from stackprobe.services.dashboards import Panel, Resolver, js_regex, panels, quoted

SOURCES: list[dict[str, Any]] = [
    {"uid": "prom", "name": "Prometheus", "type": "prometheus", "isDefault": True},
    {"uid": "thanos", "name": "Thanos", "type": "prometheus"},
    {"uid": "loki", "name": "Loki", "type": "loki"},
]


def resolver(**model: Any) -> Resolver:
    return Resolver(SOURCES, model)


@pytest.mark.parametrize(
    ("ref", "uid", "builtin"),
    [
        (None, "prom", None),
        ("default", "prom", None),
        ("Thanos", "thanos", None),  # by name, as old dashboards write it
        ({"type": "prometheus", "uid": "thanos"}, "thanos", None),
        ({"type": "loki"}, "loki", None),  # a ref without uid: one of its type
        ({"type": "__expr__", "uid": "__expr__"}, None, "__expr__"),
        ("-100", None, "__expr__"),
        ("-- Grafana --", None, "grafana"),
        ({"type": "datasource", "uid": "grafana"}, None, "grafana"),
        ({"type": "datasource", "uid": "-- Mixed --"}, None, "-- Mixed --"),
        ("-- Dashboard --", None, "-- Dashboard --"),
    ],
)
def test_references_resolve_as_grafana_resolves_them(ref: Any, uid: str | None, builtin: str | None) -> None:  # fmt: skip
    found = resolver().resolve(ref)
    assert found.ok and found.builtin == builtin
    assert (found.datasource or {}).get("uid") == uid


def test_a_non_mixed_panel_runs_every_query_on_its_own_datasource() -> None:
    panel = panels({"panels": [{"id": 1, "datasource": "prom", "targets": [{"refId": "A", "datasource": {"uid": "gone"}}]}]})[0]  # fmt: skip
    [(where, ref, found)] = resolver().panel_refs(panel)
    assert (where, ref, found.ok) == ("panel datasource", "prom", True)
    mixed = panels({"panels": [{"id": 1, "datasource": {"uid": "-- Mixed --"}, "targets": [{"refId": "A", "datasource": {"uid": "gone"}}]}]})[0]  # fmt: skip
    [(where, _, found)] = resolver().panel_refs(mixed)
    assert (where, found.why) == ("query A datasource", "does not exist")


def test_a_panel_without_datasource_takes_its_first_querys() -> None:
    panel = panels({"panels": [{"id": 1, "targets": [{"refId": "A", "datasource": None}, {"refId": "B", "datasource": {"uid": "loki"}}]}]})[0]  # fmt: skip
    [(where, _, found)] = resolver().panel_refs(panel)
    assert where == "query B datasource" and (found.datasource or {}).get("uid") == "loki"


def test_datasource_variables_pick_by_type_regex_and_current_value() -> None:
    def variable(**raw: Any) -> dict[str, Any]:
        return {"templating": {"list": [{"name": "ds", "type": "datasource", "query": "prometheus", **raw}]}}  # fmt: skip

    assert (resolver(**variable()).resolve("$ds").datasource or {})["uid"] == "prom"  # the first
    current = variable(current={"value": "Thanos"})
    assert (resolver(**current).resolve("${ds}").datasource or {})["uid"] == "thanos"
    regex = variable(regex="/^than/i", current={"value": "prom"})  # current not offered: first
    assert (resolver(**regex).resolve("$ds").datasource or {})["uid"] == "thanos"
    assert (
        resolver(**regex).resolve("[[ds]]").why == "does not exist"
    )  # only $... is a variable there
    nothing = resolver(**variable(regex="influx")).resolve("$ds")
    assert nothing.why == "is variable $ds (datasources of type 'prometheus', regex influx), which has no datasource to pick"  # fmt: skip


def test_an_unfilled_input_and_an_unknown_variable_are_not_found() -> None:
    inputs = {"__inputs": [{"name": "DS_PROM", "type": "datasource", "pluginId": "prometheus"}]}
    assert (resolver(**inputs).resolve("${DS_PROM}").why or "").startswith("was not found: the dashboard was provisioned without its inputs filled (__inputs DS_PROM")  # fmt: skip
    assert resolver().resolve("$nope").why == "was not found: the dashboard has no variable nope"


def test_query_text_gets_current_values_multi_values_as_a_regex() -> None:
    found = resolver(templating={"list": [
        {"name": "job", "type": "query", "multi": True, "current": {"value": ["api", "db.1"]}},
        {"name": "env", "type": "custom", "current": {"value": "prod"}},
        {"name": "all", "type": "query", "includeAll": True, "allValue": ".+", "current": {"value": ["$__all"]}},
    ]})  # fmt: skip
    assert found.interpolate('up{job=~"$job",env="${env}",x=~"[[all]]"}', regex=True) == 'up{job=~"(api|db\\.1)",env="prod",x=~".+"}'  # fmt: skip
    assert found.interpolate("$unknown and $__rate_interval") == "$unknown and $__rate_interval"


def test_layouts_old_and_new_give_the_same_panels_and_titles_stay_as_written() -> None:
    old = panels({"rows": [{"panels": [{"id": 1, "title": "A", "targets": []}]}, {"panels": [{"id": 2, "type": "graph"}]}]})  # fmt: skip
    new = panels({"panels": [{"id": 9, "type": "row", "collapsed": True, "panels": [{"id": 1, "title": "A"}, {"id": 2, "type": "graph"}]}]})  # fmt: skip
    assert [p.id for p in old] == [p.id for p in new] == [1, 2]
    assert [p.label for p in new] == ["panel 1 'A'", "panel 2 (graph, untitled)"]
    assert quoted("CPU  busy\t(%)\n") == "'CPU  busy\\t(%)\\n'"
    assert isinstance(new[0], Panel)


def test_grafana_regexes() -> None:
    assert js_regex("prom.*").fullmatch("prometheus") and not js_regex("prom").search("prometheus")
    assert js_regex("/^PROM/i").search("prometheus")
    with pytest.raises(ValueError):
        js_regex("/unclosed")
