"""The runner: isolation, timeouts, deadline, cancellation, cleanup, exclusivity, redaction."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from stackprobe.check import CheckContext, CheckFailed, Outcome, _one_cleanup
from stackprobe.config import ServiceConfig, Stack, StackConfig
from stackprobe.errors import ServiceError
from stackprobe.kinds import Kind, Target
from stackprobe.results import RunResult
from stackprobe.runner import Plan, PlanItem, Runner

Check = Callable[[CheckContext[Any]], Awaitable[str | None]]


class Harness:
    """A fake kind whose checks are the test's own functions; nothing touches the catalog."""

    def __init__(
        self, *, password: str = "hunter2-secret", connect_error: Exception | None = None
    ) -> None:
        self.events: list[str] = []
        self.connect_error = connect_error

        @asynccontextmanager
        async def connect(target: Target) -> AsyncIterator[str]:
            if self.connect_error:
                raise self.connect_error
            yield "client"

        self.kind: Kind[str] = Kind(
            name="fake", description="test kind", capabilities=("alpha", "beta"), connect=connect
        )
        svc = ServiceConfig.model_construct(
            kind="fake", url="fake://h", endpoints={}, password=password, token=None, username=None,
            depends_on=[], disruption="forbidden", links={}, expectations={}, options={},
        )  # fmt: skip
        config = StackConfig.model_construct(version=1, stack="t", services={"svc": svc})
        self.stack = Stack(path=Path("t.yaml"), config=config)

    def add(self, fn: Check, capability: str = "alpha", **policy: Any) -> None:
        self.kind.check(capability, title=fn.__name__, **policy)(fn)

    def run(self, **runner: Any) -> RunResult:
        plan = Plan(
            stack=self.stack,
            items=tuple(PlanItem(spec, "svc") for spec in self.kind.checks),
            services={"svc": ("fake", self.kind.capabilities)},
        )
        return asyncio.run(Runner(plan, kinds={"fake": self.kind}, **runner).run())


def by_name(result: RunResult) -> dict[str, Any]:
    return {r.check.rsplit(".", 1)[1]: r for r in result.results}


def test_a_crashing_check_errors_alone() -> None:
    h = Harness()

    async def crashes(ctx: CheckContext[Any]) -> None:
        empty: dict[str, int] = {}
        empty["missing"]

    async def fine(ctx: CheckContext[Any]) -> str:
        return "all good"

    h.add(crashes)
    h.add(fine)
    r = by_name(h.run())
    assert (r["crashes"].outcome, r["crashes"].message) == (
        Outcome.ERROR,
        "check crashed: KeyError: 'missing'",
    )
    assert (r["fine"].outcome, r["fine"].message) == (Outcome.PASSED, "all good")


def test_a_hanging_check_times_out_and_still_cleans_up() -> None:
    h = Harness()

    async def hangs(ctx: CheckContext[Any]) -> None:
        ctx.cleanup(lambda: h.events.append("cleaned"))
        await asyncio.sleep(60)

    async def quick(ctx: CheckContext[Any]) -> None:
        pass

    h.add(hangs, timeout=0.2)
    h.add(quick)
    started = time.monotonic()
    result = h.run()
    r = by_name(result)
    assert time.monotonic() - started < 2
    assert (r["hangs"].outcome, r["hangs"].message) == (Outcome.ERROR, "timed out after 0.2 s")
    assert r["quick"].outcome is Outcome.PASSED
    assert h.events == ["cleaned"]
    assert result.exit_code == 1


def test_failed_expectation_carries_message_and_evidence_and_cleanup_runs_last_first() -> None:
    h = Harness()

    async def misbehaves(ctx: CheckContext[Any]) -> None:
        ctx.cleanup(lambda: h.events.append("first registered"))
        ctx.cleanup(lambda: h.events.append("second registered"))
        ctx.evidence["latency_ms"] = 3.5
        raise CheckFailed("expected 3 spans, saw 2", missing=["span-c"])

    h.add(misbehaves)
    [r] = h.run().results
    assert (r.outcome, r.message) == (Outcome.FAILED, "expected 3 spans, saw 2")
    assert r.evidence == {"latency_ms": 3.5, "missing": ["span-c"]}
    assert h.events == ["second registered", "first registered"]


def test_a_failing_cleanup_turns_a_pass_into_an_error_that_names_it() -> None:
    h = Harness()

    async def leaks(ctx: CheckContext[Any]) -> None:
        async def boom() -> None:
            raise RuntimeError("server went away")

        ctx.cleanup(boom, "delete probe keys")

    h.add(leaks)
    [r] = h.run().results
    assert r.outcome is Outcome.ERROR
    assert r.message == "cleanup delete probe keys failed: RuntimeError: server went away"


def test_run_deadline_stops_running_and_queued_checks_with_cleanups() -> None:
    h = Harness()

    def slow(name: str) -> Check:
        async def fn(ctx: CheckContext[Any]) -> None:
            ctx.cleanup(lambda: h.events.append(f"cleaned {name}"))
            await asyncio.sleep(30)

        fn.__name__ = name
        return fn

    h.add(slow("running"), timeout=60)
    h.add(slow("queued"), timeout=60)
    started = time.monotonic()
    r = by_name(h.run(deadline=0.3, concurrency=1))
    assert time.monotonic() - started < 3
    assert r["running"].message == "run deadline reached while running"
    assert r["queued"].message == "run deadline reached before it started"
    assert h.events == ["cleaned running"]


def test_cancelling_the_run_keeps_results_runs_cleanups_and_exits_130() -> None:
    h = Harness()

    async def long(ctx: CheckContext[Any]) -> None:
        ctx.cleanup(lambda: h.events.append("cleaned"))
        await asyncio.sleep(30)

    h.add(long, timeout=60)
    plan = Plan(
        h.stack, tuple(PlanItem(s, "svc") for s in h.kind.checks), {"svc": ("fake", ("alpha",))}
    )

    async def main() -> RunResult:
        task = asyncio.create_task(Runner(plan, kinds={"fake": h.kind}).run())
        await asyncio.sleep(0.2)
        task.cancel()  # what Ctrl-C does to the run under asyncio.run
        return await task

    result = asyncio.run(main())
    assert result.interrupted and result.exit_code == 130
    assert result.results[0].message == "interrupted while running"
    assert h.events == ["cleaned"]


def test_exclusive_check_never_overlaps_and_concurrency_is_bounded() -> None:
    h = Harness()
    active: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    peak = 0

    def make(name: str) -> Check:
        async def fn(ctx: CheckContext[Any]) -> None:
            nonlocal peak
            active.append(name)
            peak = max(peak, len(active))
            if "exclusive" in active and len(active) > 1:
                overlaps.append(tuple(active))
            await asyncio.sleep(0.05)
            active.remove(name)

        fn.__name__ = name
        return fn

    for i in range(6):
        h.add(make(f"c{i}"))
    h.add(make("exclusive"), exclusive=True)
    for i in range(6, 10):
        h.add(make(f"c{i}"))
    result = h.run(concurrency=3)
    assert all(r.outcome is Outcome.PASSED for r in result.results)
    assert overlaps == []
    assert peak == 3


def test_connect_failure_is_every_checks_one_line_error() -> None:
    h = Harness(connect_error=ConnectionRefusedError(111, "Connection refused"))

    async def never(ctx: CheckContext[Any]) -> None:
        raise AssertionError("must not run")

    h.add(never)
    h.add(never, capability="beta")
    result = h.run()
    assert [r.outcome for r in result.results] == [Outcome.ERROR, Outcome.ERROR]
    assert {r.message for r in result.results} == {
        "cannot connect: connection refused: [Errno 111] Connection refused"
    }


def test_secrets_are_redacted_from_messages_and_evidence() -> None:
    h = Harness(password="hunter2-secret")

    async def leaky(ctx: CheckContext[Any]) -> None:
        ctx.evidence["dsn"] = "redis://:other-pw@h:1/0"
        ctx.evidence["nested"] = {"said": ["auth hunter2-secret refused"]}
        raise CheckFailed("server said: invalid password hunter2-secret")

    h.add(leaky)
    [r] = h.run().results
    assert r.message == "server said: invalid password ***"
    assert r.evidence == {"dsn": "redis://:***@h:1/0", "nested": {"said": ["auth *** refused"]}}


def test_failed_warning_is_shown_but_does_not_fail_the_run() -> None:
    h = Harness()

    async def advisory(ctx: CheckContext[Any]) -> None:
        raise CheckFailed("nothing is persisted")

    h.add(advisory, severity="warning")
    result = h.run()
    assert result.results[0].outcome is Outcome.FAILED
    assert result.exit_code == 0
    assert result.coverage.services["svc"].capabilities["alpha"] == "failed"


def test_eventually_reports_what_it_saw_last() -> None:
    h = Harness()
    seen = iter(range(100))

    async def converges_never(ctx: CheckContext[Any]) -> None:
        async def probe() -> None:
            raise CheckFailed(f"found {next(seen)} of 3 spans")

        await ctx.eventually(probe, timeout=0.3, interval=0.05, what="all spans")

    h.add(converges_never)
    [r] = h.run().results
    assert r.outcome is Outcome.FAILED
    # the shape, not the elapsed time to the tenth (a busy machine says 0.4 s)
    assert re.match(r"all spans not reached after \d+(\.\d+)? s \(\d+ attempts\)", r.message)
    assert "found" in r.message and "of 3 spans" in r.message


@pytest.mark.parametrize("bad", ["nope", "alpha-beta"])
def test_checks_must_name_a_capability_of_their_kind(bad: str) -> None:
    h = Harness()

    async def fn(ctx: CheckContext[Any]) -> None:
        pass

    with pytest.raises(ValueError, match="has no capability"):
        h.add(fn, capability=bad)


def test_checks_sending_through_a_linked_service_never_overlap_its_exclusive_checks() -> None:
    """A trace store check's spans pass through the collector: they must not run while an
    exclusive collector check counts the collector's spans."""
    active: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    def make(name: str) -> Check:
        async def fn(ctx: CheckContext[Any]) -> None:
            active.append(name)
            if "count" in active and len(active) > 1:
                overlaps.append(tuple(active))
            await asyncio.sleep(0.05)
            active.remove(name)

        fn.__name__ = name
        return fn

    @asynccontextmanager
    async def connect(target: Target) -> AsyncIterator[str]:
        yield "client"

    collector: Kind[str] = Kind(name="col", description="", capabilities=("pipe",), connect=connect)
    store: Kind[str] = Kind(
        name="store", description="", capabilities=("ingest",), connect=connect,
        links={"collector": "col"}, traffic_links=("collector",),
    )  # fmt: skip
    collector.check("pipe", title="count", exclusive=True)(make("count"))
    for i in range(4):
        store.check("ingest", title="send", name=f"send{i}")(make(f"send{i}"))

    def svc(kind: str) -> ServiceConfig:
        return ServiceConfig.model_construct(
            kind=kind, url="x://h", endpoints={}, password=None, token=None, username=None,
            depends_on=[], disruption="forbidden", links={}, expectations={}, options={},
        )  # fmt: skip

    config = StackConfig.model_construct(
        version=1, stack="t", services={"c": svc("col"), "s": svc("store")}
    )
    stack = Stack(path=Path("t.yaml"), config=config, links={"s": {"collector": "c"}, "c": {}})
    items = [PlanItem(spec, "s") for spec in store.checks[:2]] + [
        PlanItem(collector.checks[0], "c")
    ]
    items += [PlanItem(spec, "s") for spec in store.checks[2:]]
    plan = Plan(stack, tuple(items), {"c": ("col", ("pipe",)), "s": ("store", ("ingest",))})
    result = asyncio.run(Runner(plan, kinds={"col": collector, "store": store}).run())
    assert all(r.outcome is Outcome.PASSED for r in result.results)
    assert overlaps == []


def test_deadline_during_a_cleanup_still_runs_the_other_cleanups() -> None:
    h = Harness()

    async def quick(ctx: CheckContext[Any]) -> None:
        ctx.cleanup(lambda: h.events.append("second cleanup ran"), "second")

        async def slow() -> None:
            await asyncio.sleep(5)

        ctx.cleanup(slow, "slow")  # registered last: runs first and is hit by the deadline

    h.add(quick, timeout=60)
    [r] = h.run(deadline=0.3).results
    assert h.events == ["second cleanup ran"]
    assert (r.outcome, r.message) == (Outcome.ERROR, "cleanup slow interrupted")


def test_disruptive_checks_run_after_the_others_and_alone() -> None:
    h = Harness()
    timeline: list[tuple[str, int]] = []
    active: set[str] = set()

    def make(name: str) -> Check:
        async def fn(ctx: CheckContext[Any]) -> None:
            active.add(name)
            timeline.append((name, len(active)))
            await asyncio.sleep(0.05)
            active.discard(name)

        fn.__name__ = name
        return fn

    h.add(make("restart"), disruptive=True)
    for i in range(4):
        h.add(make(f"ordinary{i}"))
    result = h.run()
    assert all(r.outcome is Outcome.PASSED for r in result.results)
    assert timeline[-1] == ("restart", 1)  # last, and nothing else was running


class LivenessHarness(Harness):
    """The fake kind with a liveness probe that does what the test says."""

    def __init__(self, liveness: Callable[[str], Awaitable[None]], *, gates: bool = True) -> None:
        super().__init__()
        self.kind.liveness = liveness
        self.kind.liveness_gates = gates


def test_a_hung_service_errors_every_check_at_once_within_the_liveness_budget() -> None:
    async def hangs(client: str) -> None:
        await asyncio.sleep(60)

    h = LivenessHarness(hangs)
    ran: list[str] = []

    async def check(ctx: CheckContext[Any]) -> None:
        ran.append("ran")

    for name in ("one", "two", "three"):
        check.__name__ = name
        h.add(check)
    started = time.monotonic()
    result = h.run(timeout=10, liveness_timeout=0.3)
    assert time.monotonic() - started < 2  # one wait for the service, not one per check
    assert ran == []
    assert {(r.outcome, r.message) for r in result.results} == {
        (Outcome.ERROR, "no answer within 0.3 s (liveness probe)")
    }


def test_a_service_that_answers_wrongly_still_runs_its_checks() -> None:
    async def no_leader(client: str) -> None:
        raise CheckFailed("no cluster leader")

    h = LivenessHarness(no_leader)

    async def leader(ctx: CheckContext[Any]) -> None:
        raise CheckFailed("leader: expected one, saw none")

    h.add(leader)
    (r,) = h.run().results
    assert (r.outcome, r.message) == (Outcome.FAILED, "leader: expected one, saw none")


def test_a_client_that_fails_to_close_never_fails_the_run() -> None:
    from stackprobe.connect import open_service

    h = Harness()

    @asynccontextmanager
    async def connect(target: Target) -> AsyncIterator[str]:
        yield "client"
        raise ConnectionError("cannot say goodbye to a dead server")

    h.kind.connect = connect

    async def fine(ctx: CheckContext[Any]) -> str:
        return "ok"

    h.add(fine)
    assert h.run().results[0].outcome is Outcome.PASSED

    async def open_and_close() -> str:
        async with open_service(h.stack, "svc", kinds={"fake": h.kind}) as opened:
            return str(opened.client)

    assert asyncio.run(open_and_close()) == "client"


def test_services_open_each_service_once_and_share_a_failure() -> None:
    from stackprobe.connect import Services, Unusable

    opened: list[str] = []
    h = Harness()

    @asynccontextmanager
    async def connect(target: Target) -> AsyncIterator[str]:
        opened.append(target.name)
        await asyncio.sleep(0.05)
        yield f"client-{len(opened)}"

    h.kind.connect = connect

    async def scenario() -> list[str]:
        async with Services(h.stack, {"fake": h.kind}) as services:
            return list(await asyncio.gather(*(services.client("svc") for _ in range(5))))

    assert asyncio.run(scenario()) == ["client-1"] * 5 and opened == ["svc"]
    h2 = Harness(connect_error=OSError("refused"))

    async def failing() -> list[str]:
        async with Services(h2.stack, {"fake": h2.kind}) as services:
            outcomes = []
            for _ in range(2):
                try:
                    await services.client("svc")
                except Unusable as exc:
                    outcomes.append(str(exc))
            return outcomes

    assert asyncio.run(failing()) == ["cannot connect: OSError: refused"] * 2


def test_cleanups_of_one_check_share_one_budget() -> None:
    """Twenty cleanups that hang cost one cleanup budget and one short grace, not twenty
    budgets (redis.sessions.concurrent_isolation ran 103 s on a hung Redis: 20 x 5 s)."""
    h = Harness()

    async def leaves_hanging_cleanups(ctx: CheckContext[Any]) -> None:
        for i in range(20):
            ctx.cleanup(lambda: asyncio.sleep(30), f"delete {i}")
        ctx.cleanup(lambda: h.events.append("local close"), "close local")  # registered last

    h.add(leaves_hanging_cleanups)
    started = time.monotonic()
    [r] = h.run(cleanup_timeout=1.0).results
    took = time.monotonic() - started
    assert took < 1.0 + 0.25 + 1.0, took  # the budget, one grace for those left, slack
    assert r.outcome is Outcome.ERROR
    assert h.events == ["local close"]
    problems = r.evidence["cleanup_problems"]
    assert len(problems) == 20
    assert all("1 s cleanup budget was spent" in p for p in problems), problems


def live_and_dead(
    h: Harness, links: dict[str, dict[str, str]] | None = None
) -> tuple[Plan, dict[str, float]]:
    """A plan of two services of the harness's kind, `live` and `dead`, with every check of
    the kind on each; the dict gets each service's client close time as the run closes it."""
    closed: dict[str, float] = {}

    @asynccontextmanager
    async def connect(target: Target) -> AsyncIterator[str]:
        try:
            yield target.name
        finally:
            closed[target.name] = time.monotonic()

    h.kind.connect = connect
    svc = h.stack.config.services["svc"]
    config = StackConfig.model_construct(version=1, stack="t", services={"live": svc, "dead": svc})
    plan = Plan(
        stack=Stack(path=Path("t.yaml"), config=config, links=links or {}),
        items=tuple(PlanItem(s, n) for n in ("live", "dead") for s in h.kind.checks),
        services={n: ("fake", h.kind.capabilities) for n in ("live", "dead")},
    )
    return plan, closed


def test_an_unusable_service_is_closed_before_the_run_ends_and_checks_error_at_once() -> None:
    """A service whose liveness probe gives no answer: every check `error` with that cause,
    none of them started, and its client closed while the other service still runs."""
    h = Harness()

    async def liveness(client: str) -> None:
        if client == "dead":
            await asyncio.sleep(30)

    h.kind.liveness = liveness
    started_checks: list[str] = []

    async def slow(ctx: CheckContext[Any]) -> None:
        started_checks.append(ctx.service_name)
        await asyncio.sleep(1.5)

    for i in range(10):
        h.add(slow, name=f"slow_{i}")
    plan, closed = live_and_dead(h)
    t0 = time.monotonic()
    result = asyncio.run(Runner(plan, kinds={"fake": h.kind}, liveness_timeout=0.2).run())
    dead = [r for r in result.results if r.service == "dead"]
    assert {(r.outcome, r.message) for r in dead} == {
        (Outcome.ERROR, "no answer within 0.2 s (liveness probe)")
    }
    assert all(r.duration_s == 0 for r in dead)
    assert "dead" not in started_checks
    assert closed["dead"] - t0 < 1.0  # the live service's checks still had ~0.5 s to go


def test_an_unusable_service_another_one_links_to_stays_open_for_its_checks() -> None:
    """A dead service that a live one links to (a collector's Prometheus): the live service's
    checks may hold its client, so it is closed with the others at the end, not at once."""
    h = Harness()

    async def liveness(client: str) -> None:
        if client == "dead":
            raise ServiceError("refused")

    h.kind.liveness = liveness
    seen: list[list[str]] = []

    async def uses_link(ctx: CheckContext[Any]) -> None:
        if ctx.service_name == "live":
            await ctx.open("dead")
            await asyncio.sleep(0.3)
            seen.append(list(closed))

    h.add(uses_link)
    plan, closed = live_and_dead(h, links={"live": {"peer": "dead"}})
    result = asyncio.run(Runner(plan, kinds={"fake": h.kind}).run())
    outcomes = {r.service: r.outcome for r in result.results}
    assert outcomes == {"live": Outcome.PASSED, "dead": Outcome.ERROR}
    assert seen == [[]]  # nothing closed while the live check used the link
    assert sorted(closed) == ["dead", "live"]


def test_the_version_is_asked_beside_the_checks_not_before_them() -> None:
    """A server that answers its liveness probe and then hangs: its checks start at once,
    not after the version question's timeout."""
    h = Harness()

    async def version(client: str) -> str | None:
        await asyncio.sleep(30)  # cut by VERSION_TIMEOUT (3 s)
        return None

    h.kind.version = version
    seen: list[float] = []
    t0 = time.monotonic()

    async def first(ctx: CheckContext[Any]) -> None:
        seen.append(time.monotonic() - t0)

    h.add(first)
    result = h.run()
    assert seen and seen[0] < 1.0, seen
    assert result.services["svc"].version is None


def test_a_sync_call_that_overruns_its_check_is_abandoned_not_waited_for() -> None:
    """A blocking client call in a thread (Celery's) that outlives its check's timeout: the
    check is `error` at its timeout and `asyncio.run` returns without joining the thread
    (`asyncio.to_thread` would hold it for the full 30 s)."""
    from stackprobe.threads import in_thread

    h = Harness()
    release = threading.Event()

    async def blocks(ctx: CheckContext[Any]) -> None:
        await in_thread(release.wait, 30)

    h.add(blocks, timeout=0.3)
    started = time.monotonic()
    [r] = h.run().results
    took = time.monotonic() - started
    release.set()
    assert (r.outcome, r.message) == (Outcome.ERROR, "timed out after 0.3 s")
    assert took < 3, took


def test_in_thread_gives_back_the_value_or_the_exception() -> None:
    from stackprobe.threads import in_thread

    def boom() -> None:
        raise ValueError("broker said no")

    async def main() -> tuple[int, str]:
        value = await in_thread(sum, [1, 2, 3])
        try:
            await in_thread(boom)
        except ValueError as exc:
            return value, str(exc)
        return value, ""

    assert asyncio.run(main()) == (6, "broker said no")


def test_a_cleanup_the_interruption_reaches_runs_once_more() -> None:
    """Ctrl-C landing inside a cleanup's DEL: the cleanup runs again within the grace, so the
    key is removed; interrupted twice, it is reported."""
    calls: list[int] = []

    async def cleanup() -> None:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(5)

    async def interrupted_once() -> str | None:
        task = asyncio.create_task(_one_cleanup("delete session", cleanup, 5.0, "late"))
        await asyncio.sleep(0.05)
        task.cancel()
        return await task

    assert asyncio.run(interrupted_once()) is None
    assert len(calls) == 2

    async def hangs() -> None:
        await asyncio.sleep(5)

    async def interrupted_twice() -> str | None:
        task = asyncio.create_task(_one_cleanup("delete session", hangs, 5.0, "late"))
        for _ in range(2):
            await asyncio.sleep(0.05)
            task.cancel()
        return await task

    assert asyncio.run(interrupted_twice()) == "cleanup delete session interrupted"
