"""Redis as cache, session store and Celery broker, tested through the plugin's `redis_client`.

`redis_client.client` is a plain `redis.Redis`; `redis_client.key(suffix)` names a key under the
run's prefix and deletes it after the test, whatever its outcome.
"""

from __future__ import annotations

import secrets
import time
import uuid

import pytest
from celery import Celery

from stackprobe.config import Stack
from stackprobe.pytest_plugin import RedisHandle
from stackprobe.testing import eventually


@pytest.mark.stackprobe(kind="redis", capability="connectivity")
def test_redis_answers_and_reports_its_version(redis_client: RedisHandle) -> None:
    started = time.perf_counter()
    assert redis_client.client.ping() is True
    assert time.perf_counter() - started < 0.5
    info = redis_client.client.info("server")
    assert int(str(info["redis_version"]).split(".")[0]) >= 6


@pytest.mark.stackprobe(kind="redis", capability="operations")
def test_values_read_back_and_ttls_expire(redis_client: RedisHandle) -> None:
    r = redis_client.client
    profile, short = redis_client.key("profile"), redis_client.key("short-lived")
    r.hset(profile, mapping={"name": "Ada", "visits": "1"})
    r.pexpire(profile, 60_000)
    assert r.hincrby(profile, "visits", 2) == 3
    assert r.hgetall(profile) == {b"name": b"Ada", b"visits": b"3"}
    r.set(short, "x", px=150)
    assert 0 < r.pttl(short) <= 150
    eventually(
        lambda: True if not r.exists(short) else None, timeout=3, what="expiry of a 150 ms key"
    )


@pytest.mark.stackprobe(kind="redis", capability="sessions")
def test_session_slides_on_access_and_ends_when_idle(redis_client: RedisHandle) -> None:
    r = redis_client.client
    session = redis_client.key(f"session-{secrets.token_hex(4)}")
    r.hset(session, mapping={"user": "ada", "csrf": secrets.token_hex(8)})
    r.pexpire(session, 600)
    time.sleep(0.4)
    assert r.hget(session, "user") == b"ada"
    r.pexpire(session, 600)  # the application slides the session on every request
    time.sleep(0.4)  # 0.8 s after login: alive only because access extended it
    assert r.exists(session) == 1
    eventually(
        lambda: True if not r.exists(session) else None, timeout=3, what="idle session expiry"
    )


@pytest.mark.stackprobe(kind="redis", capability="celery-queue")
def test_a_task_round_trips_through_a_live_worker(
    redis_client: RedisHandle, stackprobe_stack: Stack
) -> None:
    worker = next((s for s in stackprobe_stack.services.values() if s.kind == "celery"), None)
    if worker is None:
        pytest.skip("the stack has no celery worker service")
    backend = worker.endpoints.get("backend", worker.url)
    app = Celery("infra-test", broker=worker.url, backend=backend, set_as_current=False)
    task_id = redis_client.name(str(uuid.uuid4()))
    redis_client.cleanup(lambda: redis_client.client.delete(f"celery-task-meta-{task_id}"))
    redis_client.cleanup(app.close)
    nonce = secrets.token_hex(6)
    result = app.send_task(
        "celery.accumulate", args=(nonce,), task_id=task_id, expires=30,
        queue=worker.options.get("queue", "celery"),
    )  # fmt: skip
    assert result.get(timeout=15) == [nonce]


@pytest.mark.stackprobe(kind="redis", capability="cache-invalidation")
def test_invalidation_message_reaches_another_connection(redis_client: RedisHandle) -> None:
    r = redis_client.client
    entry, channel = redis_client.key("cache-entry"), redis_client.name("invalidate")
    r.set(entry, "stale", px=60_000)
    listener = r.pubsub(ignore_subscribe_messages=True)
    redis_client.cleanup(listener.close)
    listener.subscribe(channel)
    eventually(lambda: True if r.pubsub_numsub(channel)[0][1] == 1 else None, 3, "subscription")
    r.delete(entry)
    assert r.publish(channel, entry) == 1
    message = eventually(lambda: listener.get_message(timeout=0.1), 3, "invalidation message")
    assert message["data"] == entry.encode()
    assert r.get(entry) is None


@pytest.mark.stackprobe(kind="redis", capability="persistence")
def test_sessions_and_queued_tasks_survive_a_restart(redis_client: RedisHandle) -> None:
    r = redis_client.client
    save = str(r.config_get("save").get("save", ""))
    aof = r.config_get("appendonly").get("appendonly")
    assert save.strip() or aof == "yes", "nothing is persisted: RDB save is off and AOF is off"
    info = r.info("persistence")
    assert info["rdb_last_bgsave_status"] == "ok"
    if aof == "yes":
        assert info["aof_last_write_status"] == "ok"
