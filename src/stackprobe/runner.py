"""Run a plan of checks concurrently, each isolated, bounded and cleaned up.

Isolation rules: a check that raises, hangs or times out only produces its own `error`;
cleanups run after every check, also after a timeout, the run deadline or Ctrl-C; exclusive
checks run alone on their service; nothing waits longer than the run deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from stackprobe.catalog import known_kinds
from stackprobe.check import CheckContext, CheckSpec, Outcome, ProcessControl, call_check
from stackprobe.config import Stack
from stackprobe.connect import LIVENESS_TIMEOUT, Services, liveness_cause, probe, version
from stackprobe.coverage import run_result
from stackprobe.errors import ConfigError
from stackprobe.explain import explain, one_line
from stackprobe.ids import new_run_id, service_namespace
from stackprobe.kinds import Kind
from stackprobe.loader import STACK_KIND, typed_of, with_stack_service
from stackprobe.logs import tail_of
from stackprobe.redact import Redactor
from stackprobe.results import CheckResult, LogTail, RunResult
from stackprobe.sandbox.manager import Sandbox
from stackprobe.wait import wait_ready

DEFAULT_TIMEOUT = 10.0
DEFAULT_DEADLINE = 300.0
DEFAULT_CONCURRENCY = 16
CLEANUP_TIMEOUT = 5.0
LOG_TIMEOUT = 10.0  # reading a failing service's log for the report


@dataclass(frozen=True)
class Selection:
    """What to run: empty tuples mean everything."""

    services: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    allow_disruption: bool = False
    sandbox: bool = False


@dataclass(frozen=True)
class PlanItem:
    spec: CheckSpec
    service: str


@dataclass(frozen=True)
class Plan:
    stack: Stack
    items: tuple[PlanItem, ...]
    services: dict[str, tuple[str, tuple[str, ...]]]  # name -> (kind, capabilities)
    skipped: tuple[tuple[PlanItem, str], ...] = ()
    sandbox: bool = False  # the stack is the sandbox: disruption needs no `disruption: allowed`


class Progress(Protocol):
    def started(self, total: int) -> None: ...
    def check_started(self, item: PlanItem) -> None: ...
    def check_finished(self, result: CheckResult) -> None: ...


class _NoProgress:
    def started(self, total: int) -> None:
        pass

    def check_started(self, item: PlanItem) -> None:
        pass

    def check_finished(self, result: CheckResult) -> None:
        pass


def make_plan(stack: Stack, selection: Selection) -> Plan:
    """Select services and checks; unknown names in the selection are a ConfigError."""
    kinds = known_kinds()
    for name in selection.services:
        if name not in stack.services:
            known = ", ".join(stack.services) or "none"
            raise ConfigError(f"--service: no service {name!r} in {stack.path} (services: {known})")
    for wanted in selection.kinds:
        if wanted not in kinds:
            raise ConfigError(f"--kind: unknown kind {wanted!r}; known kinds: {', '.join(kinds)}")
    names = [
        name
        for name, svc in stack.services.items()
        if (not selection.services or name in selection.services)
        and (not selection.kinds or svc.kind in selection.kinds)
    ]
    all_caps = {cap for name in names for cap in kinds[stack.service(name).kind].capabilities}
    for cap in selection.capabilities:
        if cap not in all_caps:
            raise ConfigError(
                f"--capability: {cap!r} is not a capability of the selected services "
                f"(known: {', '.join(sorted(all_caps)) or 'none'})"
            )
    items: list[PlanItem] = []
    skipped: list[tuple[PlanItem, str]] = []
    services: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name in names:
        svc = stack.service(name)
        kind = kinds[svc.kind]
        caps = tuple(
            c
            for c in kind.capabilities
            if not selection.capabilities or c in selection.capabilities
        )
        services[name] = (kind.name, kind.capabilities)  # coverage counts them all
        for spec in kind.checks:
            if spec.capability not in caps:
                continue
            item = PlanItem(spec, name)
            if spec.disruptive and not selection.allow_disruption:
                skipped.append((item, "disruptive: run with --allow-disruption"))
            elif spec.disruptive and not selection.sandbox and svc.disruption != "allowed":
                skipped.append((item, f"disruptive: services.{name}.disruption is not 'allowed'"))
            else:
                items.append(item)
    return Plan(
        stack=stack,
        items=tuple(items),
        services=services,
        skipped=tuple(skipped),
        sandbox=selection.sandbox,
    )


def stack_plan(stack: Stack, specs: list[CheckSpec], selection: Selection) -> Plan:
    """A plan of stack-level checks made at run time (a scenario from a file, a load profile
    from the command line), on the stack's `stack` service, added when the file has none.
    Disruptive ones need `selection.allow_disruption` (ConfigError otherwise: a command that
    asks for one by name must not silently skip it)."""
    stack, name = with_stack_service(stack)
    disruptive = [spec.id for spec in specs if spec.disruptive]
    if disruptive and not selection.allow_disruption:
        raise ConfigError(
            f"{disruptive[0]} is disruptive: run it with --allow-disruption "
            "(on the sandbox, or on services marked disruption: allowed)"
        )
    kind = known_kinds()[STACK_KIND]
    return Plan(
        stack=stack,
        items=tuple(PlanItem(spec, name) for spec in specs),
        services={name: (kind.name, kind.capabilities)},
        sandbox=selection.sandbox,
    )


def lock_names(
    stack: Stack, kinds: Mapping[str, Kind[Any]], item: PlanItem
) -> list[tuple[str, bool]]:
    """The services a check locks, in one global order, and whether exclusively: its own
    (exclusive when the check is), and shared on services its traffic passes through (a
    trace store check's spans move the linked collector's counters, which an exclusive
    collector check reads). The runner and the pytest plugin's xdist locks both use it."""
    names = {item.service: item.spec.exclusive}
    kind = kinds[item.spec.kind]
    targets = [stack.link(item.service, role) for role in kind.traffic_links]
    targets += kind.traffic_of(stack, item.service) if kind.traffic_of else ()
    for target in targets:
        if target and target not in names:
            names[target] = False
    return sorted(names.items())


class _Slots:
    """`concurrency` checks at once; a freed slot goes to the waiting check expected to take
    longest (its duration in the last saved runs), so the slowest checks do not start last
    and stretch the run (ties and unknown durations: plan order)."""

    def __init__(self, size: int) -> None:
        self._free = max(1, size)
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []

    def hold(self, expected: float, order: int) -> _Hold:
        """`async with slots.hold(expected_seconds, plan_index):` one slot."""
        return _Hold(self, expected, order)

    async def _acquire(self, expected: float, order: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        granted = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-expected, order, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # granted just as it was cancelled: pass the slot on
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1


@dataclass
class _Hold:
    slots: _Slots
    expected: float
    order: int

    async def __aenter__(self) -> None:
        await self.slots._acquire(self.expected, self.order)

    async def __aexit__(self, *exc: object) -> None:
        self.slots._release()


class _ServiceLock:
    """Many ordinary checks at once, or one exclusive check alone, per service."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._exclusive = False

    async def acquire(self, exclusive: bool) -> None:
        async with self._cond:
            if exclusive:
                await self._cond.wait_for(lambda: not self._exclusive and self._shared == 0)
                self._exclusive = True
            else:
                await self._cond.wait_for(lambda: not self._exclusive)
                self._shared += 1

    async def release(self, exclusive: bool) -> None:
        async with self._cond:
            if exclusive:
                self._exclusive = False
            else:
                self._shared -= 1
            self._cond.notify_all()


@dataclass
class Runner:
    """Executes one plan. Create one per run."""

    plan: Plan
    timeout: float | None = None
    deadline: float = DEFAULT_DEADLINE
    concurrency: int = DEFAULT_CONCURRENCY
    progress: Progress = field(default_factory=_NoProgress)
    run_id: str = field(default_factory=new_run_id)
    kinds: Mapping[str, Kind[Any]] | None = None  # the catalog unless a test brings its own
    services: Services | None = None  # open services to use (the monitor keeps its own)
    liveness_timeout: float = LIVENESS_TIMEOUT
    cleanup_timeout: float = CLEANUP_TIMEOUT  # all of one check's cleanups together
    processes: ProcessControl | None = None  # default: the sandbox's, when the plan is on it
    wait: float = 0.0  # seconds to wait for every service to be alive before the checks
    on_wait: Callable[[str, str], None] | None = None  # (service, what it waits for)
    log_lines: int = 0  # the last lines of a failing service's log in the result (0: none)
    # `check[service]` -> seconds it took last time (store.last_durations): slowest first
    expected: Mapping[str, float] = field(default_factory=dict)
    _stop_reason: str | None = None
    _results: dict[int, CheckResult] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)
    _connect_errors: dict[str, str] = field(default_factory=dict)
    _versions: dict[str, str | None] = field(default_factory=dict)
    _asking: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # versions
    _shared_by: set[str] | None = None  # services other services' checks may open
    _waited: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        # short: asyncio.run formats the running task (and so this runner, through its
        # callbacks) when it restores the SIGINT handler, and the dataclass repr of a plan
        # of 28,000 checks took 2 s
        return f"<Runner {self.run_id} {len(self.plan.items)} checks>"

    def __post_init__(self) -> None:
        self._shared_services = self.services is not None  # the caller's: never closed here
        self._redactor = Redactor(self.plan.stack.secrets())
        self._kinds = self.kinds if self.kinds is not None else known_kinds()
        if self.processes is None and self.plan.sandbox:
            self.processes = Sandbox(root=self.plan.stack.path.parent)

    async def run(self) -> RunResult:
        """Run every planned check; return the result even after the deadline or Ctrl-C."""
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        interrupted = False
        self.progress.started(len(self.plan.items))
        phases = asyncio.create_task(self._phases())
        expire = asyncio.get_running_loop().call_later(
            self.deadline, self._stop, phases, "run deadline"
        )
        try:
            await asyncio.shield(phases)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():  # Ctrl-C (not the deadline): stop the checks
                me.uncancel()
                interrupted = True
                self._stop(phases, "interrupted")
            with contextlib.suppress(asyncio.CancelledError):
                await phases  # the stopped checks' cleanups finish
        finally:
            expire.cancel()
        for i, item in enumerate(self.plan.items):  # checks that never started
            if i not in self._results:
                reason = self._stop_reason or "run stopped"
                message = (
                    "interrupted before it started"
                    if reason == "interrupted"
                    else f"{reason} reached before it started"
                )
                self._finish(i, item, Outcome.ERROR, message, {}, time.monotonic())
        results = [self._results[i] for i in range(len(self.plan.items))]
        results += [self._skipped(item, reason) for item, reason in self.plan.skipped]
        result = run_result(
            run_id=self.run_id,
            stack=self.plan.stack.name,
            started_at=started_at.isoformat(timespec="seconds"),
            services=self.plan.services,
            versions=self._versions,
            duration_s=round(time.monotonic() - t0, 3),
            results=results,
            interrupted=interrupted,
        )
        for name, waited in self._waited.items():
            result.services[name].waited_s = waited
        if self.log_lines > 0 and not interrupted:
            await self._attach_logs(result)
        return result

    async def _attach_logs(self, result: RunResult) -> None:
        """The last lines of the log of every service with a failed or errored check."""
        failing = sorted(
            {
                r.service
                for r in result.results
                if r.counts_as_failure or r.outcome is Outcome.FAILED
            }
        )
        sandbox = self.processes if isinstance(self.processes, Sandbox) else None

        async def one(name: str) -> None:
            try:
                async with asyncio.timeout(LOG_TIMEOUT):
                    tail = await tail_of(self.plan.stack, name, self.log_lines, sandbox)
            except TimeoutError:
                tail = LogTail(source="unavailable", lines=[f"no log within {LOG_TIMEOUT:g} s"])
            if tail is not None:
                result.services[name].logs = LogTail(
                    source=self._redactor.text(tail.source),
                    lines=[self._redactor.text(line) for line in tail.lines],
                )

        await asyncio.gather(*(one(n) for n in failing if n in result.services))

    def _stop(self, phases: asyncio.Task[None], reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        if not phases.done() and not phases.cancelling():
            phases.cancel()

    def _alone(self, item: PlanItem) -> bool:
        """Runs with no other check: disruptive (stopping a service must not fail others),
        or exclusive on a kind that spans the stack (a load measures the whole machine)."""
        spec = item.spec
        return spec.disruptive or (spec.exclusive and self._kinds[spec.kind].spans_stack)

    async def _phases(self) -> None:
        """Connect, run the ordinary checks concurrently, then each check that must run
        alone (`_alone`), one at a time."""
        sem = _Slots(self.concurrency)
        locks: dict[str, _ServiceLock] = defaultdict(_ServiceLock)
        async with AsyncExitStack() as exits:
            if self.services is None:
                self.services = await exits.enter_async_context(
                    Services(self.plan.stack, self._kinds, run_id=self.run_id)
                )
            if self.wait > 0:
                await self._wait_ready()
            # each service's checks start once *it* is open and alive: one slow liveness
            # probe (a Celery ping waits for its replies) does not hold back the others. A
            # service that cannot be used finishes its checks at once, without a task each:
            # the cost of a dead service is one connect attempt, not one per check
            items = list(enumerate(self.plan.items))
            ordinary: dict[str, list[tuple[int, PlanItem]]] = defaultdict(list)
            for i, it in items:
                if not self._alone(it):
                    ordinary[it.service].append((i, it))
            tasks = [
                asyncio.create_task(self._service(name, ordinary.get(name, []), sem, locks))
                for name in self.plan.services
            ]
            try:
                await asyncio.gather(*tasks)
                for i, it in items:
                    if not self._alone(it):
                        continue
                    tasks = [asyncio.create_task(self._run_one(i, it, sem, self._holds(it, locks)))]
                    await tasks[0]
            except asyncio.CancelledError:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)  # their cleanups run
                raise

    async def _service(
        self,
        name: str,
        items: list[tuple[int, PlanItem]],
        sem: _Slots,
        locks: dict[str, _ServiceLock],
    ) -> None:
        """Open one service, then run its ordinary checks; a service that could not be used
        gets each of them `error` with its one cause, at once."""
        if name not in self._connect_errors:  # not already found not ready by --wait
            await self._connect(name)
        if name in self._connect_errors:
            if self.services is not None and not self._shared_services and self._alone_user(name):
                await self.services.close(name)  # its client is of no use to the run
            now = time.monotonic()
            for i, it in items:
                self._finish(i, it, Outcome.ERROR, self._connect_errors[name], {}, now)
            return
        tasks = [
            asyncio.create_task(self._run_one(i, it, sem, self._holds(it, locks)))
            for i, it in items
        ]
        if name in self._asking:
            tasks.append(self._asking[name])
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # their cleanups run
            raise

    async def _wait_ready(self) -> None:
        """`--wait`: every service's liveness until it passes; a service still not alive when
        the wait ends gets every check `error` saying so, with what it last answered."""
        assert self.services is not None
        waited = await wait_ready(self.services, list(self.plan.services), self.wait, self.on_wait)
        for name, w in waited.items():
            self._waited[name] = w.waited_s
            if not w.ready:
                self._connect_errors[name] = self._redactor.text(
                    f"not ready after {w.waited_s:.0f} s: {w.cause}"
                )

    def _alone_user(self, name: str) -> bool:
        """No other planned service's checks can be holding this one's client: none links
        to it, and no stack-wide kind (whose checks open every member) is in the plan."""
        if self._shared_by is None:  # worked out once: a plan may have thousands of services
            kinds = [self._kinds[kind] for kind, _ in self.plan.services.values()]
            wide = any(k.spans_stack or k.traffic_of is not None for k in kinds)
            linked = {t for roles in self.plan.stack.links.values() for t in roles.values()}
            self._shared_by = set(self.plan.services) if wide else linked
        return name not in self._shared_by

    async def _connect(self, name: str) -> None:
        """Open the service and probe its liveness once: a service that cannot be opened, does
        not answer in time, or refuses the credentials gets every check `error` with that one
        cause (one wait per service, not one per check)."""
        assert self.services is not None
        try:
            opened = await self.services.open(name)
        except Exception as exc:  # noqa: BLE001 - becomes the error result of every check
            self._connect_errors[name] = self._redactor.text(explain(exc))
            return
        try:
            await probe(opened, self.liveness_timeout)
        except Exception as exc:  # noqa: BLE001 - a service that answered wrongly runs its checks
            gate, cause = liveness_cause(exc, self.liveness_timeout)
            if gate and opened.kind.liveness_gates:
                self._connect_errors[name] = self._redactor.text(cause)
                return
        self._clients[name] = opened.client
        # asked beside the checks, not before them: a server that hangs after its liveness
        # answer must not hold its checks back by the version's timeout
        self._asking[name] = asyncio.create_task(self._ask_version(name, opened))

    async def _ask_version(self, name: str, opened: Any) -> None:
        self._versions[name] = await version(opened)

    def _holds(
        self, item: PlanItem, locks: dict[str, _ServiceLock]
    ) -> list[tuple[_ServiceLock, bool]]:
        return [
            (locks[name], excl) for name, excl in lock_names(self.plan.stack, self._kinds, item)
        ]

    async def _run_one(
        self,
        index: int,
        item: PlanItem,
        sem: _Slots,
        holds: list[tuple[_ServiceLock, bool]],
    ) -> None:
        spec = item.spec
        timeout = self.timeout or spec.timeout or DEFAULT_TIMEOUT
        started = time.monotonic()
        if item.service in self._connect_errors:
            self._finish(
                index, item, Outcome.ERROR, self._connect_errors[item.service], {}, started
            )
            return
        ctx: CheckContext[Any] | None = None
        outcome, message, evidence = Outcome.ERROR, "", {}
        acquired: list[tuple[_ServiceLock, bool]] = []
        try:
            async with sem.hold(self.expected.get(f"{spec.id}[{item.service}]", 0.0), index):
                for lock, exclusive in holds:
                    await lock.acquire(exclusive)
                    acquired.append((lock, exclusive))
                self.progress.check_started(item)
                started = time.monotonic()
                typed = typed_of(self.plan.stack, item.service, self._kinds[spec.kind])
                ctx = CheckContext(
                    client=self._clients[item.service],
                    service_name=item.service,
                    service=self.plan.stack.service(item.service),
                    stack=self.plan.stack,
                    ns=service_namespace(self.run_id, item.service),
                    run_id=self.run_id,
                    options=typed.options,
                    expectations=typed.expectations,
                    services=self.services,
                    sandbox=self.plan.sandbox,
                    processes=self.processes,
                )
                outcome, message = await call_check(spec.fn, ctx, timeout)
        except asyncio.CancelledError:
            reason = self._stop_reason or "interrupted"
            when = "while running" if ctx is not None else "before it started"
            outcome, message = Outcome.ERROR, f"{reason} reached {when}"
            if reason == "interrupted":
                message = f"interrupted {when}"
        finally:
            if ctx is not None:
                evidence = ctx.evidence
                problems = list(dict.fromkeys(await ctx.run_cleanups(self.cleanup_timeout)))
                if problems:
                    evidence["cleanup_problems"] = problems
                    if outcome is Outcome.PASSED or outcome is Outcome.SKIPPED:
                        outcome, message = Outcome.ERROR, problems[0]
                    else:  # the cause is already said; keep the message one line
                        message += f" (and {len(problems)} cleanup(s) failed; see evidence)"
            try:
                for lock, exclusive in reversed(acquired):
                    await lock.release(exclusive)
            finally:
                self._finish(index, item, outcome, message, evidence, started)

    def _finish(
        self,
        index: int,
        item: PlanItem,
        outcome: Outcome,
        message: str,
        evidence: dict[str, Any],
        started: float,
    ) -> None:
        result = self._result(item, outcome, message, evidence, time.monotonic() - started)
        self._results[index] = result
        self.progress.check_finished(result)

    def _skipped(self, item: PlanItem, reason: str) -> CheckResult:
        return self._result(item, Outcome.SKIPPED, reason, {}, 0.0)

    def _result(
        self, item: PlanItem, outcome: Outcome, message: str, evidence: dict[str, Any], took: float
    ) -> CheckResult:
        spec = item.spec
        return CheckResult(
            check=spec.id,
            service=item.service,
            kind=spec.kind,
            capability=spec.capability,
            title=spec.title,
            outcome=outcome,
            severity=spec.severity,
            disruptive=spec.disruptive,
            duration_s=round(took, 3),
            message=self._redactor.text(one_line(message)),
            evidence=self._redactor.data(_jsonable(evidence)),
        )


def _jsonable(value: Any) -> Any:
    """Evidence must survive JSON: bytes become text, unknown objects their repr."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


async def run_plan(plan: Plan, **kwargs: Any) -> RunResult:
    return await Runner(plan, **kwargs).run()
