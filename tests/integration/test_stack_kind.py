"""The `stack` kind and the sandbox process API, against a real sandbox of its own (Redis and a
Celery worker that depends on it): kill -9 of Redis through the process API makes
`service-health` fail naming Redis and `dependencies` fail naming the worker; starting it again
on the same port makes both pass."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis

from stackprobe.loader import load_stack
from stackprobe.results import RunResult
from stackprobe.runner import Runner, Selection, make_plan
from stackprobe.sandbox.components.redis import CELERY_WORKER, REDIS
from stackprobe.sandbox.manager import Sandbox, process_state
from stackprobe.testing import eventually
from tests.conftest import need_binary


@pytest.fixture(scope="module")
def small_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    need_binary("redis-server", "scripts/install-services redis")
    box = Sandbox(
        root=tmp_path_factory.mktemp("stack-kind") / "sandbox", components=(REDIS, CELERY_WORKER)
    )
    try:
        box.up()
        yield box
    finally:
        box.down()


def stack_checks(box: Sandbox) -> RunResult:
    """The stack service's non-disruptive checks (the scenarios are disruptive: not run)."""
    plan = make_plan(load_stack(box.stack_file), Selection(services=("stack",)))
    plan = replace(plan, skipped=())
    return asyncio.run(Runner(plan).run())


def test_the_sandbox_stack_file_has_a_stack_service_whose_checks_pass(
    small_sandbox: Sandbox,
) -> None:
    result = stack_checks(small_sandbox)
    by = {r.check: r for r in result.results}
    assert {c: r.outcome.value for c, r in by.items()} == {
        "stack.service-health.all_alive": "passed",
        "stack.dependencies.depends_on_up": "passed",
        "stack.e2e-flow.synthetic_transaction": "passed",  # Redis and the worker only
        "stack.load.slo_smoke": "passed",  # the sandbox's cache declares an slo:
    }, [r.message for r in by.values()]
    health = by["stack.service-health.all_alive"].evidence["services"]
    assert set(health) == {"cache", "worker"}
    assert all(s["alive"] and s["latency_ms"] > 0 for s in health.values())
    assert result.coverage.services["stack"].capabilities == {
        "service-health": "passed",
        "dependencies": "passed",
        "failover": "not run",  # disruptive: only with --allow-disruption
        "recovery": "not run",
        "e2e-flow": "passed",
        "load": "passed",
    }


def test_killed_redis_fails_both_checks_naming_it_and_its_dependents(
    small_sandbox: Sandbox,
) -> None:
    process = small_sandbox.process("cache")  # the stack service's name finds its component
    assert process.name == "redis" and process.services == ("cache",)
    port = int(
        str(load_stack(small_sandbox.stack_file).service("cache").url)
        .rsplit(":", 1)[1]
        .split("/")[0]
    )
    process.kill()
    assert not process.running()
    try:
        by = {r.check: r for r in stack_checks(small_sandbox).results}
        health = by["stack.service-health.all_alive"]
        assert health.outcome.value == "failed"
        # the worker is not alive either: nobody reaches it through its dead broker
        assert health.message.startswith(
            "2 of 2 service(s) not alive: cache (redis): redis: cannot connect to 127.0.0.1:"
        )
        deps = by["stack.dependencies.depends_on_up"]
        assert deps.outcome.value == "failed"
        assert deps.message.startswith(
            "worker depend(s) on cache, which is down (redis: cannot connect"
        )
        assert deps.evidence["down_dependencies"]["cache"]["dependents"] == ["worker"]
    finally:
        waited = process.start()
    assert waited < 30 and process.ready()
    assert redis.Redis(port=port).ping()  # the same port as before the kill
    # the worker reconnects to its broker by itself (Celery's own back-off): poll for it
    eventually(
        lambda: (
            True
            if {r.outcome.value for r in stack_checks(small_sandbox).results} == {"passed"}
            else None
        ),
        30,
        "stack checks passing again after Redis came back",
        interval=0.5,
    )


def test_freeze_and_thaw_a_sandbox_process(small_sandbox: Sandbox) -> None:
    process = small_sandbox.process("redis")
    pid = process.pid
    assert pid is not None
    process.freeze()
    try:
        assert process_state(pid) == "T" and process.frozen() and not process.ready()
    finally:
        process.thaw()
    assert process.pid == pid and process.ready()


def test_restart_keeps_the_pid_file_honest_and_up_repairs_a_frozen_process(
    small_sandbox: Sandbox,
) -> None:
    process = small_sandbox.process("redis")
    old = process.pid
    process.restart()
    assert process.pid not in (None, old) and process.ready()
    frozen = process.pid
    assert frozen is not None
    os.killpg(frozen, signal.SIGSTOP)  # as a killed fault injection would leave it
    eventually(lambda: process.frozen() or None, timeout=5, what="redis stopped by SIGSTOP")
    small_sandbox.up()
    assert process.pid == frozen and not process.frozen() and process.ready()


def test_unknown_names_are_one_clear_error(small_sandbox: Sandbox) -> None:
    from stackprobe.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"no sandbox component runs 'nope' \(components: redis \(cache\), celery-worker \(worker\)\)",
    ):
        small_sandbox.process("nope")
