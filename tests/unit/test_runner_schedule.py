"""The runner's scheduling: a service's checks start when *it* is open (not when every service
is), a freed slot goes to the check that took longest last time (so the slowest checks do not
start last), and an exclusive stack-wide check runs alone after the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from stackprobe.check import CheckContext, Outcome
from stackprobe.config import ServiceConfig, Stack, StackConfig
from stackprobe.kinds import Kind, Target
from stackprobe.results import CheckResult, RunResult, ServiceInfo, summarize
from stackprobe.runner import Plan, PlanItem, Runner
from stackprobe.store import last_durations, save_result


def service(kind: str) -> ServiceConfig:
    return ServiceConfig.model_construct(
        kind=kind, url="fake://h", endpoints={}, password=None, token=None, username=None,
        depends_on=[], disruption="forbidden", links={}, expectations={}, options={}, slo=None,
    )  # fmt: skip


def one_service_plan(kind: Kind[str]) -> Plan:
    """Every check of `kind` on its one service `s`."""
    config = StackConfig.model_construct(version=1, stack="t", services={"s": service(kind.name)})
    return Plan(
        stack=Stack(path=Path("t.yaml"), config=config),
        items=tuple(PlanItem(spec, "s") for spec in kind.checks),
        services={"s": (kind.name, kind.capabilities)},
    )


def two_service_stack(
    slow_liveness: float, slow_version: float
) -> tuple[Stack, dict[str, Kind[str]], list[str]]:
    events: list[str] = []
    started = time.monotonic()

    @asynccontextmanager
    async def connect(target: Target) -> AsyncIterator[str]:
        yield target.name

    async def liveness(client: str) -> None:
        if client == "slow":
            await asyncio.sleep(slow_liveness)

    async def version(client: str) -> str:
        await asyncio.sleep(slow_version)
        return "1.0"

    kind: Kind[str] = Kind(
        name="fake", description="", capabilities=("alpha",), connect=connect,
        liveness=liveness, version=version,
    )  # fmt: skip

    async def note(ctx: CheckContext[Any]) -> str:
        events.append(f"{ctx.service_name}@{time.monotonic() - started:.2f}")
        return "ok"

    kind.check("alpha", title="note")(note)
    svc = service("fake")
    config = StackConfig.model_construct(version=1, stack="t", services={"fast": svc, "slow": svc})
    return Stack(path=Path("t.yaml"), config=config), {"fake": kind}, events


def test_a_slow_service_does_not_hold_back_the_checks_of_the_others() -> None:
    stack, kinds, events = two_service_stack(slow_liveness=0.6, slow_version=0.05)
    spec = kinds["fake"].checks[0]
    plan = Plan(
        stack=stack,
        items=(PlanItem(spec, "fast"), PlanItem(spec, "slow")),
        services={n: ("fake", ("alpha",)) for n in ("fast", "slow")},
    )
    result = asyncio.run(Runner(plan, kinds=kinds).run())
    at = dict(e.split("@") for e in events)
    assert float(at["fast"]) < 0.3  # the slow liveness probe of the other is not waited for
    assert 0.6 <= float(at["slow"]) < 0.9
    assert {n: s.version for n, s in result.services.items()} == {"fast": "1.0", "slow": "1.0"}


def test_a_freed_slot_goes_to_the_check_that_took_longest_last_time() -> None:
    order: list[str] = []

    @asynccontextmanager
    async def connect(target: Target) -> AsyncIterator[str]:
        yield "c"

    kind: Kind[str] = Kind(name="fake", description="", capabilities=("alpha",), connect=connect)
    for name in ("a", "b", "c", "d"):

        async def check(ctx: CheckContext[Any], name: str = name) -> str:
            order.append(name)
            await asyncio.sleep(0.01)
            return "ok"

        kind.check("alpha", title=name, name=name)(check)
    plan = one_service_plan(kind)
    expected = {"fake.alpha.c[s]": 9.0, "fake.alpha.d[s]": 5.0}
    asyncio.run(Runner(plan, kinds={"fake": kind}, concurrency=1, expected=expected).run())
    assert order[1:] == ["c", "d", "b"]  # `a` had the only slot; then the slowest first


def test_last_durations_read_the_newest_runs_of_the_same_stack(tmp_path: Path) -> None:
    def result(run_id: str, stack: str, took: float) -> RunResult:
        results = [
            CheckResult(
                check="x.y.z",
                service="s",
                kind="x",
                capability="y",
                outcome=Outcome.PASSED,
                duration_s=took,
            )
        ]
        return RunResult(
            stackprobe="0", run_id=run_id, stack=stack, started_at="", services={"s": ServiceInfo(kind="x")},
            duration_s=took, summary=summarize(results), results=results,
            coverage={"percent": 100.0, "services": {}},  # type: ignore[arg-type]
        )  # fmt: skip

    save_result(result("20261125T115700Z-aaaaaa", "mine", 1.0), tmp_path)
    save_result(result("20261125T115800Z-bbbbbb", "mine", 2.0), tmp_path)
    save_result(result("20261125T115900Z-cccccc", "other", 3.0), tmp_path)
    assert last_durations("mine", tmp_path) == {"x.y.z[s]": 2.0}
    assert last_durations("none", tmp_path) == {}


def test_an_exclusive_check_of_a_kind_that_spans_the_stack_runs_alone_after_the_others() -> None:
    running: list[str] = []
    seen_beside: dict[str, list[str]] = {}

    @asynccontextmanager
    async def connect(target: Target) -> AsyncIterator[str]:
        yield "c"

    kind: Kind[str] = Kind(
        name="whole", description="", capabilities=("alpha",), connect=connect, spans_stack=True
    )

    def make(name: str) -> Any:
        async def check(ctx: CheckContext[Any]) -> str:
            seen_beside[name] = list(running)
            running.append(name)
            await asyncio.sleep(0.05)
            running.remove(name)
            return "ok"

        return check

    kind.check("alpha", title="load", name="load", exclusive=True)(make("load"))
    for name in ("a", "b"):
        kind.check("alpha", title=name, name=name)(make(name))
    plan = one_service_plan(kind)
    asyncio.run(Runner(plan, kinds={"whole": kind}).run())
    assert seen_beside["load"] == []  # a and b had finished; nothing ran beside it
    assert sorted(seen_beside["b"]) in ([], ["a"])
