"""Grafana dashboards as Grafana's own frontend reads them: panels and datasource resolution.

A dashboard model is read whatever its schema: `panels` (with collapsed rows' nested
`panels`), the pre-schema-16 `rows: [{panels: [...]}]` layout, and library-panel references
(`libraryPanel: {uid}`, whose model the caller fetches). Which datasource a query runs on
follows Grafana 10/11 (SceneQueryRunner, PanelQueryRunner, DatasourceSrv.getInstanceSettings):

- the panel's datasource runs every query of the panel; a query's own datasource counts only
  when the panel's is `-- Mixed --`;
- a panel without one takes the first query's datasource, else the default datasource;
- a reference is a uid or a name (old dashboards give the name as a string); `default`, null
  or a ref without uid is the default datasource; `-- Grafana --` (uid `grafana`), `-- Mixed --`
  and `-- Dashboard --` are built in; `__expr__` (and `-100`) are server-side expressions;
- a reference starting with `$` is a template variable: a `datasource` variable offers the
  datasources of its plugin type whose name its regex matches, and picks its current value
  (by uid or name) or else the first one. A name no variable has stays as it is and is not
  found: Grafana says "Datasource ${DS_PROMETHEUS} was not found", which is what an export
  provisioned without its `__inputs` filled shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

GRAFANA = "grafana"  # the built-in "-- Grafana --" datasource's uid
MIXED = "-- Mixed --"
DASHBOARD = "-- Dashboard --"
BUILTIN = {GRAFANA: GRAFANA, "-- Grafana --": GRAFANA, MIXED: MIXED, "mixed": MIXED, DASHBOARD: DASHBOARD, "dashboard": DASHBOARD}  # fmt: skip
EXPRESSIONS = ("__expr__", "-100")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]")
ALL = "$__all"


def quoted(text: str) -> str:
    """A title as written, on one line: quotes around it, line breaks and tabs escaped."""
    return "'" + text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + "'"  # fmt: skip


@dataclass
class Panel:
    """A panel that can run queries (rows are not panels), wherever the layout keeps it."""

    id: Any
    title: str
    type: str
    datasource: Any
    targets: list[dict[str, Any]]
    has_datasource_key: bool
    library_uid: str | None = None
    library_name: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """`panel 4 'CPU'`, or `panel 4 (timeseries, untitled)`."""
        ident = f"panel {self.id}" if self.id is not None else "panel without id"
        title = self.title or self.library_name  # a library panel's title is in its model
        return f"{ident} {quoted(title)}" if title else f"{ident} ({self.type or 'no type'}, untitled)"  # fmt: skip


def _panel(item: dict[str, Any]) -> Panel:
    library = item.get("libraryPanel") if isinstance(item.get("libraryPanel"), dict) else None
    targets = [t for t in item.get("targets") or [] if isinstance(t, dict)]
    return Panel(
        id=item.get("id"),
        title=str(item.get("title") or ""),
        type=str(item.get("type") or ""),
        datasource=item.get("datasource"),
        targets=targets,
        has_datasource_key="datasource" in item,
        library_uid=str(library["uid"]) if library and library.get("uid") else None,
        library_name=str(library.get("name") or "") if library else None,
        raw=item,
    )


def panels(model: dict[str, Any]) -> list[Panel]:
    """Every panel of a dashboard model: `panels` (and the panels inside rows, collapsed or
    not), and the old `rows[].panels` layout."""
    found: list[Panel] = []

    def walk(items: Any) -> None:
        for item in items or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "row":
                walk(item.get("panels"))
                continue
            found.append(_panel(item))
            walk(item.get("panels"))  # some exports nest panels in non-row panels too

    walk(model.get("panels"))
    for row in model.get("rows") or []:
        if isinstance(row, dict):
            walk(row.get("panels"))
    return found


def with_library_model(panel: Panel, model: dict[str, Any]) -> Panel:
    """The panel as Grafana shows it: a library panel's stored model, this panel's id."""
    merged = _panel({**model, "id": panel.id, "libraryPanel": panel.raw.get("libraryPanel")})
    merged.title = merged.title or panel.title
    return merged


@dataclass
class Resolved:
    """Where a reference leads: a datasource of the org, a built-in, or nowhere (`why`)."""

    datasource: dict[str, Any] | None = None
    builtin: str | None = None  # grafana, -- Mixed --, -- Dashboard --, __expr__
    why: str | None = None  # set when it does not resolve

    @property
    def ok(self) -> bool:
        return self.why is None


@dataclass
class Variable:
    name: str
    type: str
    raw: dict[str, Any]
    options: list[dict[str, Any]] = field(default_factory=list)  # datasource variables
    chosen: dict[str, Any] | None = None

    def describe(self) -> str:
        regex = self.raw.get("regex")
        return f"${self.name} (datasources of type {self.raw.get('query')!r}{f', regex {regex}' if regex else ''})"  # fmt: skip


def js_regex(text: str) -> re.Pattern[str]:
    """Grafana's stringToJsRegex: `/pattern/flags`, else the text anchored at both ends."""
    if not text.startswith("/"):
        return re.compile(f"^{text}$")
    match = re.fullmatch(r"/(.*?)/([gimsy]*)", text, re.DOTALL)
    if match is None:
        raise ValueError(f"{text!r} is not a valid regular expression")
    flags = (re.IGNORECASE if "i" in match.group(2) else 0) | (re.MULTILINE if "m" in match.group(2) else 0)  # fmt: skip
    return re.compile(match.group(1), flags)


class Resolver:
    """One dashboard's view of the org's datasources and of its template variables."""

    def __init__(self, datasources: list[dict[str, Any]], model: dict[str, Any]) -> None:
        self.datasources = datasources
        self.by_uid = {str(d.get("uid")): d for d in datasources}
        self.by_name = {str(d.get("name")): d for d in datasources}
        self.default = next((d for d in datasources if d.get("isDefault")), None)
        self.inputs = {
            str(i.get("name")): i
            for i in model.get("__inputs") or []
            if isinstance(i, dict) and i.get("name")
        }
        self.variables: dict[str, Variable] = {}
        templating = model.get("templating") if isinstance(model.get("templating"), dict) else {}
        for raw in (templating or {}).get("list") or []:
            if isinstance(raw, dict) and raw.get("name"):
                variable = Variable(str(raw["name"]), str(raw.get("type") or ""), raw)
                if variable.type == "datasource":
                    self._pick(variable)
                self.variables[variable.name] = variable

    def _pick(self, variable: Variable) -> None:
        plugin = str(variable.raw.get("query") or "")
        try:
            pattern = js_regex(self.interpolate(str(variable.raw["regex"]))) if variable.raw.get("regex") else None  # fmt: skip
        except (ValueError, re.error):
            pattern = None
        variable.options = [
            d
            for d in self.datasources
            if plugin
            and d.get("type") == plugin
            and (pattern is None or pattern.search(str(d.get("name"))))
        ]
        current = variable.raw.get("current") if isinstance(variable.raw.get("current"), dict) else {}  # fmt: skip
        values = (current or {}).get("value")
        wanted = [str(v) for v in (values if isinstance(values, list) else [values]) if v is not None]  # fmt: skip
        for value in wanted:
            if value == "default" and self.default in variable.options:
                variable.chosen = self.default
                return
            found = next((d for d in variable.options if value in (d.get("uid"), d.get("name"))), None)  # fmt: skip
            if found is not None:
                variable.chosen = found
                return
        variable.chosen = variable.options[0] if variable.options else None

    def value(self, variable: Variable) -> list[str]:
        """The current value(s) of a variable, as text to put in a query."""
        if variable.type == "datasource":
            return [str(variable.chosen.get("uid"))] if variable.chosen else []
        if variable.type == "constant":
            return [str(variable.raw.get("query") or "")]
        current = variable.raw.get("current") if isinstance(variable.raw.get("current"), dict) else {}  # fmt: skip
        value = (current or {}).get("value", variable.raw.get("query") if variable.type == "textbox" else None)  # fmt: skip
        values = [str(v) for v in (value if isinstance(value, list) else [value]) if v is not None]
        if ALL in values:
            if variable.raw.get("allValue"):
                return [str(variable.raw["allValue"])]
            options = [str(o.get("value")) for o in variable.raw.get("options") or [] if isinstance(o, dict) and o.get("value") not in (None, ALL)]  # fmt: skip
            return options or [".*"]
        return values

    def interpolate(self, text: str, *, regex: bool = False) -> str:
        """Replace $var, ${var}, ${var:fmt} and [[var]] by current values; unknown names stay.
        Several values become `(a|b)` with regex escaping when `regex` (as Prometheus
        queries format multi-value variables), else the first value."""

        def one(match: re.Match[str]) -> str:
            name = next(g for g in match.groups() if g)
            variable = self.variables.get(name)
            if variable is None:
                return match.group(0)
            values = self.value(variable)
            if not values:
                return ""
            if regex and (len(values) > 1 or variable.raw.get("multi") or variable.raw.get("includeAll")):  # fmt: skip
                if len(values) == 1 and values[0] == variable.raw.get("allValue"):
                    return values[0]
                return "(" + "|".join(re.escape(v) for v in values) + ")" if len(values) > 1 else re.escape(values[0])  # fmt: skip
            return values[0]

        return _VARIABLE.sub(one, text)

    def resolve(self, ref: Any) -> Resolved:
        """Where a datasource reference (a dict, a name or uid string, or None) leads."""
        if isinstance(ref, dict):
            uid = ref.get("uid")
            if ref.get("type") == "__expr__" or uid in EXPRESSIONS:
                return Resolved(builtin="__expr__")
            if uid is None or uid == "default":
                by_type = next((d for d in self.datasources if d.get("type") == ref.get("type")), None)  # fmt: skip
                return self._default() if ref.get("type") is None or by_type is None else Resolved(by_type)  # fmt: skip
            name = str(uid)
        elif ref is None or ref == "default":
            return self._default()
        else:
            name = str(ref)
        if name in EXPRESSIONS:
            return Resolved(builtin="__expr__")
        if name in BUILTIN:
            return Resolved(builtin=BUILTIN[name])
        if name.startswith("$"):
            return self._variable(name)
        found = self.by_uid.get(name) or self.by_name.get(name)
        if found is None:
            return Resolved(why="does not exist")
        return Resolved(found)

    def _default(self) -> Resolved:
        if self.default is not None:
            return Resolved(self.default)
        if not self.datasources:
            return Resolved(why="is the default datasource, and Grafana has no datasource")
        return Resolved(builtin=GRAFANA)  # no default set: Grafana falls back to -- Grafana --

    def _variable(self, name: str) -> Resolved:
        match = _VARIABLE.fullmatch(name)
        variable = self.variables.get(next(g for g in match.groups() if g)) if match else None
        if variable is None:
            bare = next((g for g in match.groups() if g), name) if match else name
            if bare in self.inputs:
                plugin = self.inputs[bare].get("pluginId") or self.inputs[bare].get("type")
                return Resolved(why=(
                    f"was not found: the dashboard was provisioned without its inputs filled "
                    f"(__inputs {bare}, a {plugin} datasource: an import replaces it, file provisioning does not)"
                ))  # fmt: skip
            return Resolved(why=f"was not found: the dashboard has no variable {bare}")
        if variable.type != "datasource":
            value = self.interpolate(name)
            found = self.by_uid.get(value) or self.by_name.get(value)
            if found is None:
                return Resolved(why=f"is variable ${variable.name} ({variable.type}), whose value {value!r} is no datasource")  # fmt: skip
            return Resolved(found)
        if variable.chosen is None:
            return Resolved(
                why=f"is variable {variable.describe()}, which has no datasource to pick"
            )
        return Resolved(variable.chosen)

    def panel_datasource(self, panel: Panel) -> tuple[str, Any, Resolved]:
        """(where, reference, resolution) of the datasource a panel runs its queries on: its
        own, else its first query's (SceneQueryRunner's findFirstDatasource), else the default."""
        if panel.datasource is None:
            first = next((t for t in panel.targets if t.get("datasource") is not None), None)
            if first is not None:
                ref = first.get("datasource")
                return f"query {first.get('refId', '?')} datasource", ref, self.resolve(ref)
        return "panel datasource", panel.datasource, self.resolve(panel.datasource)

    def query_datasource(self, panel: Panel, target: dict[str, Any]) -> Resolved:
        """What one query runs on: the panel's datasource, or its own under -- Mixed --."""
        _, _, resolved = self.panel_datasource(panel)
        return self.resolve(target.get("datasource")) if resolved.builtin == MIXED else resolved

    def panel_refs(self, panel: Panel) -> list[tuple[str, Any, Resolved]]:
        """(where, reference, resolution) of what a panel's queries run on, by Grafana's rules:
        the panel's datasource (or its first query's, or the default); each query's own only
        under `-- Mixed --`."""
        if not panel.targets:
            return []  # a panel without queries (text, news...) reads no datasource
        where, ref, resolved = self.panel_datasource(panel)
        if resolved.builtin != MIXED:
            return [(where, ref, resolved)]
        return [
            (
                f"query {t.get('refId', '?')} datasource",
                t.get("datasource"),
                self.resolve(t.get("datasource")),
            )
            for t in panel.targets
        ]


def ref_text(ref: Any) -> str:
    """A reference as written: `'prom'`, `{type prometheus, uid '${DS}'}`, `default`."""
    if isinstance(ref, dict):
        return repr(ref.get("uid")) if ref.get("uid") is not None else f"{{type {ref.get('type')!r}, no uid}}"  # fmt: skip
    return "(none)" if ref is None else repr(str(ref))
