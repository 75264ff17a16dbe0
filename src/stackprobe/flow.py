"""The end-to-end flow: one synthetic transaction through every configured component, traced
with the OpenTelemetry SDK and W3C trace context across each hop, the way an application's
request crosses them.

    stackprobe flow (this process, service.name stackprobe-flow)
      1 consul      register a probe service instance (TTL check), pass it, discover it
                    through /v1/health/service?passing
      2 http        GET /checkout on the discovered address: the probe service, a process of
                    its own (flow_probe.py, service.name stackprobe-flow-api), continues the
                    trace from the `traceparent` header
      3 redis         ... which reads its key (a miss), writes it with a TTL, reads it (a hit)
      4 celery        ... and enqueues celery.accumulate with the trace context in the message
                    headers; the worker continues the trace (run/celery.accumulate) when it is
                    instrumented (opentelemetry-instrumentation-celery); this process waits
                    for the result
      5 arangodb    a metadata document of the request, one of its task, and an edge between
                    them, read back by traversal (in this process: a user's worker runs only
                    Celery's built-in task)
      6 trace       every span, through the collector, is in the trace store: the expected
                    spans, every service, the parents across the HTTP and Celery hops, no
                    orphan; a missing span is named
      7 prometheus  the span-metrics counter of the probe service rose and an exemplar
                    carries this trace id
      8 grafana     the same trace through Grafana's trace datasource

A hop whose component is not configured is `skipped` with the reason; the first hop that
breaks stops the transaction, and the hops after it are `skipped` ("not reached"). Every
artifact (Consul service ids, Redis keys, Celery task ids and result keys, ArangoDB database,
graph and collections) carries the run prefix and is removed by name.

`FlowRig` holds what flows share within one check (open clients, the probe service process,
the ArangoDB graph); `run_flow` runs one transaction; `open_loop` runs many at a rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped, Outcome
from stackprobe.config import Stack, StackConfig
from stackprobe.errors import ServiceError, outcome_of
from stackprobe.explain import explain
from stackprobe.load.histogram import Histogram
from stackprobe.services.arangodb import ArangoClient, MetadataGraph
from stackprobe.services.celery import CeleryClient
from stackprobe.services.consul import ConsulClient
from stackprobe.services.grafana import GrafanaClient, trace_datasource, trace_through
from stackprobe.services.prometheus import PrometheusAPI
from stackprobe.services.tracestore import StoredSpan, TraceStore
from stackprobe.threads import in_thread
from stackprobe.urls import with_credentials

T = TypeVar("T")

FLOW_SERVICE = "stackprobe-flow"  # service.name of this process's spans
PROBE_SERVICE = "stackprobe-flow-api"  # service.name of the probe service's spans
WORKER_SPAN = "run/celery.accumulate"  # what opentelemetry-instrumentation-celery names it
TASK = "celery.accumulate"
PROPAGATOR = TraceContextTextMapPropagator()
HOPS = ("consul", "http", "redis", "celery", "arangodb", "trace", "prometheus", "grafana")
# role -> the kinds that can play it; a role's service is options.flow.<role>, else derived
# from another service's links, else the only one of its kinds in the stack
ROLES: dict[str, tuple[str, ...]] = {
    "consul": ("consul",),
    "cache": ("redis",),
    "worker": ("celery",),
    "collector": ("otel-collector",),
    "trace_store": ("jaeger", "tempo"),
    "prometheus": ("prometheus",),
    "arangodb": ("arangodb",),
    "grafana": ("grafana",),
}
HOP_ROLE = {"consul": "consul", "redis": "cache", "celery": "worker", "arangodb": "arangodb",
            "trace": "trace_store", "prometheus": "prometheus", "grafana": "grafana"}  # fmt: skip
KEY_TTL_S = 60  # the probe service's cache entries expire even if a killed run cannot delete them
HTTP_TIMEOUT = 10.0
PROBE_START_TIMEOUT = 20.0
PROBE_STOP_TIMEOUT = 5.0
EXPORT_TIMEOUT_S = 3.0
FLUSH_TIMEOUT_MS = 5000
DISCOVER_TIMEOUT = 5.0
GRAFANA_TIMEOUT = 10.0
POLL_INTERVAL = 0.25
DEFAULT_NAMESPACE = "traces_span_metrics"
# the probe service runs this stackprobe, installed or not (a checkout run with PYTHONPATH)
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class FlowOptions(BaseModel):
    """`services.<stack>.options.flow`: which service plays each role, and the flow's bounds."""

    model_config = ConfigDict(extra="forbid")

    consul: str | None = None
    cache: str | None = None
    worker: str | None = None
    collector: str | None = None
    trace_store: str | None = None
    prometheus: str | None = None
    arangodb: str | None = None
    grafana: str | None = None
    grafana_datasource: str | None = None  # uid of Grafana's datasource for the trace store
    host: str = "127.0.0.1"  # where the probe service listens (the address Consul gets)
    celery_timeout: float = Field(default=10.0, gt=0)  # the worker's result
    trace_timeout: float = Field(default=15.0, gt=0)  # every span in the trace store
    worker_span_grace: float = Field(default=8.0, ge=0)  # the worker's span, once ours are in
    metrics_timeout: float = Field(default=20.0, gt=0)  # span metrics and exemplar


# --- roles -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roles:
    """role -> service name, and role -> why no service plays it."""

    names: dict[str, str]
    missing: dict[str, str]


def resolve_roles(stack: Stack, members: Sequence[str], opts: FlowOptions, where: str) -> Roles:
    names: dict[str, str] = {}
    missing: dict[str, str] = {}
    for role, kinds in ROLES.items():
        explicit: str | None = getattr(opts, role)
        if explicit is not None:
            names[role] = explicit
            continue
        derived = _derived(stack, role, names)
        if derived is not None:
            names[role] = derived
            continue
        candidates = [n for n in members if stack.service(n).kind in kinds]
        label = " or ".join(kinds)
        if len(candidates) == 1:
            names[role] = candidates[0]
        elif candidates:
            missing[role] = (
                f"several {label} services ({', '.join(candidates)}): "
                f"name one in {where}.options.flow.{role}"
            )
        else:
            missing[role] = f"no {label} service configured"
    return Roles(names, missing)


def _derived(stack: Stack, role: str, names: dict[str, str]) -> str | None:
    """A role another service's links already name: the collector's trace store and
    Prometheus, the cache's Celery worker pool."""
    via = {"trace_store": ("collector", "trace_store"), "prometheus": ("collector", "prometheus"),
           "worker": ("cache", "celery")}.get(role)  # fmt: skip
    if via is None or via[0] not in names:
        return None
    return stack.link(names[via[0]], via[1])


def config_problems(config: StackConfig, flow: dict[str, Any]) -> list[str]:
    """`options.flow.<role>` must name a service of a kind that plays the role."""
    problems = []
    for role, kinds in ROLES.items():
        name = flow.get(role)
        if not isinstance(name, str):
            continue
        svc = config.services.get(name)
        if svc is None:
            problems.append(f"options.flow.{role}: no service {name!r} in this stack")
        elif svc.kind not in kinds:
            problems.append(
                f"options.flow.{role}: {name!r} is a {svc.kind} service, not {' or '.join(kinds)}"
            )
    return problems


# --- hops ------------------------------------------------------------------------------------


@dataclass
class Hop:
    """One hop of one flow: its status (an Outcome value), latency and what it saw."""

    hop: str
    service: str | None
    status: str = Outcome.SKIPPED.value
    latency_ms: float | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def broken(self) -> bool:
        return self.status in (Outcome.FAILED.value, Outcome.ERROR.value)

    def evidence(self) -> dict[str, Any]:
        return {"hop": self.hop, "service": self.service, "status": self.status,
                "latency_ms": self.latency_ms, "message": self.message, **self.details}  # fmt: skip


class _Skip(Exception):
    """A hop that does not apply (its message says why)."""


@dataclass
class FlowResult:
    index: int
    trace_id: str
    hops: list[Hop]
    duration_ms: float
    missing_spans: list[str] = field(default_factory=list)
    span_count: int = 0

    @property
    def first_broken(self) -> Hop | None:
        return next((h for h in self.hops if h.broken), None)

    @property
    def trace_complete(self) -> bool:
        hop = self.hop("trace")
        return hop.status == Outcome.PASSED.value

    def hop(self, name: str) -> Hop:
        return next(h for h in self.hops if h.hop == name)

    def evidence(self) -> dict[str, Any]:
        broken = self.first_broken
        return {
            "trace_id": self.trace_id,
            "first_broken_hop": broken.hop if broken else None,
            "duration_ms": self.duration_ms,
            "span_count": self.span_count,
            "hops": [h.evidence() for h in self.hops],
        }


class FlowBroken(ServiceError):
    """The flow could not run a hop (outcome `error`): its message names the hop."""


def verdict(result: FlowResult) -> str:
    """The check's outcome for one flow: raise for the first broken hop, else the message."""
    broken = result.first_broken
    if broken is not None:
        text = f"flow broke at the {broken.hop} hop ({broken.service or 'no service'}): {broken.message}"
        if broken.status == Outcome.ERROR.value:
            raise FlowBroken(text)
        raise CheckFailed(text)
    passed = [h for h in result.hops if h.status == Outcome.PASSED.value]
    skipped = [h.hop for h in result.hops if h.status == Outcome.SKIPPED.value]
    tail = f"; skipped {', '.join(skipped)}" if skipped else ""
    complete = (
        f", trace {result.trace_id} complete with {result.span_count} spans"
        if result.trace_complete
        else ""
    )
    return (
        f"{len(passed)} hops passed in {result.duration_ms / 1000:.2f} s "
        f"({', '.join(f'{h.hop} {h.latency_ms:g} ms' for h in passed if h.latency_ms is not None)})"
        f"{complete}{tail}"
    )


# --- this process's spans --------------------------------------------------------------------


class _Recorder(SpanProcessor):
    """Keeps the spans this process ended, to know exactly which ones the store must have."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _Delivery(SpanExporter):
    """The OTLP exporter, remembering what each export returned (where spans were lost)."""

    def __init__(self, inner: SpanExporter, url: str) -> None:
        self.inner, self.url = inner, url
        self.exported = 0
        self.failed = 0
        self.error = ""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - recorded for the trace hop's message
            self.error, result = explain(exc), SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def summary(self) -> str:
        said = f" ({self.error})" if self.error else ""
        lost = f", {self.failed} refused or unreachable{said}" if self.failed else ""
        return f"{self.exported} span(s) of this process accepted by {self.url}{lost}"


def _hex(span_id: int) -> str:
    return f"{span_id:016x}"


@dataclass(frozen=True)
class Expected:
    span_id: str
    name: str
    service: str
    parent: str
    hop: str  # which hop made it, to name a missing span usefully


# --- the rig ---------------------------------------------------------------------------------


class FlowRig:
    """What the flows of one check share: resolved roles, open clients, the probe service
    process, the ArangoDB graph and the Celery consumer check. `start()` sets them up (each
    part that cannot be set up becomes its hop's cause); `ctx` cleanups take them down."""

    def __init__(self, ctx: CheckContext[Any], members: Sequence[str], opts: FlowOptions) -> None:
        self.ctx = ctx
        self.opts = opts
        self.roles = resolve_roles(ctx.stack, members, opts, f"services.{ctx.service_name}")
        self.clients: dict[str, Any] = {}
        self.problems: dict[str, tuple[str, str]] = {}  # role -> (outcome, cause)
        self.graph: MetadataGraph | None = None
        self.probe_url = ""
        self.probe_port = 0
        self.otlp_url: str | None = None
        self.otlp_via = ""
        self.http = httpx.AsyncClient(timeout=HTTP_TIMEOUT)
        self.leftovers: dict[str, Callable[[], Awaitable[Any]]] = {}
        self._process: asyncio.subprocess.Process | None = None

    def service(self, role: str) -> str | None:
        return self.roles.names.get(role)

    async def start(self) -> None:
        self.ctx.cleanup(self.http.aclose, "close the flow's HTTP client")
        self.ctx.cleanup(self.remove_leftovers, "remove what the flows left")
        await asyncio.gather(*(self._open(role) for role in self.roles.names))
        self._otlp_target()
        await asyncio.gather(self._start_probe(), self._graph(), self._consumers())

    async def _open(self, role: str) -> None:
        name = self.roles.names[role]
        try:
            self.clients[role] = await self.ctx.open(name)
        except Exception as exc:  # noqa: BLE001 - the hop reports it
            self.problems[role] = (outcome_of(exc).value, f"cannot open {name}: {explain(exc)}")

    def _otlp_target(self) -> None:
        collector = self.service("collector")
        if collector is not None:
            url = self.ctx.stack.service(collector).endpoints.get("otlp_http")
            if url:
                self.otlp_url, self.otlp_via = url, f"collector {collector}"
                return
        store = self.service("trace_store")
        if store is not None and (url := self.ctx.stack.service(store).endpoints.get("otlp_http")):
            self.otlp_url, self.otlp_via = url, f"{store}'s own OTLP receiver (no collector)"

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"host": self.opts.host, "service_name": PROBE_SERVICE,
                                    "otlp_http": self.otlp_url, "key_ttl_s": KEY_TTL_S}  # fmt: skip
        cache = self.service("cache")
        if cache is not None and "cache" not in self.problems:
            svc = self.ctx.stack.service(cache)
            assert svc.url is not None  # the redis kind requires url
            settings["redis_url"] = with_credentials(svc.url, svc.username, svc.password)
        worker: CeleryClient | None = self.clients.get("worker")
        if worker is not None:
            settings.update(broker_url=worker.broker_url, backend_url=worker.backend_url,
                            queue=worker.queue)  # fmt: skip
        return settings

    async def _start_probe(self) -> None:
        """The probe service in a process of its own; stopped by a cleanup (stdin closed, so
        it delivers its last spans; killed if it does not exit in time)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the cleanup below
        self.ctx.cleanup(errors.close, "close the probe service's log")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stackprobe.flow_probe",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=errors, env=env,
        )  # fmt: skip
        self._process = process
        self.ctx.cleanup(self._stop_probe, "stop the flow's probe service")
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(self._settings()).encode() + b"\n")
        await process.stdin.drain()
        try:
            async with asyncio.timeout(PROBE_START_TIMEOUT):
                line = await process.stdout.readline()
            self.probe_port = int(json.loads(line)["port"])
        except (TimeoutError, ValueError, KeyError) as exc:
            errors.seek(0)
            tail = " | ".join(errors.read().decode(errors="replace").strip().splitlines()[-3:])
            raise ServiceError(
                f"the flow's probe service did not start ({explain(exc)}): {tail or 'no output'}"
            ) from None
        self.probe_url = f"http://{self.opts.host}:{self.probe_port}"

    async def _stop_probe(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            async with asyncio.timeout(PROBE_STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _graph(self) -> None:
        client: ArangoClient | None = self.clients.get("arangodb")
        if client is None:
            return
        try:
            self.graph = await MetadataGraph.create(client, self.ctx.ns, self.ctx.cleanup)
        except Exception as exc:  # noqa: BLE001 - the hop reports it
            self.problems["arangodb"] = (outcome_of(exc).value, explain(exc))

    async def _consumers(self) -> None:
        """A task is only sent when a live worker consumes the queue: a flow never leaves a
        message nobody reads."""
        worker: CeleryClient | None = self.clients.get("worker")
        if worker is None:
            return
        try:
            consumers = await worker.consumers(worker.queue)
        except Exception as exc:  # noqa: BLE001 - the hop reports it
            self.problems["worker"] = (outcome_of(exc).value, explain(exc))
            return
        if not consumers:
            self.problems["worker"] = (
                Outcome.FAILED.value,
                f"no live Celery worker consumes queue {worker.queue!r} (none answered within 1 s); task not sent",
            )  # fmt: skip

    def leave(self, what: str, remove: Callable[[], Awaitable[Any]]) -> str:
        """Something a flow created, removed by name at the flow's end (or the check's)."""
        self.leftovers[what] = remove
        return what

    async def remove(self, what: str) -> None:
        remove = self.leftovers.pop(what, None)
        if remove is not None:
            with contextlib.suppress(Exception):  # kept for the check's cleanup otherwise
                await remove()
                return
            self.leftovers[what] = remove

    async def remove_leftovers(self) -> None:
        problems = []
        while self.leftovers:
            what, remove = self.leftovers.popitem()
            try:
                async with asyncio.timeout(5):
                    await remove()
            except Exception as exc:  # noqa: BLE001 - listed, the others still go
                problems.append(f"{what}: {explain(exc)}")
        if problems:
            raise ServiceError(f"could not remove {len(problems)} flow artifact(s): {problems[0]}")


# --- one flow --------------------------------------------------------------------------------


class _Flow:
    """One transaction: its provider, spans and hops."""

    def __init__(self, rig: FlowRig, index: int) -> None:
        self.rig, self.index, self.ctx, self.opts = rig, index, rig.ctx, rig.opts
        self.hops = {h: Hop(h, rig.service(HOP_ROLE[h]) if h in HOP_ROLE else None) for h in HOPS}
        self.hops["http"].service = "probe service"
        self.recorder = _Recorder()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": FLOW_SERVICE}), shutdown_on_exit=False
        )
        self.provider.add_span_processor(self.recorder)
        self.delivery: _Delivery | None = None
        if rig.otlp_url:
            url = f"{rig.otlp_url.rstrip('/')}/v1/traces"
            self.delivery = _Delivery(OTLPSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S), url)
            self.provider.add_span_processor(
                BatchSpanProcessor(self.delivery, schedule_delay_millis=100)
            )
        self.tracer = self.provider.get_tracer("stackprobe.flow")
        self.nonce = secrets.token_hex(8)
        self.key = self.ctx.name(f"flow-{index}-item")
        self.task_id = self.ctx.name(f"flow-{index}-{secrets.token_hex(6)}")
        self.answer: dict[str, Any] = {}
        self.enqueued_at: float | None = None
        self.trace_id = ""
        self.stored: list[StoredSpan] = []
        self.missing: list[str] = []
        self.created: list[str] = []  # what this flow left with the rig, removed at its end
        self._shut = False

    async def hop(self, name: str, fn: Callable[[], Awaitable[str]]) -> bool:
        """Run one hop: skipped when its component is not configured or an earlier hop broke;
        its latency is its own unless it set one. Whether the flow goes on."""
        hop = self.hops[name]
        role = HOP_ROLE.get(name)
        earlier = next((h for h in self.hops.values() if h.broken), None)
        if earlier is not None:
            hop.status, hop.message = (
                Outcome.SKIPPED.value,
                f"not reached: the flow broke at {earlier.hop}",
            )
            return False
        if role is not None and role in self.rig.roles.missing:
            hop.status, hop.message = Outcome.SKIPPED.value, self.rig.roles.missing[role]
            return True
        if role is not None and role in self.rig.problems:
            hop.status, hop.message = self.rig.problems[role]
            return False
        started = time.perf_counter()
        try:
            hop.message = await fn()
            hop.status = Outcome.PASSED.value
        except _Skip as exc:
            hop.status, hop.message = Outcome.SKIPPED.value, str(exc)
        except CheckSkipped as exc:
            hop.status, hop.message = Outcome.SKIPPED.value, str(exc)
        except CheckFailed as exc:
            hop.status, hop.message = Outcome.FAILED.value, str(exc)
        except TimeoutError as exc:
            hop.status, hop.message = Outcome.FAILED.value, str(exc) or "timed out"
        except Exception as exc:  # noqa: BLE001 - the hop's cause, in one line
            hop.status, hop.message = outcome_of(exc).value, explain(exc)
        if hop.latency_ms is None and hop.status != Outcome.SKIPPED.value:
            hop.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        return not hop.broken

    def span(self, name: str, attrs: dict[str, str]) -> Any:
        """A CLIENT span of this process under the current one."""
        return self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attrs)

    # --- the transaction -------------------------------------------------------------------

    async def run(self, *, metrics: bool) -> FlowResult:
        started = time.perf_counter()
        baseline = await self._counter() if metrics else None
        try:
            with self.tracer.start_as_current_span(
                "stackprobe flow",
                attributes={"stackprobe.run": self.ctx.run_id, "stackprobe.flow": self.index},
            ) as root:
                self.trace_id = f"{root.get_span_context().trace_id:032x}"
                await self._transaction()
                if self.hops["consul"].broken or self.hops["http"].broken:
                    root.set_status(Status(StatusCode.ERROR, "the flow broke"))
        finally:
            await self.shutdown()
            await self._cleanup()
        await self.hop("trace", self._trace)
        if metrics:
            await self.hop("prometheus", lambda: self._metrics(baseline))
        else:
            self.hops["prometheus"].message = "checked once for the whole load run"
        await self.hop("grafana", self._grafana)
        return FlowResult(
            index=self.index,
            trace_id=self.trace_id,
            hops=[self.hops[h] for h in HOPS],
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            missing_spans=self.missing,
            span_count=len(self.stored),
        )

    async def _transaction(self) -> None:
        where: list[tuple[str, int]] = []

        async def consul() -> str:
            where.append(await self._consul())
            return f"registered, passed and discovered at {where[0][0]}:{where[0][1]}"

        if not await self.hop("consul", consul):
            return
        if not where:  # no Consul: the probe service is called where it listens
            where.append((self.rig.opts.host, self.rig.probe_port))
        if not self.rig.probe_url:
            self.hops["http"].status = Outcome.ERROR.value
            self.hops["http"].message = "the flow's probe service is not running"
            return
        if not await self.hop("http", lambda: self._http(*where[0])):
            return
        await self.hop("redis", self._redis)
        await self.hop("celery", self._celery)
        await self.hop("arangodb", self._arangodb)

    async def _consul(self) -> tuple[str, int]:
        client: ConsulClient = self.rig.clients["consul"]
        name = self.ctx.name("flow")
        sid = self.ctx.name(f"flow-{self.index}")
        self.created.append(self.rig.leave(f"consul service {sid}", lambda: client.deregister(sid)))
        with self.span("consul register", {"consul.service.id": sid}):
            await client.register({
                "ID": sid, "Name": name, "Tags": ["stackprobe", "flow"],
                "Address": self.opts.host, "Port": self.rig.probe_port,
                "Meta": {"trace_id": self.trace_id},
                "Check": {"TTL": "60s", "DeregisterCriticalServiceAfter": "1m",
                          "Name": "stackprobe flow probe"},
            })  # fmt: skip
            await client.ttl_update(f"service:{sid}", "pass", "stackprobe flow")
        with self.span("consul discover", {"consul.service.name": name}):
            deadline = time.monotonic() + DISCOVER_TIMEOUT
            while True:
                listed = await client.health_service(name, passing=True)
                ours = [e for e in listed if e.get("Service", {}).get("ID") == sid]
                if ours:
                    break
                if time.monotonic() > deadline:
                    raise CheckFailed(
                        f"{sid} registered and passed, but /v1/health/service/{name}?passing "
                        f"did not list it within {DISCOVER_TIMEOUT:g} s ({len(listed)} other instance(s))"
                    )
                await asyncio.sleep(0.05)
        entry = ours[0]
        bad = [c.get("CheckID") for c in entry.get("Checks", []) if c.get("Status") != "passing"]
        if bad:
            raise CheckFailed(f"?passing returned {sid} with non-passing checks {bad}")
        service = entry["Service"]
        address = service.get("Address") or entry.get("Node", {}).get("Address", "")
        return str(address), int(service["Port"])

    async def _http(self, address: str, port: int) -> str:
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{port}/checkout"
        params = {"key": self.key, "nonce": self.nonce}
        if "worker" in self.rig.clients and "worker" not in self.rig.problems:
            params["task"] = self.task_id
            self._leave_task()
        cache = self.rig.clients.get("cache")
        if cache is not None:
            self.created.append(
                self.rig.leave(f"redis key {self.key}", lambda: cache.delete(self.key))
            )
        with self.span("GET /checkout", {"url.full": url}) as span:
            headers: dict[str, str] = {}
            PROPAGATOR.inject(headers)
            try:
                response = await self.rig.http.get(url, params=params, headers=headers)
            except httpx.HTTPError as exc:
                span.set_status(Status(StatusCode.ERROR, explain(exc)))
                raise CheckFailed(f"GET {url} (the discovered instance): {explain(exc)}") from None
            span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code != 200:
            raise CheckFailed(f"GET {url}: expected 200, saw {response.status_code}: {response.text[:200]}")  # fmt: skip
        try:
            self.answer = response.json()
        except ValueError:
            raise CheckFailed(f"GET {url}: answered 200 with a body that is not JSON") from None
        return (
            f"GET /checkout answered 200 by the probe service (its own process) at {address}:{port}"
        )

    def _leave_task(self) -> None:
        worker: CeleryClient = self.rig.clients["worker"]
        task_id = self.task_id

        async def forget() -> None:
            await worker.withdraw(task_id)
            await worker.forget_result(task_id)

        self.created.append(self.rig.leave(f"celery task {task_id}", forget))

    async def _redis(self) -> str:
        seen: dict[str, Any] = self.answer.get("redis") or {}
        if "skipped" in seen:
            raise _Skip(str(seen["skipped"]))
        self.hops["redis"].latency_ms = seen.get("ms")
        if seen.get("error"):
            raise CheckFailed(f"the probe service's cache-aside failed: {seen['error']}")
        steps = [seen.get(s) for s in ("cache_read", "cache_write", "cache_reread")]
        if steps != ["miss", "written", "hit"]:
            raise CheckFailed(
                f"cache-aside of {self.key}: expected read miss, write, read hit; saw {steps}"
            )
        return f"cache-aside: miss, written with a {KEY_TTL_S} s TTL, hit (in the probe service)"

    async def _celery(self) -> str:
        seen: dict[str, Any] = self.answer.get("celery") or {}
        if "skipped" in seen:
            raise _Skip(str(seen["skipped"]))
        if seen.get("error"):
            raise CheckFailed(f"the probe service could not enqueue: {seen['error']}")
        worker: CeleryClient = self.rig.clients["worker"]
        self.enqueued_at = float(seen["enqueued_at"])
        hop = self.hops["celery"]
        hop.details.update(task_id=self.task_id, queue=worker.queue)
        with self.span("celery result", {"messaging.message.id": self.task_id}):
            try:
                value = await worker.wait_result(self.task_id, self.opts.celery_timeout)
            except TimeoutError:
                withdrawn = await worker.withdraw(self.task_id)
                backlog = await worker.backlog(worker.queue)
                fate = (
                    "withdrawn from the queue unread"
                    if withdrawn
                    else "taken by a worker that never answered"
                )
                raise CheckFailed(
                    f"expected the worker's result for {TASK} task {self.task_id} within "
                    f"{self.opts.celery_timeout:g} s, saw none (queue {worker.queue!r} backlog {backlog}; message {fate})"
                ) from None
        hop.latency_ms = round((time.time() - self.enqueued_at) * 1000, 2)
        if value != [self.nonce]:
            raise CheckFailed(f"expected the worker to return [{self.nonce!r}], saw {value!r}")
        return f"{TASK} enqueued with traceparent by the probe service, result back after {hop.latency_ms:g} ms"

    async def _arangodb(self) -> str:
        graph = self.rig.graph
        assert graph is not None  # set up by the rig, else the hop reported its problem
        key = f"flow-{self.index}-{self.trace_id[:12]}"
        request = {"_key": key, "trace_id": self.trace_id, "cache_key": self.key,
                   "task_id": self.task_id, "at": time.time()}  # fmt: skip
        task = {"_key": f"{key}-task", "task_id": self.task_id, "task": TASK,
                "result": [self.nonce], "trace_id": self.trace_id}  # fmt: skip
        with self.span("arangodb write", {"db.system": "arangodb"}):
            await graph.link(request, task)
        with self.span("arangodb traverse", {"db.system": "arangodb"}):
            paths = await graph.targets(key)
        if paths != [[key, task["_key"]]]:
            raise CheckFailed(
                f"traversal from {graph.vertices}/{key}: expected [[{key!r}, {task['_key']!r}]], saw {paths}"
            )
        return f"metadata document and edge written in {graph.db}, read back by traversal"

    async def shutdown(self) -> None:
        """Deliver this process's spans and stop the exporter's thread (once)."""
        if self._shut:
            return
        self._shut = True
        await in_thread(self.provider.force_flush, FLUSH_TIMEOUT_MS)
        await in_thread(self.provider.shutdown)

    async def _cleanup(self) -> None:
        for what in self.created:
            await self.rig.remove(what)

    # --- the trace -------------------------------------------------------------------------

    def expected(self) -> list[Expected]:
        spans = self.answer.get("spans") or {}
        ours = [
            Expected(_hex(s.context.span_id), s.name, FLOW_SERVICE,
                     _hex(s.parent.span_id) if s.parent else "", "flow")
            for s in self.recorder.spans if s.context is not None
        ]  # fmt: skip
        client = next((e.span_id for e in ours if e.name == "GET /checkout"), "")
        server = spans.get("server", "")
        names = {"server": ("GET /checkout", client, "http"), "cache_read": ("GET", server, "redis"),
                 "cache_write": ("SET", server, "redis"), "cache_reread": ("GET", server, "redis"),
                 "publish": (f"apply_async/{TASK}", server, "celery")}  # fmt: skip
        theirs = [
            Expected(spans[k], name, PROBE_SERVICE, parent, hop)
            for k, (name, parent, hop) in names.items()
            if k in spans
        ]
        return ours + theirs

    async def _trace(self) -> str:
        if self.rig.otlp_url is None:
            raise _Skip("no collector and no trace store OTLP receiver: nowhere to send spans")
        store: TraceStore = self.rig.clients["trace_store"]
        expected = self.expected()
        publish = (self.answer.get("spans") or {}).get("publish")
        want_worker = bool(publish) and self.hops["celery"].status == Outcome.PASSED.value
        started = time.monotonic()
        deadline = started + self.opts.trace_timeout
        ours_at: float | None = None
        spans: list[StoredSpan] = []
        while True:
            spans = await store.get_trace(self.trace_id) or []
            ids = {s.span_id for s in spans}
            missing = [e for e in expected if e.span_id not in ids]
            worker = [s for s in spans if publish and s.parent_span_id == publish]
            now = time.monotonic()
            if not missing:
                ours_at = ours_at or now
                if worker or not want_worker or now - ours_at >= self.opts.worker_span_grace:
                    break
            if now >= deadline:
                break
            await asyncio.sleep(POLL_INTERVAL)
        took = time.monotonic() - started
        self.stored = spans
        store_name = self.hops["trace"].service
        hop = self.hops["trace"]
        hop.details.update(trace_id=self.trace_id, span_count=len(spans), expected_span_count=len(expected) + (1 if want_worker else 0),
                           services=sorted({s.service for s in spans}), delivered_via=self.rig.otlp_via)  # fmt: skip
        if self.delivery is not None:
            hop.details["export"] = self.delivery.summary()
        if missing:
            self.missing = [f"{e.name} ({e.service}, {e.hop} hop)" for e in missing]
            if want_worker and not worker:
                self.missing.append(f"{WORKER_SPAN} (the worker, celery hop)")
            raise CheckFailed(
                f"trace {self.trace_id} in {store_name} after {took:.1f} s: expected {len(expected)} spans of "
                f"stackprobe's processes, found {len(expected) - len(missing)}; missing: {'; '.join(self.missing)}"
                f" ({hop.details.get('export', 'not exported')})"
            )
        self._verify(expected, spans, worker, publish)
        if want_worker and not worker:
            note = (f"trace assertion skipped: the worker sent no {WORKER_SPAN} span within {self.opts.worker_span_grace:g} s "
                    "(its workers need opentelemetry-instrumentation-celery exporting to the collector; see README)")  # fmt: skip
            celery = self.hops["celery"]
            celery.message += f"; {note}"
            celery.details["trace_assertion"] = "skipped"
        elif worker:
            self.hops["celery"].details.update(
                trace_assertion="passed", worker_service=worker[0].service
            )
        return (f"{len(spans)} spans from {len({s.service for s in spans})} services in {store_name} "
                f"after {took:.2f} s; parents right across the HTTP{' and Celery' if worker else ''} hops, no orphans")  # fmt: skip

    def _verify(
        self,
        expected: list[Expected],
        spans: list[StoredSpan],
        worker: list[StoredSpan],
        publish: str | None,
    ) -> None:
        got = {s.span_id: s for s in spans}
        for e in expected:
            s = got[e.span_id]
            if (s.name, s.service, s.parent_span_id) != (e.name, e.service, e.parent):
                raise CheckFailed(
                    f"span {e.span_id}: expected name/service/parent {e.name!r}/{e.service!r}/{e.parent or '-'}, "
                    f"saw {s.name!r}/{s.service!r}/{s.parent_span_id or '-'}"
                )
        for w in worker:
            if not w.name.startswith("run/"):
                raise CheckFailed(f"the span under the publish span {publish}: expected {WORKER_SPAN}, saw {w.name!r}")  # fmt: skip
        orphans = [f"{s.name} ({s.service}) parent {s.parent_span_id}" for s in spans
                   if s.parent_span_id and s.parent_span_id not in got]  # fmt: skip
        roots = [s.name for s in spans if not s.parent_span_id]
        if orphans or len(roots) != 1:
            raise CheckFailed(f"expected one root and no orphan spans, saw roots {roots} and orphans {orphans}")  # fmt: skip
        known = {e.span_id for e in expected}
        below = {w.span_id for w in worker}
        changed = True
        while changed:  # the worker's own children (a user's worker may trace more) are fine
            grown = {s.span_id for s in spans if s.parent_span_id in below} - below
            below |= grown
            changed = bool(grown)
        unexpected = [f"{s.name} ({s.service})" for s in spans if s.span_id not in known | below]
        if unexpected:
            raise CheckFailed(f"unexpected spans in trace {self.trace_id}: {unexpected[:5]}")

    # --- metrics and Grafana ---------------------------------------------------------------

    async def _counter(self) -> float | None:
        return await span_calls(self.rig)

    async def _metrics(self, baseline: float | None) -> str:
        if self.rig.service("collector") is None:
            raise _Skip("no collector configured: no span metrics to read")
        if not self.hops["trace"].status == Outcome.PASSED.value:
            raise _Skip("the trace did not arrive")
        found = await metrics_hop(self.rig, [self.trace_id], baseline, 1, self.opts.metrics_timeout)
        self.hops["prometheus"].details.update(found)
        return str(found["message"])

    async def _grafana(self) -> str:
        if self.hops["trace"].status != Outcome.PASSED.value:
            raise _Skip("the trace did not arrive in the trace store")
        client: GrafanaClient = self.rig.clients["grafana"]
        store = self.rig.service("trace_store")
        assert store is not None  # the trace hop passed
        ds = trace_datasource(await client.datasources(), self.ctx.stack.service(store).kind,
                              self.opts.grafana_datasource)  # fmt: skip
        want = {s.span_id for s in self.stored}
        deadline = time.monotonic() + GRAFANA_TIMEOUT
        while True:
            seen = {s.span_id for s in await trace_through(client, ds, self.trace_id)}
            if seen == want or time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_INTERVAL)
        self.hops["grafana"].details.update(datasource=ds.get("uid"), span_count=len(seen))
        if seen != want:
            raise CheckFailed(
                f"trace {self.trace_id} through datasource {ds.get('uid')!r}: expected the "
                f"{len(want)} spans of {store}, saw {len(seen)} ({len(want - seen)} missing, {len(seen - want)} unexpected)"
            )
        return f"the same {len(seen)} spans through Grafana's {ds.get('type')} datasource {ds.get('uid')!r}"


def span_metrics_namespace(rig: FlowRig) -> str:
    """The collector's span-metrics namespace (its options), else the connector's default."""
    collector = rig.service("collector")
    typed = rig.ctx.stack.typed.get(collector) if collector else None
    found = getattr(typed.options, "span_metrics_namespace", None) if typed else None
    return str(found or DEFAULT_NAMESPACE)


def counter_query(rig: FlowRig) -> str:
    """The span-metrics call counter of the probe service, all its series summed."""
    return f'sum({{__name__=~"{span_metrics_namespace(rig)}_calls(_total)?",service_name="{PROBE_SERVICE}"}})'


async def span_calls(rig: FlowRig) -> float | None:
    """The counter now (0 before its first series), or None when it cannot be read."""
    api: PrometheusAPI | None = rig.clients.get("prometheus")
    if api is None or rig.service("collector") is None:
        return None
    with contextlib.suppress(Exception):
        return await api.scalar(counter_query(rig)) or 0.0
    return None


async def metrics_hop(
    rig: FlowRig, trace_ids: list[str], baseline: float | None, rise: int, timeout: float
) -> dict[str, Any]:
    """The span-metrics counter of the probe service rose by at least `rise` over `baseline`
    and an exemplar on the flow's span metrics carries one of `trace_ids`."""
    api: PrometheusAPI = rig.clients["prometheus"]
    query = counter_query(rig)
    namespace = span_metrics_namespace(rig)
    selector = (f'{{__name__=~"{namespace}_(calls_total|calls|duration.*_bucket)",'
                f'service_name=~"{FLOW_SERVICE}|{PROBE_SERVICE}"}}')  # fmt: skip
    start = time.time() - 300
    started = time.monotonic()
    deadline = started + timeout
    wanted = set(trace_ids)
    last = ""
    value: float | None = None
    while True:
        value = await api.scalar(query)
        rose = value is not None and value - (baseline or 0.0) >= rise
        if rose:
            data = await api.get(
                "/api/v1/query_exemplars", query=selector, start=start, end=time.time() + 5
            )
            exemplars = [ex for series in data for ex in series.get("exemplars", [])]
            hit = next(
                (ex for ex in exemplars if ex.get("labels", {}).get("trace_id") in wanted), None
            )
            if hit is not None:
                took = time.monotonic() - started
                return {
                    "counter_before": baseline, "counter_after": value,
                    "exemplar_trace_id": hit["labels"]["trace_id"], "visible_after_s": round(took, 2),
                    "message": f"{query} rose {baseline or 0:g} → {value:g}; exemplar links to trace {hit['labels']['trace_id']} after {took:.1f} s",
                }  # fmt: skip
            last = f"{len(exemplars)} exemplar(s) on the flow's span metrics, none with {'this trace id' if len(wanted) == 1 else 'a trace id of these flows'}"
        else:
            last = f"{query} is {value if value is not None else 'absent'} (before the flow: {baseline if baseline is not None else 'absent'}), expected a rise of {rise}"
        if time.monotonic() > deadline:
            raise CheckFailed(f"span metrics in Prometheus after {timeout:g} s: {last}")
        await asyncio.sleep(0.5)


async def run_flow(rig: FlowRig, index: int = 0, *, metrics: bool = True) -> FlowResult:
    """One synthetic transaction through every configured component."""
    return await _Flow(rig, index).run(metrics=metrics)


# --- many flows at a rate --------------------------------------------------------------------

MAX_RATE = 50.0  # flows per second, with --allow-disruption
MAX_DURATION = 600.0
LOW_RATE = 5.0  # above this, load needs --allow-disruption
MAX_IN_FLIGHT = 32


async def open_loop(
    rate: float,
    duration: float,
    fn: Callable[[int], Awaitable[T]],
    max_in_flight: int = MAX_IN_FLIGHT,
) -> list[tuple[float, T]]:
    """Run `fn(i)` open-loop, flow i due at start + i / rate whatever the earlier flows do
    (the load engine's lanes record only latency; a flow also returns its hops), and return
    (latency from the intended start in seconds, value) per flow. Latency counts from the
    intended start, so a stalled system shows in the percentiles instead of slowing the
    sender (no coordinated omission). Bounded: rate * duration flows, at most `max_in_flight`
    at once (a flow due while that many run waits, and the wait counts in its latency)."""
    count = max(1, math.floor(rate * duration))
    gate = asyncio.Semaphore(max_in_flight)
    start = time.monotonic()

    async def one(i: int) -> tuple[float, T]:
        intended = start + i / rate
        await asyncio.sleep(max(0.0, intended - time.monotonic()))
        async with gate:
            value = await fn(i)
        return time.monotonic() - intended, value

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p95/p99 and max of latencies in milliseconds, from the load engine's
    HdrHistogram (each within 0.1 % of the recorded value, 1 µs resolution)."""
    if not values:
        return {}
    hist = Histogram()
    for ms in values:
        hist.record(ms / 1000)
    p50, p90, p95, p99 = hist.percentiles_ms([50.0, 90.0, 95.0, 99.0])
    return {"p50": p50, "p90": p90, "p95": p95, "p99": p99, "max": float(hist.summary()["max_ms"])}


def load_summary(
    timed: list[tuple[float, FlowResult]], rate: float, duration: float, took: float
) -> dict[str, Any]:
    """What a load run reports: end-to-end and per-hop percentiles, trace completeness, the
    incomplete traces by which span was missing, and the broken flows by hop."""
    results = [r for _, r in timed]
    complete = [r for r in results if r.trace_complete]
    sent = len(results)
    hops: dict[str, dict[str, float]] = {}
    for name in HOPS:
        values = [h.latency_ms for r in results for h in r.hops
                  if h.hop == name and h.status == Outcome.PASSED.value and h.latency_ms is not None]  # fmt: skip
        if values:
            hops[name] = percentiles(values)
    broken: dict[str, int] = {}
    for r in results:
        if (b := r.first_broken) is not None:
            broken[b.hop] = broken.get(b.hop, 0) + 1
    incomplete = [
        {"flow": r.index, "trace_id": r.trace_id, "missing": r.missing_spans or [r.hop("trace").message]}
        for r in results if not r.trace_complete and r.hop("trace").status != Outcome.SKIPPED.value
    ][:20]  # fmt: skip
    return {
        "rate": rate, "duration_s": duration, "took_s": round(took, 2), "flows_sent": sent,
        "flows_passed": sum(1 for r in results if r.first_broken is None),
        "complete_traces": len(complete),
        "trace_completeness": round(len(complete) / sent, 4) if sent else 0.0,
        "e2e_ms": percentiles([latency * 1000 for latency, _ in timed]),
        "hops_ms": hops, "broken_by_hop": broken, "incomplete_traces": incomplete,
        "first_failures": [
            {"flow": r.index, "hop": b.hop, "message": b.message}
            for r in results if (b := r.first_broken) is not None
        ][:5],
    }  # fmt: skip


async def run_load(rig: FlowRig, rate: float, duration: float) -> tuple[dict[str, Any], list[Hop]]:
    """Flows open-loop at `rate` for `duration` seconds; (summary, one aggregated Hop per hop:
    its status over all flows and its percentiles). Span metrics are checked once, at the end:
    the counter rose by at least the complete flows and an exemplar links to one of them."""
    baseline = await span_calls(rig)
    started = time.monotonic()
    timed = await open_loop(rate, duration, lambda i: run_flow(rig, i, metrics=False))
    summary = load_summary(timed, rate, duration, time.monotonic() - started)
    results = [r for _, r in timed]
    hops = []
    for name in HOPS:
        seen = [r.hop(name) for r in results]
        broken = [h for h in seen if h.broken]
        passed = [h for h in seen if h.status == Outcome.PASSED.value]
        row = Hop(name, seen[0].service if seen else None)
        row.status = (broken[0].status if broken else Outcome.PASSED.value if passed
                      else Outcome.SKIPPED.value)  # fmt: skip
        pct = summary["hops_ms"].get(name)
        if pct:
            row.latency_ms = pct["p50"]
            row.details = {"latency_ms_percentiles": pct}
        counts = f"{len(passed)} of {len(seen)} flows passed"
        row.message = (f"p50 {pct['p50']:g} / p95 {pct['p95']:g} / p99 {pct['p99']:g} ms; {counts}" if pct
                       else counts if passed or broken else (seen[0].message if seen else ""))  # fmt: skip
        if broken:
            row.message += f"; first failure: {broken[0].message}"
        hops.append(row)
    prom = next(h for h in hops if h.hop == "prometheus")
    complete = [r.trace_id for r in results if r.trace_complete]
    if "prometheus" in rig.roles.missing or rig.service("collector") is None:
        prom.status = Outcome.SKIPPED.value
        prom.message = rig.roles.missing.get(
            "prometheus", "no collector configured: no span metrics to read"
        )
    elif "prometheus" in rig.problems:
        prom.status, prom.message = rig.problems["prometheus"]
    elif complete:
        prom.latency_ms = None
        try:
            found = await metrics_hop(
                rig, complete, baseline, len(complete), rig.opts.metrics_timeout
            )
            prom.status, prom.message = Outcome.PASSED.value, str(found["message"])
            prom.details = {k: v for k, v in found.items() if k != "message"}
        except CheckFailed as exc:
            prom.status, prom.message = Outcome.FAILED.value, str(exc)
        except Exception as exc:  # noqa: BLE001 - the hop's cause
            prom.status, prom.message = outcome_of(exc).value, explain(exc)
    return summary, hops


def load_verdict(summary: dict[str, Any], hops: list[Hop]) -> str:
    """The load check's outcome: raise when a flow broke, a trace was incomplete or the span
    metrics did not follow; else the message with the figures."""
    sent, complete = summary["flows_sent"], summary["complete_traces"]
    e2e = summary["e2e_ms"]
    figures = (f"{sent} flows at {summary['rate']:g}/s: end-to-end p50 {e2e.get('p50', 0):g} / p95 "
               f"{e2e.get('p95', 0):g} / p99 {e2e.get('p99', 0):g} ms; trace completeness "
               f"{summary['trace_completeness'] * 100:g}% ({complete}/{sent})")  # fmt: skip
    problems = []
    if summary["broken_by_hop"]:
        first = summary["first_failures"][0]
        problems.append(
            f"{sent - summary['flows_passed']} flow(s) broke ({', '.join(f'{h}: {n}' for h, n in summary['broken_by_hop'].items())}; "
            f"first, flow {first['flow']} at {first['hop']}: {first['message']})"
        )  # fmt: skip
    if summary["incomplete_traces"]:
        first = summary["incomplete_traces"][0]
        problems.append(
            f"incomplete trace {first['trace_id']}: missing {'; '.join(first['missing'][:3])}"
        )
    prom = next((h for h in hops if h.hop == "prometheus" and h.broken), None)
    if prom is not None:
        problems.append(f"prometheus: {prom.message}")
    if problems:
        raise CheckFailed(f"{figures}; " + "; ".join(problems))
    return figures
