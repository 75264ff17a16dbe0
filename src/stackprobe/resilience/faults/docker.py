"""Container faults on services of the stack's Compose project, through the Docker Engine API
client the compose kind uses: stop, kill, pause (freeze), unpause (thaw), start, restart.

A stack service names its Compose service with `container:` (`redis`, or
`<compose stack service>/redis` when the stack has several Compose files); the project and
the engine come from the stack's compose service. Skipped with the reason when no engine is
reachable.
"""

from __future__ import annotations

import asyncio
import time

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped
from stackprobe.compose.engine import DockerEngine
from stackprobe.resilience.model import Fault
from stackprobe.services.compose import ComposeClient, container_id, container_of

START_TIMEOUT = 60.0


class DockerInjector:
    name: str = "docker"
    actions: tuple[str, ...] = ("kill", "stop", "freeze", "thaw", "start", "restart")

    async def apply(self, ctx: CheckContext[object], fault: Fault) -> str:
        compose, container, name = await _container(ctx, fault.service)
        engine = compose.engine
        assert engine is not None
        calls = {
            "kill": lambda: engine.kill(container),
            "stop": lambda: engine.stop(container),
            "freeze": lambda: engine.pause(container),
            "thaw": lambda: engine.unpause(container),
            "start": lambda: engine.start(container),
            "restart": lambda: engine.restart(container),
        }
        await calls[fault.action]()
        what = {"freeze": "pause", "thaw": "unpause"}.get(fault.action, fault.action)
        if fault.action in ("start", "restart", "thaw"):
            took = await _running(engine, container)
            return f"docker {what} {name} ({container[:12]}, {fault.service}), running after {took:.1f} s"
        return f"docker {what} {name} ({container[:12]}, {fault.service})"


async def _container(ctx: CheckContext[object], service: str) -> tuple[ComposeClient, str, str]:
    """(the compose client, the container id, the Compose service) that runs `service`."""
    ref = container_of(ctx.stack, service)
    if ref is None:
        raise CheckSkipped(
            f"{service}: docker faults need `container:` on the service naming a Compose "
            "service, and a compose service in the stack (its project and engine); with several "
            "compose services, `container: <compose>/<service>`"
        )
    name, compose_service = ref
    client: ComposeClient = await ctx.open(name)
    if client.engine is None:
        raise CheckSkipped(f"no Docker engine reachable: {client.engine_problem}")
    found = await container_id(client, compose_service)
    if found is None:
        raise CheckSkipped(
            f"{service}: no container of Compose service {compose_service!r} in project {client.project!r}"
        )
    return client, found, compose_service


async def _running(engine: DockerEngine, container: str) -> float:
    """Seconds until the container runs again (and is healthy, when it has a healthcheck)."""
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT:
        state = (await engine.inspect(container)).get("State") or {}
        health = (state.get("Health") or {}).get("Status")
        if state.get("Status") == "running" and health in (None, "healthy"):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise CheckFailed(
        f"container {container[:12]} not running (and healthy) after {START_TIMEOUT:g} s"
    )
