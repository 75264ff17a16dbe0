"""The whole stack: every service is usable, dependencies hold, and clients recover.

`open_service(stack, name)` is what the per-kind fixtures use: it connects with the kind's own
client and runs its liveness probe, so one loop covers every service of any kind.
"""

from __future__ import annotations

import time

import pytest
import redis

from stackprobe.catalog import known_kinds
from stackprobe.config import Stack
from stackprobe.errors import ServiceError
from stackprobe.pytest_plugin import RedisHandle, open_service


def test_every_service_of_the_stack_is_usable(stackprobe_stack: Stack) -> None:
    assert stackprobe_stack.services, "the stack has no service"
    down: dict[str, str] = {}
    for name in stackprobe_stack.services:
        try:
            with open_service(stackprobe_stack, name) as service:
                assert service.kind in known_kinds()
        except ServiceError as exc:
            down[name] = str(exc)
    assert down == {}


def test_dependencies_are_up_before_their_dependents(stackprobe_stack: Stack) -> None:
    """Each `depends_on` names a service of the stack that answers (checked dependencies first)."""
    edges = [(n, d) for n, s in stackprobe_stack.services.items() for d in s.depends_on]
    if not edges:
        pytest.skip("no service of the stack declares depends_on")
    for dependent, dependency in edges:
        assert dependency in stackprobe_stack.services, (
            f"{dependent} depends on unknown {dependency}"
        )
        try:
            with open_service(stackprobe_stack, dependency):
                pass
        except ServiceError as exc:
            pytest.fail(f"{dependent} depends on {dependency}, which is down: {exc}")


@pytest.mark.stackprobe(kind="redis", capability="connectivity")
def test_a_client_recovers_when_the_server_drops_its_connection(redis_client: RedisHandle) -> None:
    """Failover seen from the application: only this test's own connection is killed."""
    client = redis.Redis.from_url(
        redis_client.url, socket_timeout=2, single_connection_client=True,
        retry_on_error=[redis.ConnectionError], retry=redis.retry.Retry(redis.backoff.NoBackoff(), 2),
    )  # fmt: skip
    redis_client.cleanup(client.close)
    before = client.client_id()
    assert redis_client.client.client_kill_filter(_id=str(before)) == 1
    started = time.monotonic()
    assert client.ping() is True  # reconnected transparently
    assert client.client_id() != before
    assert time.monotonic() - started < 2


@pytest.mark.stackprobe(kind="celery", capability="workers")
def test_the_celery_worker_pool_answers(stackprobe_stack: Stack) -> None:
    workers = [n for n, s in stackprobe_stack.services.items() if s.kind == "celery"]
    if not workers:
        pytest.skip("the stack has no celery service")
    with open_service(stackprobe_stack, workers[0]) as pool:  # liveness: a worker answers ping
        replies = pool.run(pool.client.ping())
    assert replies, "no Celery worker answered ping"
