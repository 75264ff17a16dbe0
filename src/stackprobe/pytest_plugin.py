"""pytest plugin: stackprobe's catalog as test items, fixtures per kind, and coverage from your tests.

Inert unless asked: nothing runs and nothing prints unless `--stackprobe` is given, a
`stackprobe_*`/per-kind fixture is used, or a test carries a stackprobe marker.

    pytest --stackprobe --stackprobe-sandbox            # every built-in check as a test item
    pytest --stackprobe --stackprobe-config stack.yaml -m sp_redis_sessions -x
    pytest tests/infra --stackprobe-config stack.yaml --stackprobe-cov-fail-under 80

Items are named `<check id>[<service>]` and carry `@pytest.mark.stackprobe(kind=, capability=)`
and `sp_<kind>_<capability>` (dashes as underscores), so `-k`, `-m`, `-x`, JUnit and xdist work
as usual. Each item runs its one check through the same engine as `stackprobe run`.

Your own tests count in the coverage matrix when they pass and are marked:

    @pytest.mark.stackprobe(kind="redis", capability="sessions")
    def test_login_session_survives_a_request(redis_client):
        key = redis_client.key("session")           # run-unique, deleted after the test
        redis_client.client.set(key, "user-1", px=60_000)
        assert redis_client.client.get(key) == b"user-1"
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import secrets
import tempfile
import time
from collections.abc import Awaitable, Generator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import httpx
import pytest

from stackprobe.catalog import known_kinds
from stackprobe.check import CheckContext, CheckSpec, Outcome, Severity
from stackprobe.config import Stack, find_stack_file
from stackprobe.connect import CONNECT_TIMEOUT, Opened, probe
from stackprobe.connect import open_service as open_async
from stackprobe.coverage import run_result
from stackprobe.errors import ConfigError, ServiceError
from stackprobe.explain import explain
from stackprobe.http import client_settings
from stackprobe.ids import namespace, new_run_id
from stackprobe.loader import load_stack
from stackprobe.redact import Redactor
from stackprobe.report.matrix import render_matrix_text
from stackprobe.results import CheckResult, RunResult
from stackprobe.runner import Plan, PlanItem, Runner, Selection, lock_names, make_plan
from stackprobe.sandbox.manager import Sandbox

T = TypeVar("T")
ClientT = TypeVar("ClientT")

MARKER = "stackprobe"
CLEANUP_TIMEOUT = 5.0
# fixture name -> the kinds that can serve it
FIXTURE_KINDS: dict[str, tuple[str, ...]] = {
    "redis_client": ("redis",),
    "consul_client": ("consul",),
    "arango_db": ("arangodb",),
    "trace_store": ("tempo", "jaeger"),
    "prometheus_api": ("prometheus",),
    "grafana_api": ("grafana",),
    "otel_collector": ("otel-collector",),
}


def marker_name(kind: str, capability: str) -> str:
    """The `-m` marker of one capability: `sp_<kind>_<capability>`, dashes as underscores."""
    return f"sp_{kind}_{capability}".replace("-", "_")


# --- session state ----------------------------------------------------------------------------


@dataclass
class _State:
    """What one pytest process knows: the stack, the run id and every stackprobe outcome."""

    run_id: str
    stack_file: Path | None = None
    stack: Stack | None = None
    stack_name: str | None = None
    services: dict[str, str] = field(default_factory=dict)  # name -> kind
    versions: dict[str, str | None] = field(default_factory=dict)
    results: list[CheckResult] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.monotonic)

    def use_stack(self, stack: Stack) -> None:
        self.stack = stack
        self.stack_file = stack.path
        self.stack_name = stack.name
        self.services = {name: svc.kind for name, svc in stack.services.items()}

    def add(self, payload: dict[str, Any]) -> None:
        """Merge one test's payload (from this process or an xdist worker)."""
        if not payload.get("services"):
            return
        self.stack_name = payload["stack"]
        self.services.update(payload["services"])
        if payload.get("stack_file"):
            self.stack_file = Path(payload["stack_file"])
        for name, version in payload.get("versions", {}).items():
            if version or name not in self.versions:
                self.versions[name] = version
        self.results += [CheckResult.model_validate(r) for r in payload.get("results", [])]

    def run_result(self) -> RunResult | None:
        """The matrix so far as a RunResult, or None when nothing stackprobe-related ran."""
        if not self.results or not self.services:
            return None
        kinds = known_kinds()
        return run_result(
            run_id=self.run_id,
            stack=self.stack_name or "stack",
            started_at=self.started_at.isoformat(timespec="seconds"),
            services={
                name: (kind, kinds[kind].capabilities)
                for name, kind in self.services.items()
                if kind in kinds
            },
            versions=self.versions,
            duration_s=round(time.monotonic() - self.t0, 3),
            results=self.results,
        )

    def payload(self, results: list[CheckResult]) -> dict[str, Any]:
        return {
            "stack": self.stack_name,
            "stack_file": str(self.stack_file) if self.stack_file else None,
            "services": self.services,
            "versions": self.versions,
            "results": [r.model_dump(mode="json") for r in results],
        }


STATE = pytest.StashKey[_State]()
ITEM_RESULT = pytest.StashKey[CheckResult]()
PAYLOAD_ATTR = "stackprobe_payload"  # on TestReport: survives xdist's report serialization


def _state(config: pytest.Config) -> _State:
    return config.stash[STATE]


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# --- options, markers, configuration ----------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stackprobe", "stackprobe: infrastructure contract checks")
    group.addoption(
        "--stackprobe",
        action="store_true",
        default=False,
        help="Run stackprobe's built-in checks as test items, one per check and service "
        "(stack from --stackprobe-config, --stackprobe-sandbox, $STACKPROBE_CONFIG or "
        "./stackprobe.yaml).",
    )
    group.addoption(
        "--stackprobe-config",
        metavar="FILE",
        default=None,
        help="Stack file for the items and the fixtures.",
    )
    group.addoption(
        "--stackprobe-sandbox",
        action="store_true",
        default=False,
        help="Use the running sandbox's stack file (<state dir>/sandbox/stackprobe.yaml).",
    )
    group.addoption(
        "--stackprobe-allow-disruption",
        action="store_true",
        default=False,
        help="Also run disruptive checks (sandbox, or services marked disruption: allowed).",
    )
    group.addoption(
        "--stackprobe-cov-fail-under",
        metavar="PCT",
        type=float,
        default=None,
        help="Fail the session (exit 1) when stackprobe coverage is below PCT percent.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(kind, capability, service=None): this test proves a stackprobe capability; "
        "when it passes it covers that capability of every service of the kind (or of "
        "`service`) in the coverage matrix",
    )
    for kind in known_kinds().values():
        for cap in kind.capabilities:
            config.addinivalue_line(
                "markers", f"{marker_name(kind.name, cap)}: stackprobe {kind.name} {cap}"
            )
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    state = _State(run_id=workerinput.get("stackprobe_run_id") or new_run_id())
    config.stash[STATE] = state
    config.pluginmanager.register(_SessionHooks(config), "stackprobe-session")
    path = _stack_file_from_options(config)
    if path is not None:
        try:
            state.use_stack(load_stack(path))
        except ConfigError as exc:
            raise pytest.UsageError(f"stackprobe: {exc}") from None


def _stack_file_from_options(config: pytest.Config) -> Path | None:
    """The stack file named by the options; None when no option asks for one."""
    explicit: str | None = config.getoption("stackprobe_config")
    sandbox: bool = config.getoption("stackprobe_sandbox")
    try:
        if explicit and sandbox:
            raise ConfigError("--stackprobe-sandbox and --stackprobe-config cannot be combined")
        if sandbox:
            return Sandbox().require_running()
        if explicit or config.getoption("stackprobe"):
            return find_stack_file(explicit)
    except ConfigError as exc:
        raise pytest.UsageError(f"stackprobe: {exc}") from None
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: every worker uses the controller's run id (one namespace, one lock set)."""
    node.workerinput["stackprobe_run_id"] = _state(node.config).run_id


# --- the catalog as items ---------------------------------------------------------------------


class CheckError(Exception):
    """A check that failed or could not run; its text is the check's message and evidence."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.message)
        self.result = result


class CheckItem(pytest.Item):
    """One built-in check on one service, run through the same engine as `stackprobe run`."""

    def __init__(self, *, spec: CheckSpec, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.service = service
        self.add_marker(pytest.mark.stackprobe(kind=spec.kind, capability=spec.capability))
        self.add_marker(getattr(pytest.mark, marker_name(spec.kind, spec.capability)))
        self.extra_keyword_matches.update({spec.kind, spec.capability, service})

    def runtest(self) -> None:
        state = _state(self.config)
        assert state.stack is not None  # items exist only when the stack loaded
        plan = self._plan(state.stack)
        names = lock_names(state.stack, known_kinds(), PlanItem(self.spec, self.service))
        with _service_locks(self.config, state.run_id, names):
            result = asyncio.run(Runner(plan, run_id=state.run_id).run())
        state.versions.update({n: s.version for n, s in result.services.items()})
        (outcome,) = result.results
        self.stash[ITEM_RESULT] = outcome
        if outcome.outcome is Outcome.SKIPPED:
            pytest.skip(outcome.message)
        if outcome.outcome is Outcome.FAILED and outcome.severity is Severity.WARNING:
            pytest.xfail(f"warning: {outcome.message}")
        if outcome.outcome is not Outcome.PASSED:
            raise CheckError(outcome)

    def _plan(self, stack: Stack) -> Plan:
        """make_plan's selection rules (disruption included), narrowed to this one check."""
        plan = make_plan(
            stack,
            Selection(
                services=(self.service,),
                capabilities=(self.spec.capability,),
                allow_disruption=self.config.getoption("stackprobe_allow_disruption"),
                sandbox=self.config.getoption("stackprobe_sandbox"),
            ),
        )
        mine = self.spec.id
        return Plan(
            stack=plan.stack,
            items=tuple(i for i in plan.items if i.spec.id == mine),
            services=plan.services,
            skipped=tuple(
                (i, reason.replace("--allow-disruption", "--stackprobe-allow-disruption"))
                for i, reason in plan.skipped
                if i.spec.id == mine
            ),
        )

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str:
        if isinstance(excinfo.value, CheckError):
            r = excinfo.value.result
            evidence = json.dumps(r.evidence, indent=2, sort_keys=True, ensure_ascii=False)
            return f"{r.check} [{r.service}] {r.outcome.value}: {r.message}\nevidence: {evidence}"
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.name}: {self.spec.title}"


@contextlib.contextmanager
def _service_locks(
    config: pytest.Config, run_id: str, names: list[tuple[str, bool]]
) -> Iterator[None]:
    """Across xdist workers, the runner's locks (runner.lock_names) as file locks taken in the
    same order: an exclusive check runs alone on its service, as in one run."""
    if not _is_worker(config):
        yield
        return
    with contextlib.ExitStack() as held:
        for service, exclusive in names:
            handle = held.enter_context(
                (Path(tempfile.gettempdir()) / f"stackprobe-{run_id}-{service}.lock").open("a")
            )
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            held.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        yield


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselect, so they select catalog items too
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not config.getoption("stackprobe"):
        return
    stack = _state(config).stack
    assert stack is not None  # --stackprobe always resolves a stack in pytest_configure
    kinds = known_kinds()
    catalog: list[pytest.Item] = [
        CheckItem.from_parent(
            session, name=f"{spec.id}[{name}]", nodeid=f"{spec.id}[{name}]", spec=spec, service=name
        )
        for name, svc in stack.services.items()
        for spec in kinds[svc.kind].checks
    ]
    items += catalog
    # counted like collected tests ("collected N items"), as if a collector had found them
    config.hook.pytest_collectreport(
        report=pytest.CollectReport(
            nodeid="",
            outcome="passed",
            longrepr=None,
            result=list[pytest.Item | pytest.Collector](catalog),
        )
    )


# --- reports: collect outcomes (also from xdist workers) --------------------------------------


def _marks(item: pytest.Item) -> list[tuple[str, str, str | None]]:
    """(kind, capability, service) of every stackprobe marker on a user's test."""
    found: list[tuple[str, str, str | None]] = []
    for mark in item.iter_markers(MARKER):
        kind = mark.kwargs.get("kind", mark.args[0] if mark.args else None)
        cap = mark.kwargs.get("capability", mark.args[1] if len(mark.args) > 1 else None)
        if not isinstance(kind, str) or not isinstance(cap, str):
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.stackprobe needs kind=... and capability=..."
            )
        found.append((kind, cap, mark.kwargs.get("service")))
    by_marker = {
        marker_name(k.name, c): (k.name, c) for k in known_kinds().values() for c in k.capabilities
    }
    for mark in item.iter_markers():
        if mark.name in by_marker:
            found.append((*by_marker[mark.name], None))
    return list(dict.fromkeys(found))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A marker naming a capability its (known) kind does not have is a mistake: say so."""
    if isinstance(item, CheckItem):
        return
    kinds = known_kinds()
    for kind, cap, _ in _marks(item):
        if kind in kinds and cap not in kinds[kind].capabilities:
            pytest.fail(
                f"@pytest.mark.stackprobe: {kind} has no capability {cap!r} "
                f"(known: {', '.join(kinds[kind].capabilities)})",
                pytrace=False,
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    state = _state(item.config)
    if isinstance(item, CheckItem):
        result = item.stash.get(ITEM_RESULT, None)
        if report.when == "call" and result is not None:
            setattr(report, PAYLOAD_ATTR, json.dumps(state.payload([result])))
        return report
    marks = _marks(item) if state.services else []
    decisive = report.when == "call" or (report.when == "setup" and not report.passed)
    if not marks or not decisive:
        return report
    if report.passed:
        outcome, message = Outcome.PASSED, "pytest test passed"
    elif report.skipped:
        outcome, message = Outcome.SKIPPED, _skip_reason(report)
    elif report.when == "setup":
        outcome, message = Outcome.ERROR, _one_line(call)
    else:
        outcome, message = Outcome.FAILED, _one_line(call)
    results = [
        CheckResult(
            check=f"pytest:{item.nodeid}",
            service=name,
            kind=kind,
            capability=cap,
            title=item.name,
            outcome=outcome,
            duration_s=round(report.duration, 3),
            message=message,
        )
        for kind, cap, only in marks
        for name, svc_kind in state.services.items()
        if svc_kind == kind and only in (None, name)
    ]
    if results:
        setattr(report, PAYLOAD_ATTR, json.dumps(state.payload(results)))
    return report


def _one_line(call: pytest.CallInfo[None]) -> str:
    if call.excinfo is None:
        return "failed"
    text = call.excinfo.exconly().strip().splitlines()[0] if call.excinfo.exconly() else "failed"
    return text if len(text) <= 300 else text[:299] + "…"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return "skipped"


class _SessionHooks:
    """Hooks that need the config: merge payloads, gate on coverage, print the matrix."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = getattr(report, PAYLOAD_ATTR, None)
        if payload is not None:
            _state(self.config).add(json.loads(payload))

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        state = _state(self.config)
        state.started_at = datetime.now(UTC)
        state.t0 = time.monotonic()

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if _is_worker(self.config):
            return
        run_id = _state(self.config).run_id
        for lock in Path(tempfile.gettempdir()).glob(f"stackprobe-{run_id}-*.lock"):
            lock.unlink(missing_ok=True)  # the xdist workers' service locks of this session
        bar: float | None = self.config.getoption("stackprobe_cov_fail_under")
        if bar is None:
            return
        result = _state(self.config).run_result()
        percent = result.coverage.percent if result else 0.0
        if percent < bar and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if _is_worker(self.config):
            return
        state = _state(self.config)
        result = state.run_result()
        bar: float | None = self.config.getoption("stackprobe_cov_fail_under")
        if result is None:
            if bar is not None:
                terminalreporter.write_line(
                    "stackprobe: no coverage measured (no check or marked test ran against a "
                    f"stack); --stackprobe-cov-fail-under {bar:g} fails the session",
                    red=True,
                )
            return
        writer = self.config.get_terminal_writer()
        terminalreporter.section("stackprobe coverage")
        stack_arg = f"-c {state.stack_file}" if state.stack_file else None
        if self.config.getoption("stackprobe_sandbox"):
            stack_arg = "--sandbox"
        text = render_matrix_text(
            result, color=writer.hasmarkup, width=max(100, writer.fullwidth), stack_arg=stack_arg
        )
        redactor = Redactor(state.stack.secrets() if state.stack else ())
        terminalreporter.write(redactor.text(text))
        if bar is not None and result.coverage.percent < bar:
            terminalreporter.write_line(
                f"stackprobe: coverage {result.coverage.percent:g}% is below "
                f"--stackprobe-cov-fail-under {bar:g}%",
                red=True,
                bold=True,
            )


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stackprobe_stack_file(request: pytest.FixtureRequest) -> Path:
    """The stack file the fixtures use. Override it in a conftest to point at your own stack."""
    state = _state(request.config)
    if state.stack_file is not None:
        return state.stack_file
    try:
        return find_stack_file(None)
    except ConfigError:
        pytest.skip(
            "no stack file: pass --stackprobe-config FILE or --stackprobe-sandbox, set "
            "STACKPROBE_CONFIG, or override the stackprobe_stack_file fixture"
        )


@pytest.fixture(scope="session")
def stackprobe_stack(request: pytest.FixtureRequest, stackprobe_stack_file: Path) -> Stack:
    """The validated stack (services, links, secrets); its services form the coverage matrix."""
    state = _state(request.config)
    if state.stack is not None and state.stack.path == stackprobe_stack_file:
        return state.stack
    try:
        stack = load_stack(stackprobe_stack_file)
    except ConfigError as exc:
        pytest.fail(f"stackprobe: {exc}", pytrace=False)
    state.use_stack(stack)
    return stack


@dataclass
class ServiceHandle(CheckContext[ClientT]):
    """One service of the stack, for one test: the kind's own client, a run-unique namespace
    (`ns`, `name(suffix)`), cleanups that always run (`cleanup(fn)`), and a private event loop
    to await the async client on (`run(awaitable)`), since tests are synchronous.

    `client` is the kind's blocking client where it has one (Redis: a plain `redis.Redis`),
    else its async client; `aclient` is always the async client the checks use.
    """

    kind: str = ""
    loop: asyncio.AbstractEventLoop | None = None
    aclient: Any = None
    opened: Opened[Any] | None = None
    _http: httpx.Client | None = None

    def run(self, awaitable: Awaitable[T], timeout: float = 30.0) -> T:
        """Await `awaitable` on this handle's loop (the loop the client lives on)."""
        assert self.loop is not None

        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await awaitable

        return self.loop.run_until_complete(bounded())

    @property
    def url(self) -> str:
        """The service's primary API (`url` in the stack file)."""
        if not self.service.url:
            pytest.skip(f"{self.service_name} ({self.kind}) has no url; use endpoint(name)")
        return self.service.url

    def endpoint(self, name: str) -> str:
        """A named endpoint of the service (`endpoints.<name>`), or skip when it is missing."""
        value = self.service.endpoints.get(name)
        if value is None:
            pytest.skip(f"{self.service_name} ({self.kind}) has no endpoints.{name}")
        return value

    def key(self, suffix: str) -> str:
        """A run-unique name, deleted after the test whatever its outcome."""
        sync = self.opened.kind.sync if self.opened else None
        if sync is None or sync.delete is None:
            raise TypeError(f"{self.kind} handles cannot delete names: use name() and cleanup()")
        name, delete, client = self.name(suffix), sync.delete, self.client
        self.cleanup(lambda: delete(client, name), f"delete {name}")
        return name

    @cached_property
    def http(self) -> httpx.Client:
        """A bounded sync HTTP client on `url` with the configured credentials."""
        default_user = self.opened.kind.default_username if self.opened else None
        self._http = httpx.Client(**client_settings(self.service, default_user=default_user))
        return self._http


# a Redis handle: `client` is a plain redis.Redis, `key()` works
RedisHandle: TypeAlias = ServiceHandle[Any]


def _pick_service(request: pytest.FixtureRequest, stack: Stack, fixture: str) -> str:
    kinds = FIXTURE_KINDS[fixture]
    known = known_kinds()
    if not any(k in known for k in kinds):
        pytest.skip(
            f"{fixture}: kind {' or '.join(kinds)} is not in this stackprobe's catalog "
            f"(known kinds: {', '.join(known)})"
        )
    wanted = [
        m.kwargs["service"]
        for m in request.node.iter_markers(MARKER)
        if m.kwargs.get("service") and m.kwargs.get("kind") in kinds
    ]
    candidates = [n for n, s in stack.services.items() if s.kind in kinds]
    if wanted:
        if wanted[0] not in candidates:
            pytest.fail(
                f"{fixture}: service {wanted[0]!r} is not a {' or '.join(kinds)} service of "
                f"{stack.path}",
                pytrace=False,
            )
        return str(wanted[0])
    if not candidates:
        pytest.skip(f"{fixture}: the stack {stack.path} has no {' or '.join(kinds)} service")
    return candidates[0]


@contextlib.contextmanager
def open_service(
    stack: Stack, name: str, run_id: str | None = None
) -> Iterator[ServiceHandle[Any]]:
    """One service of `stack` as a handle: opened with stackprobe.connect (the kind's
    `connect()`), proven alive with its liveness probe, cleanups run and everything closed on
    exit. A service that cannot be used raises ServiceError with a one-line, redacted cause.

        with open_service(stack, "discovery") as consul:
            assert consul.http.get("/v1/status/leader").json()
    """
    stack.require_secrets([name])
    run_id = run_id or new_run_id()
    redactor = Redactor(stack.secrets())
    loop = asyncio.new_event_loop()
    exits = AsyncExitStack()
    sync_exits = contextlib.ExitStack()
    handle: ServiceHandle[Any] | None = None
    problems: list[str] = []
    svc = stack.service(name)
    try:

        async def connect() -> Opened[Any]:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                opened = await exits.enter_async_context(open_async(stack, name))
                await probe(opened)
                return opened

        unusable = ""
        try:
            opened = loop.run_until_complete(connect())
        except Exception as exc:  # noqa: BLE001 - becomes one line for a person
            unusable = redactor.text(f"{name} ({svc.kind}) is not usable: {explain(exc)}")
        if unusable:  # raised outside the except block: no chained tracebacks
            raise ServiceError(unusable)
        sync = opened.kind.sync
        handle = ServiceHandle(
            client=sync_exits.enter_context(sync.open(opened.target)) if sync else opened.client,
            service_name=name,
            service=svc,
            stack=stack,
            ns=f"{namespace(run_id)}{secrets.token_hex(3)}-",
            run_id=run_id,
            options=opened.target.options,
            expectations=opened.target.expectations,
            kind=svc.kind,
            loop=loop,
            aclient=opened.client,
            opened=opened,
        )
        yield handle
    finally:
        if handle is not None:
            problems = loop.run_until_complete(handle.run_cleanups(CLEANUP_TIMEOUT))
            if handle._http is not None:
                handle._http.close()
        sync_exits.close()
        loop.run_until_complete(exits.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    if problems:
        raise ServiceError(redactor.text("; ".join(problems)))


def _open_handle(
    request: pytest.FixtureRequest, stack: Stack, fixture: str
) -> Iterator[ServiceHandle[Any]]:
    name = _pick_service(request, stack, fixture)
    failure = ""
    try:
        with open_service(stack, name, _state(request.config).run_id) as handle:
            yield handle
    except (ServiceError, ConfigError) as exc:
        failure = str(exc)
    if failure:  # a one-line failure of the test's setup or teardown, without chained tracebacks
        pytest.fail(failure, pytrace=False)


def _handle_fixture(fixture: str) -> Any:
    kinds = " or ".join(FIXTURE_KINDS[fixture])

    def fixture_fn(
        request: pytest.FixtureRequest, stackprobe_stack: Stack
    ) -> Iterator[ServiceHandle[Any]]:
        yield from _open_handle(request, stackprobe_stack, fixture)

    fixture_fn.__name__ = fixture
    fixture_fn.__doc__ = (
        f"The stack's {kinds} service (the first one, or `service=` of the test's stackprobe "
        f"marker) as a ServiceHandle; skips when the stack has none."
    )
    return pytest.fixture(name=fixture)(fixture_fn)


redis_client = _handle_fixture("redis_client")
consul_client = _handle_fixture("consul_client")
arango_db = _handle_fixture("arango_db")
trace_store = _handle_fixture("trace_store")
prometheus_api = _handle_fixture("prometheus_api")
grafana_api = _handle_fixture("grafana_api")
otel_collector = _handle_fixture("otel_collector")


__all__ = [
    "FIXTURE_KINDS",
    "RedisHandle",
    "ServiceHandle",
    "marker_name",
    "open_service",
]
