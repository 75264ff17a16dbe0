"""The compose kind's checks end to end: the reference stack, "running" on a Docker Engine API
stand-in (tests/standins/docker.py; no engine runs here), through the real runner.

Every live check is shown passing on a healthy project and failing on the misbehaviour it is
for: an unhealthy or stopped container, a dependency a container cannot reach, a data dir on
the wrong volume, data lost across a restart. With no engine the live checks skip with the
reason, and the static (lint) checks still run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackprobe.compose.images import PROFILES, profile_name
from stackprobe.compose.model import load_compose
from stackprobe.results import RunResult
from tests.integration.helpers import run_stack, write_stack
from tests.standins.docker import Container, DockerStandin

REFERENCE = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "docker-compose.yml"
PROJECT = "stackprobe-reference"
TOOLS = {  # what each image of the reference stack contains, as far as the checks care
    "consul": {"sh", "nc", "curl", "rm", "cat", "printf"},
    "redis": {"sh", "bash", "rm", "cat", "printf", "redis-cli"},
    "worker": {"sh", "bash", "python3", "rm", "cat", "printf"},
    "arangodb": {"sh", "nc", "wget", "rm", "cat", "printf"},
    "tempo": {"/tempo"},
    "otel-collector": {"/otelcol-contrib"},
    "prometheus": {"sh", "nc", "wget", "rm", "cat", "printf"},
    "grafana": {"sh", "nc", "wget", "rm", "cat", "printf"},
}


@pytest.fixture
def engine() -> Iterator[DockerStandin]:
    """The reference project's containers, healthy, each service reachable on its ports."""
    short = Path(tempfile.mkdtemp(prefix="sp-docker-", dir="/tmp"))  # unix socket paths are short
    standin = DockerStandin(short / "docker.sock")
    compose = load_compose(REFERENCE, env={})
    for svc in compose.services.values():
        if svc.profiles:
            continue  # toxiproxy: resilience profile, not started by `up -d`
        mounts: list[dict[str, Any]] = []
        for m in svc.volumes:
            if m.type == "volume":
                mounts.append({"Type": "volume", "Name": f"{PROJECT}_{m.source}",
                               "Source": f"/var/lib/docker/volumes/{PROJECT}_{m.source}/_data",
                               "Destination": m.target, "RW": not m.read_only})  # fmt: skip
            else:
                mounts.append({"Type": "bind", "Source": str(m.source), "Destination": m.target,
                               "RW": not m.read_only})  # fmt: skip
        external = svc.x_stackprobe.get("healthcheck") == "external"
        standin.add(
            Container(PROJECT, svc.name, svc.image or "", tools=set(TOOLS[svc.name]),
                      health=None if external else "healthy", mounts=mounts)
        )  # fmt: skip
        name = profile_name(svc)
        prof = PROFILES.get(name) if name else None
        ports = {p.target[0] for p in svc.ports} | (
            {prof.main_port} if prof and prof.main_port else set()
        )
        standin.reachable[svc.name] = ports
    try:
        with standin:
            yield standin
    finally:
        shutil.rmtree(short, ignore_errors=True)


def container(engine: DockerStandin, service: str) -> Container:
    found = next(c for c in engine.containers if c.service == service)
    return found


def run(tmp_path: Path, engine: DockerStandin | None, **selection: Any) -> RunResult:
    host = engine.host if engine else f"unix://{tmp_path}/no-engine.sock"
    stack = write_stack(
        tmp_path,
        {
            "compose": {
                "kind": "compose",
                "url": str(REFERENCE),
                "options": {"docker_host": host},
                "disruption": "allowed",
            }
        },
    )
    return run_stack(stack, **selection)


def outcome(result: RunResult, check: str) -> tuple[str, str, dict[str, Any]]:
    r = next(r for r in result.results if r.check == check)
    return r.outcome.value, r.message, r.evidence


def test_every_check_passes_on_the_healthy_reference_project(
    tmp_path: Path, engine: DockerStandin
) -> None:
    result = run(tmp_path, engine)
    outcomes = {r.check: r.outcome.value for r in result.results}
    assert outcomes == {
        "compose.healthchecks.lint": "passed",
        "compose.healthchecks.containers_healthy": "passed",
        "compose.startup-order.lint": "passed",
        "compose.networking.lint": "passed",
        "compose.networking.dependencies_reachable": "passed",
        "compose.volumes.lint": "passed",
        "compose.volumes.named_volumes_mounted": "passed",
        "compose.volumes.survives_restart": "skipped",  # disruptive: not asked for
    }, [(r.check, r.message) for r in result.results]
    assert result.coverage.percent == 100.0
    assert result.services["compose"].version == "Docker Engine 24.0.7 (API 1.43)"
    _, message, evidence = outcome(result, "compose.healthchecks.containers_healthy")
    assert evidence["containers"]["tempo (stackprobe-reference-tempo-1)"] == (
        "running (healthcheck external)"
    )
    _, message, evidence = outcome(result, "compose.networking.dependencies_reachable")
    pairs = evidence["pairs"]
    assert pairs["worker -> redis:6379"].startswith("reachable (bash")
    assert pairs["grafana -> prometheus:9090"].startswith("reachable (nc")
    assert pairs["otel-collector -> tempo:3200"].startswith("untested")  # scratch image
    _, message, _ = outcome(result, "compose.startup-order.lint")
    assert "startup: arangodb, consul, redis, tempo -> otel-collector, toxiproxy, worker" in message


def test_unhealthy_container_fails_with_its_last_healthcheck_output(
    tmp_path: Path, engine: DockerStandin
) -> None:
    redis = container(engine, "redis")
    redis.health, redis.health_output = "unhealthy", "Could not connect to Redis at 127.0.0.1:6379"
    state, message, _ = outcome(
        run(tmp_path, engine, capabilities=("healthchecks",)),
        "compose.healthchecks.containers_healthy",
    )
    assert state == "failed"
    assert "redis (stackprobe-reference-redis-1): unhealthy" in message
    assert "Could not connect to Redis" in message


def test_stopped_container_fails(tmp_path: Path, engine: DockerStandin) -> None:
    container(engine, "worker").state = "exited"
    state, message, _ = outcome(
        run(tmp_path, engine, capabilities=("healthchecks",)),
        "compose.healthchecks.containers_healthy",
    )
    assert state == "failed" and "worker (stackprobe-reference-worker-1): exited" in message


def test_project_not_up_fails_saying_how_to_start_it(tmp_path: Path, engine: DockerStandin) -> None:
    engine.containers.clear()
    state, message, _ = outcome(
        run(tmp_path, engine, capabilities=("healthchecks",)),
        "compose.healthchecks.containers_healthy",
    )
    assert state == "failed" and "docker compose -f" in message and "up -d" in message


def test_unreachable_dependency_fails_naming_the_pair(
    tmp_path: Path, engine: DockerStandin
) -> None:
    container(engine, "grafana").unreachable.add(("prometheus", 9090))
    state, message, evidence = outcome(
        run(tmp_path, engine, capabilities=("networking",)),
        "compose.networking.dependencies_reachable",
    )
    assert state == "failed" and "grafana -> prometheus:9090 (nc exit 1)" in message
    assert evidence["pairs"]["worker -> redis:6379"].startswith("reachable")


def test_data_dir_on_the_wrong_volume_fails(tmp_path: Path, engine: DockerStandin) -> None:
    redis = container(engine, "redis")
    redis.mounts = [
        {"Type": "volume", "Name": "0f3e9c", "Source": "/x", "Destination": "/data", "RW": True}
    ]
    state, message, _ = outcome(
        run(tmp_path, engine, capabilities=("volumes",)), "compose.volumes.named_volumes_mounted"
    )
    assert state == "failed"
    assert "redis:/data: volume 0f3e9c, expected volume stackprobe-reference_redis-data" in message


def test_data_survives_a_restart_and_the_marker_is_removed(
    tmp_path: Path, engine: DockerStandin
) -> None:
    result = run(tmp_path, engine, capabilities=("volumes",), allow_disruption=True)
    state, message, evidence = outcome(result, "compose.volumes.survives_restart")
    assert state == "passed", message
    services = evidence["services"]
    assert services["redis"].startswith("kept after restart")
    assert services["tempo"] == "untested: no shell in the image"
    assert all(c.restarts_seen == 1 for c in engine.containers if c.service in ("redis", "consul"))
    leftovers = {n: files for n, files in engine.volumes.items() if files}
    assert leftovers == {}  # every marker removed by name


def test_data_lost_across_a_restart_fails(tmp_path: Path, engine: DockerStandin) -> None:
    """The container writes its data dir to a tmpfs (e.g. an override), so a restart loses it."""
    redis = container(engine, "redis")
    redis.mounts = [
        *redis.mounts,
        {"Type": "tmpfs", "Source": "", "Destination": "/data", "RW": True},
    ]
    redis.mounts = [
        m for m in redis.mounts if not (m["Type"] == "volume" and m["Destination"] == "/data")
    ]
    result = run(tmp_path, engine, capabilities=("volumes",), allow_disruption=True)
    state, message, _ = outcome(result, "compose.volumes.survives_restart")
    assert (
        state == "failed" and "redis:" in message and "gone or changed after a restart" in message
    )


def test_without_an_engine_live_checks_skip_and_lint_still_runs(tmp_path: Path) -> None:
    result = run(tmp_path, None)
    outcomes = {r.check: (r.outcome.value, r.message) for r in result.results}
    assert outcomes["compose.healthchecks.lint"][0] == "passed"
    state, message = outcomes["compose.healthchecks.containers_healthy"]
    assert state == "skipped" and message.startswith("no Docker engine reachable:")
    assert "no-engine.sock" in message
    assert result.exit_code == 0


def test_lint_errors_fail_the_capability(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        REFERENCE.read_text().replace("      - redis-data:/data\n", "", 1),
    )
    stack = write_stack(tmp_path, {"compose": {"kind": "compose", "url": "docker-compose.yml",
                                              "options": {"docker_host": f"unix://{tmp_path}/none.sock"}}})  # fmt: skip
    result = run_stack(stack)
    by = {r.check: r for r in result.results}
    volumes = by["compose.volumes.lint"]
    assert volumes.outcome.value == "failed"
    assert "services.redis.volumes: [data-volume]" in volumes.message
    # the relative bind mounts of the copy are missing too: reported as bind-source-missing
    assert "bind-source-missing" in {f["rule"] for f in volumes.evidence["findings"]}
    assert by["compose.healthchecks.lint"].outcome.value == "passed"


def test_the_engine_client_against_the_standin(engine: DockerStandin) -> None:
    import asyncio

    from stackprobe.compose.engine import DockerEngine

    async def go() -> tuple[str, int, int | None, bool]:
        async with DockerEngine.open(engine.host) as client:
            pong = await client.ping()
            listed = await client.containers(PROJECT)
            redis = next(c for c in listed if c["Labels"]["com.docker.compose.service"] == "redis")
            ok = await client.exec(redis["Id"], ["nc", "-z", "-w", "3", "redis", "6379"])
            missing = await client.exec(redis["Id"], ["nc", "-z", "-w", "3", "redis", "6379"])
            return pong, len(listed), ok.exit_code, missing.missing

    pong, count, code, missing = asyncio.run(go())
    assert (pong, count) == ("OK", 8)  # toxiproxy (profile resilience) is not up
    assert code is None and missing  # the redis image has no nc: reported as missing
    assert "GET /_ping" in engine.requests
    assert sum(r.startswith("POST /exec/") for r in engine.requests) == 2


def test_monitor_liveness_recovers_when_the_engine_comes_up_after_connect(tmp_path: Path) -> None:
    """The monitor keeps one client: an engine missing at connect time must not mean down forever."""
    import asyncio

    from stackprobe.connect import open_service
    from stackprobe.loader import load_stack
    from stackprobe.services.compose import KIND

    short = Path(tempfile.mkdtemp(prefix="sp-docker-", dir="/tmp"))
    socket = short / "docker.sock"
    stack_file = write_stack(
        tmp_path,
        {
            "compose": {
                "kind": "compose",
                "url": str(REFERENCE),
                "options": {"docker_host": f"unix://{socket}"},
            }
        },
    )
    stack = load_stack(stack_file)
    assert KIND.liveness is not None

    async def probe_before_and_after() -> tuple[str, str]:
        async with open_service(stack, "compose") as opened:
            client = opened.client
            try:
                await KIND.liveness(client)  # type: ignore[misc]
                before = "up"
            except Exception as exc:  # noqa: BLE001 - the expected failure, any kind
                before = f"down: {type(exc).__name__}"
            with DockerStandin(socket):
                await KIND.liveness(client)  # type: ignore[misc]
            return before, "up"

    try:
        before, after = asyncio.run(probe_before_and_after())
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert before.startswith("down") and after == "up"


def test_the_docker_fault_injector_stops_kills_pauses_and_starts_containers(
    tmp_path: Path, engine: DockerStandin
) -> None:
    """The resilience docker injector, through the same Engine API client the compose checks
    use, against the stand-in (Engine API v1.43 stop/kill/pause/unpause/start)."""
    import asyncio

    from stackprobe.connect import Services
    from stackprobe.loader import load_stack
    from stackprobe.resilience.faults import injector_for
    from stackprobe.resilience.model import Fault
    from stackprobe.testing import check_context

    stack = load_stack(write_stack(tmp_path, {
        "compose": {"kind": "compose", "url": str(REFERENCE), "options": {"docker_host": engine.host}},
        "cache": {"kind": "redis", "url": "redis://127.0.0.1:1/0", "container": "redis"},
    }))  # fmt: skip
    redis = container(engine, "redis")

    async def scenario() -> list[tuple[str, str]]:
        seen = []
        async with Services(stack) as services:
            ctx = check_context("redis", None, service="cache", stack=stack)
            ctx.services = services
            for action in ("stop", "start", "kill", "start", "freeze", "thaw", "restart"):
                fault = Fault(action=action, service="cache")
                injector = injector_for(ctx, fault)
                assert injector.name == "docker"  # not the sandbox: the container it names
                detail = await injector.apply(ctx, fault)
                seen.append((action, redis.state))
                assert "redis" in detail
        return seen

    assert asyncio.run(scenario()) == [
        ("stop", "exited"), ("start", "running"), ("kill", "exited"), ("start", "running"),
        ("freeze", "paused"), ("thaw", "running"), ("restart", "running"),
    ]  # fmt: skip
    assert [r for r in engine.requests if r.rsplit("/", 1)[-1] in ("stop", "kill", "pause", "unpause", "start")][:2] == [
        f"POST /containers/{redis.id}/stop", f"POST /containers/{redis.id}/start"]  # fmt: skip
