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
