"""DESIGN rule 2: a run never touches data it did not create, and leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
import redis

from stackprobe.ids import new_run_id
from tests.conftest import CliRunner, RunningSandbox
from tests.integration.helpers import run_stack

WORKER_OWNED = {b"_kombu.binding_deadlines"}  # scores refreshed by the live worker itself


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(sandbox.redis_url)
    yield c
    c.close()


def keys(c: redis.Redis) -> list[bytes]:
    return [k for k in c.keys("*") if isinstance(k, bytes) and k not in WORKER_OWNED]


def deadline_members(c: redis.Redis) -> set[bytes]:
    return set(cast(list[bytes], c.zrange("_kombu.binding_deadlines", 0, -1)))


def seed_user_data(c: redis.Redis) -> list[bytes]:
    """Data an application wrote: every type, some with TTLs, one that looks like ours."""
    c.set("app:config", b"\x00\xffbinary")
    c.set("app:token", "t", ex=3600)
    c.hset("app:session:42", mapping={"user": "ada"})
    c.rpush("app:jobs", "a", "b")
    c.sadd("app:tags", "x", "y")
    c.zadd("app:scores", {"ada": 3})
    c.set("stackprobe-notarun", "user data that merely starts with our prefix")
    return keys(c)


def snapshot(c: redis.Redis) -> dict[bytes, object]:
    return {k: c.dump(k) for k in keys(c)}


def test_full_run_leaves_user_data_byte_for_byte_and_nothing_of_its_own(
    sandbox: RunningSandbox, client: redis.Redis
) -> None:
    seed_user_data(client)
    before = snapshot(client)
    deadlines_before = deadline_members(client)
    result = run_stack(sandbox.sandbox.stack_file)
    assert result.exit_code == 0
    assert snapshot(client) == before
    assert client.keys(f"*{result.run_id}*") == []
    assert deadline_members(client) == deadlines_before


def test_checks_that_time_out_still_remove_what_they_created(
    sandbox: RunningSandbox, client: redis.Redis
) -> None:
    before = snapshot(client)
    result = run_stack(
        sandbox.sandbox.stack_file,
        timeout=0.4,
        capabilities=("sessions", "operations", "cache-invalidation"),
    )
    timed_out = [r.check for r in result.results if r.message.startswith("timed out")]
    assert "redis.sessions.sliding_expiry" in timed_out  # it needs ~1.3 s
    assert client.keys(f"*{result.run_id}*") == []
    assert snapshot(client) == before


def test_clean_removes_only_old_leftovers_with_the_run_prefix(
    sandbox: RunningSandbox, client: redis.Redis, cli: CliRunner
) -> None:
    old = new_run_id(datetime.now(UTC) - timedelta(hours=3))
    fresh = new_run_id()
    client.set(f"stackprobe-{old}-redis-session-abc", "left by a killed run")
    client.set(f"celery-task-meta-stackprobe-{old}-celery-1", "{}")
    client.set(f"stackprobe-{fresh}-redis-ops-string", "a run in progress")
    client.set("stackprobe-notarun", "user data")
    client.set(f"audit:stackprobe-{old}-x", "an app key that merely contains an old run id")
    cli.use_sandbox(sandbox)
    res = cli("clean", "--sandbox", "--older-than", "1h")
    assert res.code == 0, res.stderr
    assert f"stackprobe-{old}-redis-session-abc" in res.stdout
    assert client.keys(f"*{old}*") == [f"audit:stackprobe-{old}-x".encode()]
    assert client.get(f"stackprobe-{fresh}-redis-ops-string") == b"a run in progress"
    assert client.get("stackprobe-notarun") == b"user data"
    client.delete(f"stackprobe-{fresh}-redis-ops-string")
    client.delete(f"audit:stackprobe-{old}-x")
