"""Selecting what to run: filters, their errors, and coverage's denominator."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackprobe.catalog import known_kinds
from stackprobe.coverage import compute
from stackprobe.errors import ConfigError
from stackprobe.loader import load_stack
from stackprobe.runner import Selection, make_plan


@pytest.fixture
def stack_path(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        "services:\n  cache: {kind: redis, url: 'redis://h:1/0'}\n  worker: {kind: celery, url: 'redis://h:1/0'}\n"
    )
    return path


def test_capability_filter_selects_checks_but_coverage_counts_every_capability(
    stack_path: Path,
) -> None:
    plan = make_plan(load_stack(stack_path, env={}), Selection(capabilities=("sessions",)))
    assert {i.spec.capability for i in plan.items} == {"sessions"}
    assert len(plan.services["cache"][1]) == 6
    assert compute(plan.services, []).services["cache"].capabilities["sessions"] == "not run"


def test_kind_and_service_filters(stack_path: Path) -> None:
    stack = load_stack(stack_path, env={})
    assert set(make_plan(stack, Selection(kinds=("celery",))).services) == {"worker"}
    assert set(make_plan(stack, Selection(services=("cache",))).services) == {"cache"}


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (Selection(services=("nope",)), "--service: no service 'nope'"),
        (
            Selection(kinds=("mongo",)),
            "--kind: unknown kind 'mongo'; known kinds: " + ", ".join(known_kinds()),
        ),
        (
            Selection(kinds=("celery",), capabilities=("sessions",)),
            "--capability: 'sessions' is not a capability",
        ),
    ],
)
def test_bad_selection_is_a_config_error(
    stack_path: Path, selection: Selection, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_plan(load_stack(stack_path, env={}), selection)


def test_a_stack_plan_runs_on_an_added_stack_service_and_disruption_must_be_asked_for(
    stack_path: Path,
) -> None:
    import asyncio

    from stackprobe.check import CheckContext, CheckSpec
    from stackprobe.runner import Runner, stack_plan

    async def disrupts(ctx: CheckContext[object]) -> str:
        ctx.require_disruption("cache")
        return "disrupted cache"

    spec = CheckSpec(
        "stack", "service-health", "probe", "a run-time check", disrupts, disruptive=True
    )
    stack = load_stack(stack_path, env={})
    with pytest.raises(
        ConfigError,
        match=r"stack.service-health.probe is disruptive: run it with --allow-disruption",
    ):
        stack_plan(stack, [spec], Selection())
    plan = stack_plan(stack, [spec], Selection(allow_disruption=True))
    assert [i.service for i in plan.items] == ["stack"] and plan.stack.service(
        "stack"
    ).kind == "stack"
    (skipped,) = asyncio.run(Runner(plan).run()).results  # cache does not allow disruption
    assert (skipped.outcome.value, skipped.message) == (
        "skipped",
        "disruptive: services.cache.disruption is not 'allowed'",
    )
    sandbox = stack_plan(stack, [spec], Selection(allow_disruption=True, sandbox=True))
    (done,) = asyncio.run(Runner(sandbox).run()).results
    assert (done.outcome.value, done.message) == ("passed", "disrupted cache")
