"""Redis and Celery checks against real servers: the sandbox's, and a bare one behind faults.

Every capability is shown both passing on a healthy server and failing, with what was seen,
when the real server misbehaves (no persistence, no worker, wrong role) or when a fault
proxy in front of it rewrites commands (TTL ignored, PUBLISH dropped, INCR stuck).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from stackprobe.catalog import known_kinds
from stackprobe.sandbox.component import Layout
from stackprobe.sandbox.components.observability import CACHE_BIN
from tests.conftest import RunningSandbox, need_binary, redis_server
from tests.faults.resp_proxy import RespProxy, drop_publish, ignore_expiry, stale_incr
from tests.integration.helpers import outcomes, run_stack, write_stack

REDIS_CAPS = known_kinds()["redis"].capabilities


@dataclass(frozen=True)
class Server:
    id: str
    binary: str
    install: str
    name: str  # INFO server_name (Valkey) or "redis"
    version: str  # the version it must report (Valkey: valkey_version, not redis_version)


SERVERS = (
    Server("redis-7.0", "redis-server", "scripts/install-services redis", "redis", "7.0."),
    Server("redis-8.2", str(CACHE_BIN / "redis-server-8.2"), "scripts/install-services redis8", "redis", "8.2."),
    Server("valkey-8.1", str(CACHE_BIN / "valkey-server-8.1"), "scripts/install-services valkey", "valkey", "8.1."),
    Server("valkey-9.1", str(CACHE_BIN / "valkey-server-9.1"), "scripts/install-services valkey", "valkey", "9.1."),
)  # fmt: skip


@pytest.fixture(scope="module", params=SERVERS, ids=[s.id for s in SERVERS])
def redis_kind_server(request: pytest.FixtureRequest) -> Server:
    server: Server = request.param
    if shutil.which(server.binary) is None:
        need_binary(Path(server.binary).name, server.install)  # fails in CI, skips elsewhere
    return server


@pytest.fixture(scope="module")
def bare_redis(
    tmp_path_factory: pytest.TempPathFactory, redis_kind_server: Server
) -> Iterator[int]:
    """This module's bare server: each of Debian's Redis 7.0, Redis 8.2, Valkey 8.1 and 9.1
    in turn (persisting nothing), its INFO checked to be the server the test id names."""
    server = redis_kind_server
    with redis_server(server.binary, tmp_path_factory.mktemp(f"bare-{server.id}")) as port:
        client = redis.Redis(port=port)
        info = client.info("server")
        client.close()
        said = (str(info.get("server_name") or "redis"), str(info.get("valkey_version") or info["redis_version"]))  # fmt: skip
        assert said[0] == server.name and said[1].startswith(server.version), (server, said)
        yield port


def test_every_redis_capability_passes_on_the_sandbox_with_evidence(
    sandbox: RunningSandbox,
) -> None:
    result = run_stack(sandbox.sandbox.stack_file, kinds=("redis", "celery"))
    assert {r.check: r.message for r in result.results if r.outcome.value != "passed"} == {}
    cov = result.coverage.services["cache"]
    assert (cov.percent, set(cov.capabilities)) == (100.0, set(REDIS_CAPS))
    assert result.coverage.services["worker"].percent == 100.0
    by_check = {r.check: r for r in result.results}
    assert (
        by_check["redis.connectivity.ping"].evidence["version"] == result.services["cache"].version
    )
    assert by_check["redis.celery-queue.round_trip"].evidence["round_trip_ms"] > 0
    assert by_check["redis.sessions.sliding_expiry"].evidence["expired_after_s"] > 1.0
    assert by_check["redis.cache-invalidation.pubsub"].evidence["delivery_ms"] < 2000
    assert by_check["celery.workers.ping"].evidence["workers"][0].startswith("stackprobe-sandbox@")


def _bare(tmp_path: Path, port: int, **extra: object) -> Path:
    return write_stack(
        tmp_path, {"cache": {"kind": "redis", "url": f"redis://127.0.0.1:{port}/0", **extra}}
    )


def test_persistence_fails_as_a_warning_when_redis_persists_nothing(
    tmp_path: Path, bare_redis: int
) -> None:
    result = run_stack(_bare(tmp_path, bare_redis), capabilities=("persistence",))
    r = {x.check: x for x in result.results}
    configured = r["redis.persistence.configured"]
    assert (configured.outcome.value, configured.severity.value) == ("failed", "warning")
    assert "nothing is persisted (save '' and appendonly no)" in configured.message
    assert configured.evidence["appendonly"] == "no"
    assert result.exit_code == 0  # a failed warning is shown but does not fail the run


def test_connectivity_fails_when_the_role_is_not_the_expected_one(
    tmp_path: Path, bare_redis: int
) -> None:
    path = _bare(tmp_path, bare_redis, expectations={"role": "slave"})
    [r] = run_stack(path, capabilities=("connectivity",)).results
    assert (r.outcome.value, r.message) == (
        "failed",
        "role: expected 'slave' (expectations.role), saw 'master'",
    )


def test_celery_queue_fails_without_a_worker_and_sends_nothing(
    tmp_path: Path, bare_redis: int
) -> None:
    client = redis.Redis(port=bare_redis)
    before = set(client.keys("*"))
    [r] = run_stack(_bare(tmp_path, bare_redis), capabilities=("celery-queue",)).results
    assert r.outcome.value == "failed"
    assert r.message == "no Celery worker answered ping within 1 s on this broker (queue 'celery')"
    assert client.llen("celery") == 0  # no task was left in a queue nobody reads
    assert set(client.keys("*")) == before
    client.close()


@pytest.mark.parametrize(
    ("rewrite", "capability", "check", "seen"),
    [
        (ignore_expiry, "operations", "redis.operations.ttl", "PTTL after SET PX 600000"),
        (ignore_expiry, "sessions", "redis.sessions.sliding_expiry", "of the 800 ms TTL, saw -1: reading did not extend it"),
        (ignore_expiry, "cache-invalidation", "redis.cache-invalidation.ttl_and_delete", "TTL invalidation not reached"),
        (drop_publish, "cache-invalidation", "redis.cache-invalidation.pubsub", "PUBLISH receivers: expected 1, saw 0"),
        (stale_incr, "cache-invalidation", "redis.cache-invalidation.versioned_and_tags", "version bump: expected 2, saw 1"),
    ],
)  # fmt: skip
def test_checks_fail_with_what_they_saw_when_redis_misbehaves(
    tmp_path: Path, bare_redis: int, rewrite: object, capability: str, check: str, seen: str
) -> None:
    with RespProxy(bare_redis, rewrite).running() as proxy:  # type: ignore[arg-type]
        result = run_stack(_bare(tmp_path, proxy.port), capabilities=(capability,))
    r = {x.check: x for x in result.results}[check]
    assert r.outcome.value == "failed", r.message
    assert seen in r.message


def test_sliding_expiry_fails_when_access_does_not_extend_the_session(
    tmp_path: Path, bare_redis: int
) -> None:
    """Only the sliding PEXPIRE on read is dropped: the session dies at its first TTL."""
    calls: dict[bytes, int] = {}

    def drop_second_pexpire(cmd: list[bytes]) -> list[bytes]:
        if cmd[0].upper() == b"PEXPIRE" and b"session" in cmd[1]:
            calls[cmd[1]] = calls.get(cmd[1], 0) + 1
            if calls[cmd[1]] == 2:  # per session: 1st = create, 2nd = the read that slides it
                return [b"PTTL", cmd[1]]
        return cmd

    with RespProxy(bare_redis, drop_second_pexpire).running() as proxy:
        result = run_stack(_bare(tmp_path, proxy.port), capabilities=("sessions",))
    r = {x.check: x for x in result.results}["redis.sessions.sliding_expiry"]
    assert r.outcome.value == "failed"
    # the PTTL left after the read is what the first TTL left, below what a renewal leaves
    assert re.fullmatch(
        r"PTTL right after the read: expected at least \d+ ms of the 800 ms TTL, saw \d+: "
        r"reading did not extend it",
        r.message,
    ), r.message


def test_stopped_redis_makes_every_check_a_one_line_error(tmp_path: Path) -> None:
    from tests.conftest import free_port

    result = run_stack(_bare(tmp_path, free_port()))
    assert set(outcomes(result).values()) == {"error"}
    assert len(result.results) == len(known_kinds()["redis"].checks)
    for r in result.results:
        assert r.message.startswith("redis: cannot connect to 127.0.0.1:"), r.message
    assert result.exit_code == 1


def test_celery_workers_check_fails_when_fewer_workers_than_expected(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    url = sandbox.redis_url
    path = write_stack(
        tmp_path, {"w": {"kind": "celery", "url": url, "options": {"min_workers": 2}}}
    )
    [r] = run_stack(path).results
    assert (r.outcome.value, r.message) == (
        "failed",
        "expected at least 2 worker(s) to answer ping within 1 s, 1 answered",
    )
    assert len(r.evidence["workers"]) == 1


def test_two_services_on_one_redis_never_touch_each_others_keys(
    tmp_path: Path, bare_redis: int
) -> None:
    """A cache and a broker in one Redis: each service's checks name their keys apart."""
    url = f"redis://127.0.0.1:{bare_redis}/0"
    path = write_stack(
        tmp_path,
        {"cache": {"kind": "redis", "url": url}, "broker": {"kind": "redis", "url": url}},
    )
    result = run_stack(path, capabilities=("operations", "sessions", "cache-invalidation"))
    assert {
        r.check + "@" + r.service: r.message for r in result.results if r.outcome.value != "passed"
    } == {}


def test_every_redis_check_gives_the_same_verdict_on_each_server_and_names_it(
    tmp_path: Path, bare_redis: int, redis_kind_server: Server
) -> None:
    """The whole redis kind through the runner: on Redis 7.0, 8.2, Valkey 8.1 and 9.1 every
    check passes except the two this bare server cannot pass (it persists nothing and no
    Celery worker reads it); ping names the server and its own version."""
    result = run_stack(_bare(tmp_path, bare_redis))
    assert len(result.results) == len(known_kinds()["redis"].checks)
    failed = {
        r.check: (r.outcome.value, r.severity.value, r.message)
        for r in result.results
        if r.outcome.value != "passed"
    }
    persisted = failed.get("redis.persistence.configured", ("", "", ""))
    no_worker = "no Celery worker answered ping within 1 s on this broker (queue 'celery')"
    assert failed == {
        "redis.persistence.configured": ("failed", "warning", persisted[2]),
        "redis.celery-queue.round_trip": ("failed", "error", no_worker),
    }, failed
    assert "nothing is persisted (save '' and appendonly no)" in persisted[2]
    ping = {r.check: r for r in result.results}["redis.connectivity.ping"]
    server = redis_kind_server
    assert ping.evidence["server"] == server.name
    assert ping.evidence["version"].startswith(server.version)
    assert ping.message.startswith(f"{server.name.capitalize()} {ping.evidence['version']} (master)")  # fmt: skip
    assert result.services["cache"].version == ping.evidence["version"]


@pytest.mark.parametrize("server", SERVERS[1:], ids=[s.id for s in SERVERS[1:]])
def test_every_redis_and_celery_capability_passes_on_newer_servers(
    tmp_path: Path, server: Server
) -> None:
    """The sandbox's Redis (persistence on) and instrumented Celery worker, with the server
    replaced by Redis 8.2, Valkey 8.1 or 9.1 (Debian's 7.0 is the session sandbox's): every
    redis and celery check passes, as on 7.0."""
    import dataclasses

    from stackprobe.sandbox.components import redis as sandbox_redis
    from stackprobe.sandbox.manager import Sandbox

    if shutil.which(server.binary) is None:
        need_binary(Path(server.binary).name, server.install)

    def command(layout: Layout) -> list[str]:
        argv = sandbox_redis.REDIS.command(layout)
        assert argv[0] == "redis-server"
        return [server.binary, *argv[1:]]

    box = Sandbox(
        root=tmp_path / "sandbox",
        components=(
            dataclasses.replace(sandbox_redis.REDIS, binary=server.binary, command=command),
            dataclasses.replace(sandbox_redis.CELERY_WORKER, requires=("redis",)),
        ),
    )
    path = box.up()
    try:
        result = run_stack(path, kinds=("redis", "celery"))
    finally:
        box.down()
    assert {r.check: r.message for r in result.results if r.outcome.value != "passed"} == {}
    assert result.coverage.services["cache"].percent == 100.0
    assert result.coverage.services["worker"].percent == 100.0
    ping = {r.check: r for r in result.results}["redis.connectivity.ping"]
    assert (ping.evidence["server"], ping.evidence["version"][:4]) == (server.name, server.version)
    persisted = {r.check: r for r in result.results}["redis.persistence.configured"]
    assert persisted.evidence["appendonly"] == "yes"
