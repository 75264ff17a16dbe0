"""Prometheus: health, scrape targets, queries, and alert rules that can actually fire.

The alerting checks go beyond "rules loaded": a rule whose metrics have no series can never
fire (a dead rule), configured rule files go through `promtool check rules`, and with
--allow-disruption a canary alert is driven pending -> firing -> resolved end to end.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from stackprobe import otlp
from stackprobe.check import CheckContext, CheckFailed, CheckSkipped
from stackprobe.http import client_for, json_body, raise_unless, refuse_auth
from stackprobe.kinds import Kind, Target

LABEL = "prometheus"
UP_TIMEOUT = 10.0  # a Prometheus that just started has not scraped yet
# identifiers in PromQL that are not metric names
_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "inf", "nan", "atan2", "start", "end",
}  # fmt: skip


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

    async def get(self, path: str, **params: Any) -> Any:
        answer = await self.http.get(path, params=params or None)
        refuse_auth(answer)
        body = json_body(answer, label=LABEL)  # errors come in the envelope, with 4xx/5xx
        if not isinstance(body, dict) or body.get("status") != "success":
            said = body.get("error", body) if isinstance(body, dict) else body
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            raise CheckFailed(f"GET {path}: HTTP {answer.status_code} {kind}: {said}")
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


def metric_selectors(expr: str) -> set[str]:
    """Selectors for the metrics an expression reads: bare names and `__name__` matchers.
    Metrics inside absent()/absent_over_time() are left out: such a rule fires exactly when
    they have no series, so their absence does not make it dead."""
    expr = re.sub(r"absent(?:_over_time)?\s*\((?:[^()]|\([^()]*\))*\)", "vector(0)", expr)
    selectors = {
        f'{{__name__{op}"{value}"}}'
        for op, value in re.findall(r'__name__\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"', expr)
    }
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # drop string literals
    stripped = re.sub(r"\{[^}]*\}", "", stripped)  # drop label matchers
    stripped = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped
    )
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # drop ranges
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped):
        following = stripped[match.end() :].lstrip()
        if following.startswith("(") or match.group().lower() in _PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", match.group()):
            continue
        selectors.add(f'{{__name__="{match.group()}"}}')
    return selectors


async def _rule_groups(api: PrometheusAPI) -> list[dict[str, Any]]:
    return list((await api.get("/api/v1/rules"))["groups"])


@check(
    "alerting-thresholds",
    title="every rule group is loaded and every rule evaluates without error",
    name="rules_healthy",
)
async def check_rules_healthy(ctx: CheckContext[PrometheusAPI]) -> str:
    groups = await _rule_groups(ctx.client)
    rules = [(g["name"], r) for g in groups for r in g.get("rules", [])]
    ctx.evidence.update(
        groups=len(groups),
        rules=len(rules),
        alerting=sum(r["type"] == "alerting" for _, r in rules),
    )
    broken = [
        f"{g}/{r.get('name')}: {r.get('health')}: {r.get('lastError')}"
        for g, r in rules
        if r.get("health") != "ok"
    ]
    if broken:
        raise CheckFailed(f"{len(broken)} rule(s) not healthy: " + "; ".join(broken))
    if not rules:
        raise CheckSkipped("no rules are loaded: nothing can alert")
    return f"{len(groups)} group(s), {len(rules)} rule(s), all evaluating"


@check(
    "alerting-thresholds",
    title="no dead alert rule: every metric an alert reads has series",
    severity="warning",
    name="no_dead_rules",
    timeout=20,
)
async def check_dead_rules(ctx: CheckContext[PrometheusAPI]) -> str:
    opts: PrometheusOptions = ctx.options
    canary = opts.canary.alert if opts.canary else None
    groups = await _rule_groups(ctx.client)
    alerts = [
        r
        for g in groups
        for r in g.get("rules", [])
        if r.get("type") == "alerting" and r.get("name") != canary
    ]

    async def none_dead() -> dict[str, list[str]]:
        """Retried briefly: right after a (re)start the targets have not been scraped yet."""
        dead: dict[str, list[str]] = {}
        for rule in alerts:
            for selector in sorted(metric_selectors(rule["query"])):
                if not await ctx.client.query(f"count({selector})"):
                    dead.setdefault(str(rule["name"]), []).append(selector)
        ctx.evidence["dead"] = dead
        if dead:
            lines = [f"{alert} (no series for {', '.join(names)})" for alert, names in dead.items()]
            raise CheckFailed(f"{len(dead)} alert rule(s) can never fire: " + "; ".join(lines))
        return dead

    dead = await ctx.eventually(
        none_dead, timeout=UP_TIMEOUT, interval=1.0, what="series for every alert rule"
    )
    ctx.evidence.update(alert_rules=len(alerts), dead=dead)
    return f"{len(alerts)} alert rule(s), each reads metrics that have series"


@check(
    "alerting-thresholds",
    title="configured rule files pass `promtool check rules`",
    name="promtool_check_rules",
)
async def check_promtool(ctx: CheckContext[PrometheusAPI]) -> str:
    files = ctx.options.rule_files
    if not files:
        raise CheckSkipped("no options.rule_files configured")
    promtool = shutil.which("promtool")
    if promtool is None:
        raise CheckSkipped("promtool is not installed (scripts/install-services prometheus)")
    paths = [str(p if Path(p).is_absolute() else ctx.stack.path.parent / p) for p in files]
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
    ctx.evidence.update(files=paths, promtool=output.splitlines()[-5:])
    if proc.returncode != 0:
        raise CheckFailed(f"promtool check rules failed: {' | '.join(output.splitlines()[-3:])}")
    return f"promtool check rules: {len(paths)} file(s) OK"


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
