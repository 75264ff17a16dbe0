"""Prometheus: health, scrape targets, queries, and alert rules that can actually fire.

The alerting checks go beyond "rules loaded": a rule whose selectors select nothing can never
fire (a dead rule: its metric is missing, or a label matcher selects none of its series); the
expressions are read with a PromQL parser (services/promql.py) and every distinct selector is
asked once, in batches. Configured rule files go through `promtool check rules` (lint findings
are a warning), and with --allow-disruption a canary alert is driven pending -> firing ->
resolved end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from stackprobe import otlp
from stackprobe.check import CheckContext, CheckFailed, CheckSkipped
from stackprobe.http import client_for, hold_http, json_body, raise_unless, refuse_auth
from stackprobe.kinds import Held, Kind, Target
from stackprobe.services import promql

LABEL = "prometheus"
UP_TIMEOUT = 10.0  # a Prometheus that just started has not scraped yet
WARMUP_S = 15.0  # dead-rule answers are retried (up to UP_TIMEOUT) this long after a start
UNKNOWN_WAIT = 8.0  # rules_healthy waits at most this long for rules not evaluated yet
PROBE_BATCH = 40  # selectors asked in one query
PROBE_CHARS = 12000  # ... and at most this much PromQL in one (POSTed) query
PROBE_CONCURRENCY = 4  # queries at once
PROBE_LABEL = "stackprobe_probe"
LISTED = 5  # items a message lists before "and N more"
MESSAGE_CHARS = 700  # the dead-rule listing stops near this length; evidence has all
VALUES_SHOWN = 5  # label values a finding names


class Canary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert: str
    metric: str
    threshold: float


class PrometheusOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_files: list[str] = []
    canary: Canary | None = None


class PrometheusExpectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[str] = []  # scrape jobs that must have an active target


class PrometheusAPI:
    """The documented HTTP API; every answer's envelope is checked, errors quote Prometheus."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        # selectors seen selecting series during this run (one client per service per run)
        self.selector_cache: dict[promql.Selector, bool] = {}
        self.promtool_runs: dict[tuple[str, ...], PromtoolRun] = {}  # rule files -> its answer

    async def get(self, path: str, **params: Any) -> Any:
        return self._data(path, await self.http.get(path, params=params or None))

    async def query_post(self, expr: str) -> list[dict[str, Any]]:
        """An instant query sent as a form (long batched expressions do not fit in a URL)."""
        answer = await self.http.post("/api/v1/query", data={"query": expr})
        return list(self._data("/api/v1/query", answer)["result"])

    def _data(self, path: str, answer: httpx.Response) -> Any:
        refuse_auth(answer)
        body = json_body(answer, label=LABEL)  # errors come in the envelope, with 4xx/5xx
        if not isinstance(body, dict) or body.get("status") != "success":
            said = body.get("error", body) if isinstance(body, dict) else body
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            raise CheckFailed(
                f"{answer.request.method} {path}: HTTP {answer.status_code} {kind}: {said}"
            )
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query", query=expr)
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    async def scalar(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it has no result."""
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None

    async def alerts(self) -> list[dict[str, Any]]:
        return list((await self.get("/api/v1/alerts"))["alerts"])


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[PrometheusAPI]:
    assert target.config.url is not None  # validated: url is required
    async with client_for(target.config) as http:
        yield PrometheusAPI(http)


async def _version(api: PrometheusAPI) -> str | None:
    version = (await api.get("/api/v1/status/buildinfo")).get("version")
    return str(version) if version else None


async def _liveness(api: PrometheusAPI) -> None:
    """Ready, not just healthy: /-/healthy answers during WAL replay, when queries cannot."""
    raise_unless(await api.http.get("/-/ready"), label=LABEL)


async def _watch(api: PrometheusAPI) -> Held:
    """A keep-alive connection held idle after /-/ready (closed by Prometheus when it dies,
    or after its idle timeout, --web.read-timeout: then the monitor re-probes and re-opens)."""
    return await hold_http(api.http, "/-/ready")


KIND: Kind[PrometheusAPI] = Kind(
    name="prometheus",
    description="Prometheus: health, scrape targets, queries, alert rules that can fire",
    capabilities=("health", "scrape-targets", "query", "alerting-thresholds"),
    connect=_connect,
    url_schemes=("http", "https"),
    options_model=PrometheusOptions,
    expectations_model=PrometheusExpectations,
    links={"collector": "otel-collector"},
    traffic_links=("collector",),
    version=_version,
    liveness=_liveness,
    watch=_watch,
)
check = KIND.check


@check("health", title="/-/healthy and /-/ready answer 200; version reported", name="ready")
async def check_ready(ctx: CheckContext[PrometheusAPI]) -> str:
    for path in ("/-/healthy", "/-/ready"):
        started = time.perf_counter()
        answer = await ctx.client.http.get(path)
        refuse_auth(answer)
        if answer.status_code != 200:
            raise CheckFailed(
                f"GET {path}: expected 200, saw {answer.status_code}: {answer.text.strip()[:120]}"
            )
        ctx.evidence[f"{path.strip('/-')}_ms"] = round((time.perf_counter() - started) * 1000, 2)
    build = await ctx.client.get("/api/v1/status/buildinfo")
    ctx.evidence["version"] = build.get("version")
    return f"healthy and ready (Prometheus {build.get('version')})"


@check(
    "scrape-targets",
    title="every active target is up and the expected jobs are scraped",
    name="all_up",
    timeout=20,
)
async def check_targets(ctx: CheckContext[PrometheusAPI]) -> str:
    """Polls briefly: right after a (re)start Prometheus has not discovered or scraped yet."""
    expected_jobs = list(ctx.expectations.jobs)

    async def all_up() -> tuple[int, dict[str, int]]:
        targets = (await ctx.client.get("/api/v1/targets", state="active"))["activeTargets"]
        jobs: dict[str, int] = {}
        down = []
        for t in targets:
            job = t.get("labels", {}).get("job", "?")
            jobs[job] = jobs.get(job, 0) + 1
            if t.get("health") != "up":
                error = t.get("lastError") or "no error text"
                down.append(f"{job} {t.get('scrapeUrl')} ({t.get('health')}: {error})")
        ctx.evidence.update(targets=len(targets), jobs=jobs, down=down)
        missing = [j for j in expected_jobs if j not in jobs]
        if down:
            raise CheckFailed(f"{len(down)} of {len(targets)} targets not up: " + "; ".join(down))
        if missing:
            raise CheckFailed(
                f"expected jobs {missing} (expectations.jobs) have no active target; scraped: {sorted(jobs)}"
            )
        if not targets:
            raise CheckFailed("no active scrape targets")
        return len(targets), jobs

    count, jobs = await ctx.eventually(all_up, timeout=10, interval=0.5, what="all targets up")
    return f"{count} targets up in {len(jobs)} jobs"


@check(
    "query",
    title="instant and range queries evaluate correctly",
    name="instant_and_range",
    timeout=20,
)
async def check_query(ctx: CheckContext[PrometheusAPI]) -> str:
    nonce = random.randint(1, 10**9)
    started = time.perf_counter()
    value = await ctx.client.scalar(f"vector({nonce})")
    ctx.evidence["instant_ms"] = round((time.perf_counter() - started) * 1000, 2)
    if value != nonce:
        raise CheckFailed(f"instant query vector({nonce}): expected {nonce}, saw {value}")
    now = await ctx.client.scalar("time()")
    if now is None or abs(now - time.time()) > 60:
        raise CheckFailed(f"time(): expected about {time.time():.0f}, saw {now}")

    async def scraped() -> list[dict[str, Any]]:
        series = await ctx.client.query("up")
        if not series:
            raise CheckFailed("instant query `up` returned no series: nothing is scraped")
        return series

    up = await ctx.eventually(scraped, timeout=UP_TIMEOUT, interval=0.5, what="`up` series")
    end = time.time()
    started = time.perf_counter()
    data = await ctx.client.get(
        "/api/v1/query_range", query="count(up)", start=end - 60, end=end, step="5s"
    )
    ctx.evidence["range_ms"] = round((time.perf_counter() - started) * 1000, 2)
    if data.get("resultType") != "matrix" or not data["result"] or not data["result"][0]["values"]:
        raise CheckFailed(
            f"range query count(up) over 60 s: expected a matrix with samples, saw {data}"
        )
    samples = len(data["result"][0]["values"])
    ctx.evidence.update(up_series=len(up), range_samples=samples)
    return f"instant {ctx.evidence['instant_ms']} ms, range {ctx.evidence['range_ms']} ms ({samples} samples)"


# --- alerting-thresholds: the rules as Prometheus holds them ----------------------------------


@dataclass
class Rule:
    """One rule as /api/v1/rules serves it, with where it lives (file, group, position)."""

    file: str
    group: str
    index: int
    type: str  # alerting | recording
    name: str
    query: str
    state: str  # alerting rules: inactive | pending | firing
    health: str  # ok | err | unknown
    last_error: str
    labels: dict[str, str]
    interval: float  # the group's evaluation interval, seconds

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.file, self.group, self.index)

    def label(self, twins: bool = False) -> str:
        """The rule's name; with its severity (else position) when its group has a namesake."""
        if not twins:
            return self.name
        severity = self.labels.get("severity")
        return (
            f"{self.name}[severity={severity}]" if severity else f"{self.name}[#{self.index + 1}]"
        )


async def _rules(api: PrometheusAPI) -> list[Rule]:
    groups = (await api.get("/api/v1/rules"))["groups"]
    return [
        Rule(
            file=str(g.get("file", "")),
            group=str(g.get("name", "")),
            index=i,
            type=str(r.get("type", "")),
            name=str(r.get("name", "")),
            query=str(r.get("query", "")),
            state=str(r.get("state", "")),
            health=str(r.get("health", "unknown")),
            last_error=str(r.get("lastError") or ""),
            labels={str(k): str(v) for k, v in (r.get("labels") or {}).items()},
            interval=float(g.get("interval") or 0),
        )
        for g in groups
        for i, r in enumerate(g.get("rules") or [])
    ]


def _twins(rules: list[Rule]) -> set[tuple[str, str, int]]:
    """Rules whose name is used more than once in their group (an alert per severity)."""
    seen: dict[tuple[str, str, str], list[Rule]] = {}
    for r in rules:
        seen.setdefault((r.file, r.group, r.name), []).append(r)
    return {r.key for same in seen.values() if len(same) > 1 for r in same}


@check(
    "alerting-thresholds",
    title="every rule group is loaded and every rule evaluates without error",
    name="rules_healthy",
)
async def check_rules_healthy(ctx: CheckContext[PrometheusAPI]) -> str:
    """`unknown` (not evaluated yet: just started, or a long group interval) is not unhealthy:
    it waits up to one group interval, bounded, then names the rules still unknown."""
    started = time.monotonic()
    rules = await _rules(ctx.client)
    unknown = [r for r in rules if r.health == "unknown"]
    wait = min(max((r.interval for r in unknown), default=0.0) + 1.0, UNKNOWN_WAIT)
    while unknown and time.monotonic() - started < wait:
        await asyncio.sleep(min(0.5, wait))
        rules = await _rules(ctx.client)
        unknown = [r for r in rules if r.health == "unknown"]
    twins = _twins(rules)

    def where(r: Rule) -> str:
        return f"{r.group}/{r.label(r.key in twins)}"

    broken = [r for r in rules if r.health not in ("ok", "unknown")]
    ctx.evidence.update(
        groups=len({(r.file, r.group) for r in rules}),
        rules=len(rules),
        alerting=sum(r.type == "alerting" for r in rules),
        unhealthy=[
            {
                "rule": r.name,
                "group": r.group,
                "file": r.file,
                "health": r.health,
                "error": r.last_error,
            }
            for r in broken
        ],
        not_evaluated_yet=[
            {"rule": r.name, "group": r.group, "file": r.file, "interval_s": r.interval}
            for r in unknown
        ],
    )
    if broken:
        listed = "; ".join(f"{where(r)}: {r.health}: {r.last_error or 'no error text'}" for r in broken[:LISTED])  # fmt: skip
        more = (
            f"; and {len(broken) - LISTED} more (evidence.unhealthy)"
            if len(broken) > LISTED
            else ""
        )
        raise CheckFailed(f"{len(broken)} of {len(rules)} rule(s) not healthy: {listed}{more}")
    if not rules:
        raise CheckSkipped("no rules are loaded: nothing can alert")
    groups = len({(r.file, r.group) for r in rules})
    if unknown:
        slowest = max(unknown, key=lambda r: r.interval)
        return (
            f"{groups} group(s), {len(rules)} rule(s): none failing; {len(unknown)} not evaluated yet "
            f"after {time.monotonic() - started:.1f} s (e.g. {where(slowest)}, group interval {slowest.interval:g} s; evidence.not_evaluated_yet)"
        )
    return f"{groups} group(s), {len(rules)} rule(s), all evaluating"


# --- no dead rules ---------------------------------------------------------------------------


class SeriesProbe:
    """Asks Prometheus which expressions return series: many expressions per query (each
    tagged with label_replace and joined with `or`), a few queries at once, answers that
    found series cached for the run (on the client)."""

    def __init__(self, api: PrometheusAPI) -> None:
        self.api = api
        self.queries = 0
        self.seconds = 0.0
        self.refused: dict[str, str] = {}  # expressions Prometheus would not answer, and why

    async def results(self, exprs: list[str]) -> dict[str, list[dict[str, str]]]:
        """expr -> the label sets of its result (empty: no series)."""
        answers: dict[str, list[dict[str, str]]] = {}
        todo = list(dict.fromkeys(exprs))
        batches: list[list[str]] = [[]]
        size = 0
        for expr in todo:
            if batches[-1] and (len(batches[-1]) >= PROBE_BATCH or size + len(expr) > PROBE_CHARS):
                batches.append([])
                size = 0
            batches[-1].append(expr)
            size += len(expr) + 60
        limit = asyncio.Semaphore(PROBE_CONCURRENCY)

        async def ask(batch: list[str]) -> None:
            tagged = " or ".join(
                f'label_replace(({expr}), "{PROBE_LABEL}", "{i}", "", "")'
                for i, expr in enumerate(batch)
            )
            try:
                async with limit:
                    started = time.perf_counter()
                    try:
                        found = await self.api.query_post(tagged)
                    finally:
                        self.seconds += time.perf_counter() - started
                        self.queries += 1
            except CheckFailed as exc:  # Prometheus refused the batch: halve it
                if len(batch) > 1:
                    half = len(batch) // 2
                    await asyncio.gather(ask(batch[:half]), ask(batch[half:]))
                    return
                self.refused[batch[0]] = str(exc)  # this one expression: never judged on it
                answers[batch[0]] = [{}]
                return
            for expr in batch:
                answers.setdefault(expr, [])
            for series in found:
                metric = dict(series.get("metric") or {})
                index = metric.pop(PROBE_LABEL, None)
                if index is not None and index.isdigit() and int(index) < len(batch):
                    answers[batch[int(index)]].append(metric)

        await asyncio.gather(*(ask(b) for b in batches if b))
        return answers

    async def exist(self, selectors: list[promql.Selector]) -> dict[promql.Selector, bool]:
        """Whether each selector selects a series now (within its lookback)."""
        cache = self.api.selector_cache
        unknown = [s for s in dict.fromkeys(selectors) if s not in cache]
        answers = await self.results([_count(s) for s in unknown])
        for s in unknown:
            if answers.get(_count(s)):
                cache[s] = True  # only "found" is cached: a missing series may appear
        return {s: cache.get(s, False) for s in selectors}


def _count(selector: promql.Selector) -> str:
    if selector.lookback <= promql.DEFAULT_LOOKBACK:
        return f"count({selector.promql()})"
    seconds = int(selector.lookback.total_seconds())
    return f"count(last_over_time({selector.promql()}[{seconds}s]))"


def _values(values: list[str]) -> str:
    shown = ", ".join(promql.quote(v) if v else "(unset)" for v in values[:VALUES_SHOWN])
    return shown + (f" and {len(values) - VALUES_SHOWN} more" if len(values) > VALUES_SHOWN else "")


@dataclass
class Finding:
    """Why one selector selects nothing, for people: the metric, or the matcher and values."""

    selector: str
    reason: str
    metric: str | None = None
    matcher: str | None = None
    values: dict[str, list[str]] = field(default_factory=dict)


class DeadRuleAnalysis:
    """Which alert rules can never fire on this Prometheus, and why (see services/promql.py)."""

    def __init__(self, rules: list[Rule], probe: SeriesProbe, skip: set[str]) -> None:
        self.rules = rules
        self.probe = probe
        self.analyses = {r.key: promql.analyse(r.query) for r in rules}
        self.alerts = [r for r in rules if r.type == "alerting" and r.name not in skip]
        self.alert_names = {r.name for r in rules if r.type == "alerting"}
        self.recorded: dict[str, list[Rule]] = {}
        for r in rules:
            if r.type == "recording":
                self.recorded.setdefault(r.name, []).append(r)
        self.exists: dict[promql.Selector, bool] = {}
        self.diagnosed: dict[promql.Selector, Finding] = {}

    def selectors(self, rules: list[Rule]) -> list[promql.Selector]:
        found = [
            s
            for r in rules
            for s in self.analyses[r.key].need.selectors()
            if s.metric not in promql.GENERATED_METRICS
        ]
        return list(dict.fromkeys(found))

    def recorded_bases(self, selectors: list[promql.Selector]) -> list[promql.Selector]:
        """The bare metric of each selector of a recorded metric with label matchers: when the
        recording rule's series exist but none has the labels asked, the selector is dead
        whatever the recording rule can return (`job:up:sum{job="nope"}`)."""
        found = [s.base for s in selectors if s.metric in self.recorded and s.label_matchers]
        return list(dict.fromkeys(found))

    async def measure(self, selectors: list[promql.Selector]) -> None:
        self.exists.update(await self.probe.exist(selectors))

    def _alert_selected(self, selector: promql.Selector) -> bool:
        """ALERTS{alertname=...}: written by a loaded alerting rule when it is pending/firing."""
        names = [m for m in selector.matchers if m.label == "alertname"]
        return any(all(m.matches(n) for m in names) for n in self.alert_names)

    def alive(self, selector: promql.Selector, visiting: frozenset[str] = frozenset()) -> bool:
        if selector.metric in promql.GENERATED_METRICS:
            return self._alert_selected(selector)
        if self.exists.get(selector):
            return True
        metric = selector.metric
        if metric in self.recorded and not self.exists.get(selector.base):
            if metric in visiting:
                return True  # a loop of recording rules: not this check's to judge
            return any(self.rule_alive(r, visiting | {metric}) for r in self.recorded[metric])
        return False

    def rule_alive(self, rule: Rule, visiting: frozenset[str] = frozenset()) -> bool:
        if rule.state in ("pending", "firing"):
            return True  # Prometheus shows it firing: never dead
        analysis = self.analyses[rule.key]
        if analysis.error:
            return True  # not read: never called dead on a guess
        return analysis.need.evaluate(lambda s: self.alive(s, visiting))[0]

    def dead(self) -> list[tuple[Rule, list[promql.Selector]]]:
        found = []
        for rule in self.alerts:
            if self.rule_alive(rule):
                continue
            _, culprits = self.analyses[rule.key].need.evaluate(self.alive)
            found.append((rule, culprits))
        return found

    async def diagnose(self, selectors: list[promql.Selector]) -> None:
        """For each selector that selects nothing: does its metric exist, which matcher selects
        nothing, which values its labels do have (one batch of queries for all of them)."""
        bases = [s.base for s in selectors if s.base.metric or s.base.matchers]
        singles = [
            promql.Selector(s.metric, (*s.base.matchers, m))
            for s in selectors
            for m in s.label_matchers
        ]
        await self.measure([*bases, *singles])
        value_exprs = {
            (s.base, m.label): f"count by ({promql.label_name(m.label)}) ({s.base.promql()})"
            for s in selectors
            if s.base.metric or s.base.matchers
            for m in s.label_matchers
        }
        answers = await self.probe.results(list(value_exprs.values()))
        values = {
            key: sorted({series.get(key[1], "") for series in answers.get(expr, [])})
            for key, expr in value_exprs.items()
        }
        for s in selectors:
            self.diagnosed[s] = self._finding(s, values)

    def _finding(self, s: promql.Selector, values: dict[tuple[promql.Selector, str], list[str]]) -> Finding:  # fmt: skip
        if s.metric in promql.GENERATED_METRICS:
            names = [m for m in s.matchers if m.label == "alertname"]
            if len(names) == 1 and names[0].op == "=":
                said = f"no alerting rule named {promql.quote(names[0].value)} is loaded"
            else:
                said = f"no loaded alerting rule matches {', '.join(map(str, names)) or 'it'}"
            return Finding(str(s), f"{s}: {said}", metric=s.metric)
        has_base = bool(s.base.metric or s.base.matchers)
        if not has_base or not self.exists.get(s.base):
            if s.metric in self.recorded:
                producers = ", ".join(f"{r.group}/{r.name}" for r in self.recorded[s.metric])
                return Finding(str(s), f"{s.metric} is recorded by {producers}, which can return nothing", metric=s.metric)  # fmt: skip
            if s.metric:
                return Finding(str(s), f"no series for metric {s.metric}", metric=s.metric)
            return Finding(str(s), f"no series match {s}")
        seen = {m.label: values.get((s.base, m.label), []) for m in s.label_matchers}
        empty = [
            m for m in s.label_matchers
            if not self.exists.get(promql.Selector(s.metric, (*s.base.matchers, m)))
        ]  # fmt: skip
        if empty:
            parts = [
                _float_twin_hint(m, seen[m.label])
                or (f"{m} selects nothing ({promql.label_name(m.label)} has {_values(seen[m.label])})" if any(seen[m.label])
                    else f"{m} selects nothing (no {s.base} series has label {promql.label_name(m.label)})")
                for m in empty
            ]  # fmt: skip
            return Finding(str(s), f"{s}: " + "; ".join(parts), metric=s.metric, matcher=", ".join(str(m) for m in empty), values=seen)  # fmt: skip
        together = ", ".join(str(m) for m in s.label_matchers)
        return Finding(str(s), f"{s}: {together} each select series, but no series has them all", metric=s.metric, matcher=together, values=seen)  # fmt: skip


FLOAT_LABELS = ("le", "quantile")  # Prometheus 3 writes these as floats: le="1" is le="1.0"


def _float_twin_hint(m: promql.Matcher, values: list[str]) -> str | None:
    """`le="1"` written for 2.x on a Prometheus 3, which stores classic histogram buckets and
    summary quantiles normalised to floats (`le="1.0"`): say so, with the value it stores."""
    if m.label not in FLOAT_LABELS or m.op != "=":
        return None
    try:
        wanted = float(m.value)
    except ValueError:
        return None
    for value in values:
        with contextlib.suppress(ValueError):
            if value != m.value and float(value) == wanted:
                return (
                    f"{m} selects nothing: this Prometheus stores {m.label}={promql.quote(value)} "
                    f"(3.x normalises {m.label} to a float)"
                )
    return None


async def _warming(api: PrometheusAPI) -> bool:
    """Right after a (re)start series are still missing: up less than WARMUP_S, or a target
    never scraped yet."""
    info = await api.get("/api/v1/status/runtimeinfo")
    started = re.sub(r"(\.\d{6})\d+", r"\1", str(info.get("startTime") or ""))  # Go's ns
    try:
        uptime = time.time() - datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    except ValueError:
        uptime = WARMUP_S
    if uptime < WARMUP_S:
        return True
    targets = (await api.get("/api/v1/targets", state="active"))["activeTargets"]
    return any(t.get("health") == "unknown" for t in targets)


def _dead_report(
    dead: list[tuple[Rule, list[promql.Selector]]], analysis: DeadRuleAnalysis, twins: set[tuple[str, str, int]]
) -> tuple[list[dict[str, Any]], str]:  # fmt: skip
    """(the full list for evidence, the one-line summary grouped by file and group)."""
    entries = []
    by_place: dict[tuple[str, str], list[str]] = {}
    for rule, culprits in dead:
        findings = [analysis.diagnosed.get(s) or Finding(str(s), f"no series match {s}") for s in culprits]  # fmt: skip
        entries.append(
            {
                "rule": rule.name,
                "group": rule.group,
                "file": rule.file,
                "labels": rule.labels,
                "expr": rule.query,
                "missing": [vars(f) for f in findings],
            }
        )
        reasons = "; ".join(f.reason for f in findings) or "its expression can return nothing"
        by_place.setdefault((rule.file, rule.group), []).append(f"{rule.label(rule.key in twins)} ({reasons})")  # fmt: skip
    places: list[str] = []
    budget = MESSAGE_CHARS
    shown = 0
    for (file, group), items in by_place.items():
        listed: list[str] = []
        for item in items:
            if shown and budget - len(item) < 0:
                break
            listed.append(item)
            budget -= len(item)
            shown += 1
        if listed:
            places.append(f"{Path(file).name or file} › {group}: " + "; ".join(listed))
    more = f"; and {len(dead) - shown} more" if shown < len(dead) else ""
    return entries, " | ".join(places) + more + " (evidence.dead)"


@check(
    "alerting-thresholds",
    title="no dead alert rule: every series an alert needs to fire has a selector that selects something",
    severity="warning",
    name="no_dead_rules",
    timeout=20,
)
async def check_dead_rules(ctx: CheckContext[PrometheusAPI]) -> str:
    opts: PrometheusOptions = ctx.options
    started = time.monotonic()
    rules = await _rules(ctx.client)
    probe = SeriesProbe(ctx.client)
    analysis = DeadRuleAnalysis(rules, probe, {opts.canary.alert} if opts.canary else set())
    unparsed = [
        {"rule": r.name, "group": r.group, "file": r.file, "error": analysis.analyses[r.key].error}
        for r in rules if analysis.analyses[r.key].error
    ]  # fmt: skip
    hints = [
        {"rule": r.name, "group": r.group, "file": r.file, "hint": h}
        for r in analysis.alerts for h in analysis.analyses[r.key].hints
    ]  # fmt: skip
    selectors = analysis.selectors(rules)
    summary: dict[str, Any] = {
        "alert_rules": len(analysis.alerts),
        "recording_rules": sum(r.type == "recording" for r in rules),
        "firing_or_pending": sum(r.state in ("pending", "firing") for r in analysis.alerts),
        "not_parsed": len(unparsed),
        "selectors": len(selectors),
    }
    ctx.evidence.update(summary=summary, not_parsed=unparsed, never_fires=hints)
    measured = list(dict.fromkeys([*selectors, *analysis.recorded_bases(selectors)]))
    await analysis.measure(measured)
    passes = 1
    if analysis.dead() and await _warming(ctx.client):
        while analysis.dead() and time.monotonic() - started < UP_TIMEOUT:
            await asyncio.sleep(1.0)
            await analysis.measure([s for s in measured if not analysis.exists.get(s)])
            passes += 1
    dead = analysis.dead()
    await analysis.diagnose(list(dict.fromkeys(s for _, culprits in dead for s in culprits)))
    entries, listing = _dead_report(dead, analysis, _twins(rules))
    summary.update(
        dead=len(dead),
        selecting_nothing=sum(not analysis.exists.get(s) for s in selectors),
        passes=passes,
        queries=probe.queries,
        query_s=round(probe.seconds, 3),
        seconds=round(time.monotonic() - started, 3),
    )
    ctx.evidence.update(dead=entries, not_asked=probe.refused)
    notes = ""
    if unparsed:
        notes += f"; {len(unparsed)} rule(s) not parsed (evidence.not_parsed)"
    if hints:
        notes += f"; {len(hints)} count()==0 test(s) never fire (evidence.never_fires)"
    if dead:
        places = {(r.file, r.group) for r, _ in dead}
        files = {r.file for r, _ in dead}
        raise CheckFailed(
            f"{len(dead)} of {len(analysis.alerts)} alert rule(s) can never fire, in "
            f"{len(places)} group(s) of {len(files)} file(s): {listing}{notes}"
        )
    return (
        f"{len(analysis.alerts)} alert rule(s) can fire: {len(selectors)} selector(s) checked in "
        f"{probe.queries} quer(y/ies){notes}"
    )


# --- promtool --------------------------------------------------------------------------------


@dataclass
class PromtoolRun:
    files: list[str]
    code: int
    output: str

    @property
    def lint(self) -> list[str]:
        """promtool's lint findings (it exits 0 on them unless --lint-fatal)."""
        lines = self.output.splitlines()
        found = []
        for i, line in enumerate(lines):
            if line.startswith("lint error"):
                detail = [x.strip() for x in lines[i + 1 : i + 4] if x.strip() and not x.startswith(("lint error", "Checking", "  SUCCESS", "  FAILED"))]  # fmt: skip
                found.append(" ".join([line.strip(), *detail]))
        return found


async def _promtool(ctx: CheckContext[PrometheusAPI]) -> PromtoolRun:
    files = ctx.options.rule_files
    if not files:
        raise CheckSkipped("no options.rule_files configured")
    promtool = shutil.which("promtool")
    if promtool is None:
        raise CheckSkipped("promtool is not installed (scripts/install-services prometheus)")
    paths = [str(p if Path(p).is_absolute() else ctx.stack.path.parent / p) for p in files]
    ran = ctx.client.promtool_runs.get(tuple(paths))
    if ran is not None:  # the other promtool check of this run read the same files
        ctx.evidence.update(files=paths, promtool=ran.output.splitlines()[-8:], lint=ran.lint)
        return ran
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "rules",
        *paths,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )

    def stop() -> None:
        if proc.returncode is None:
            proc.kill()

    ctx.cleanup(stop, "stop promtool")
    output = (await proc.communicate())[0].decode(errors="replace").strip()
    run = PromtoolRun(paths, proc.returncode or 0, output)
    ctx.client.promtool_runs[tuple(paths)] = run
    ctx.evidence.update(files=paths, promtool=output.splitlines()[-8:], lint=run.lint)
    return run


@check(
    "alerting-thresholds",
    title="configured rule files pass `promtool check rules`",
    name="promtool_check_rules",
)
async def check_promtool(ctx: CheckContext[PrometheusAPI]) -> str:
    run = await _promtool(ctx)
    if run.code != 0:
        failed = [line.strip() for line in run.output.splitlines() if line.strip() and not line.startswith("Checking")]  # fmt: skip
        raise CheckFailed(f"promtool check rules failed: {' | '.join(failed[-3:])}")
    lint = f"; {len(run.lint)} lint finding(s) (see promtool_lint)" if run.lint else ""
    return f"promtool check rules: {len(run.files)} file(s) valid{lint}"


@check(
    "alerting-thresholds",
    title="configured rule files have no promtool lint findings (duplicate rules)",
    severity="warning",
    name="promtool_lint",
)
async def check_promtool_lint(ctx: CheckContext[PrometheusAPI]) -> str:
    run = await _promtool(ctx)
    if run.code != 0:
        raise CheckSkipped("promtool check rules fails (see promtool_check_rules): no lint to read")
    if run.lint:
        raise CheckFailed(f"promtool reports {len(run.lint)} lint finding(s) (it still exits 0): {'; '.join(run.lint[:LISTED])}")  # fmt: skip
    return f"promtool lint: {len(run.files)} file(s), no findings"


@check(
    "alerting-thresholds",
    title="the canary alert goes pending -> firing -> resolved when its metric crosses the threshold",
    name="canary_fires",
    timeout=90,  # pending 20 s + firing 30 s + resolved 30 s at most
    disruptive=True,  # a firing alert can page someone
)
async def check_canary(ctx: CheckContext[PrometheusAPI]) -> str:
    opts: PrometheusOptions = ctx.options
    if opts.canary is None:
        raise CheckSkipped("no options.canary (alert, metric, threshold) configured")
    collector = ctx.stack.link(ctx.service_name, "collector")
    if not collector or not ctx.stack.service(collector).endpoints.get("otlp_http"):
        raise CheckSkipped(
            "no collector with endpoints.otlp_http linked: cannot push the canary metric"
        )
    otlp_url = ctx.stack.service(collector).endpoints["otlp_http"]
    canary = opts.canary

    async def push(value: float) -> None:
        request = otlp.gauge_request(
            canary.metric, value, {"stackprobe_run": ctx.run_id}, "stackprobe-canary"
        )
        await otlp.export_http(otlp_url, "metrics", request)

    async def lower() -> None:
        await push(canary.threshold - 1)

    ctx.cleanup(lower, "lower the canary metric")
    started = time.monotonic()
    seen: dict[str, float] = {}

    async def state(wanted: str | None) -> None:
        await push(canary.threshold + 1 if wanted != "inactive" else canary.threshold - 1)
        states = {
            str(a.get("state"))
            for a in await ctx.client.alerts()
            if a["labels"].get("alertname") == canary.alert
        }
        for s in states:
            seen.setdefault(s, round(time.monotonic() - started, 2))
        if wanted == "inactive":
            if states:
                raise CheckFailed(f"alert {canary.alert} still {sorted(states)}")
        elif wanted == "pending" and "firing" in states:
            return  # pending lasted less than a poll; `seen` shows it was skipped
        elif wanted not in states:
            raise CheckFailed(
                f"alert {canary.alert} states {sorted(states) or ['inactive']}, waiting for {wanted}"
            )

    await ctx.eventually(
        lambda: state("pending"), timeout=20, interval=0.5, what=f"{canary.alert} pending"
    )
    await ctx.eventually(
        lambda: state("firing"), timeout=30, interval=0.5, what=f"{canary.alert} firing"
    )
    fired = time.monotonic()
    await ctx.eventually(
        lambda: state("inactive"), timeout=30, interval=0.5, what=f"{canary.alert} resolved"
    )
    seen["resolved"] = round(time.monotonic() - started, 2)
    ctx.evidence.update(
        alert=canary.alert, seconds_since_push=seen, resolve_s=round(time.monotonic() - fired, 2)
    )
    return f"{canary.alert}: pending at {seen.get('pending')} s, firing at {seen.get('firing')} s, resolved at {seen['resolved']} s"  # fmt: skip
