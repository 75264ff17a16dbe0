"""Docker Compose as a kind: the orchestration under the stack (DESIGN: compose capabilities).

`url` is the path of the Compose file (relative to the stack file). Each capability has a
static check (the rules of `stackprobe compose lint`, stackprobe.compose.lint) and, when a
Docker engine is reachable, live checks over the running project through the Engine API:

- healthchecks: every service's container runs and Docker reports it healthy (services
  marked `x-stackprobe: {healthcheck: external}` only need to run: stackprobe's own checks
  watch them);
- startup-order: the dependency graph and the order Compose starts and stops the stack;
- networking: from inside each container, a TCP connection to each of its dependencies
  (nc, bash or python3 in the image; a container with none of them cannot be tested);
- volumes: stateful containers mount their named volumes; with --allow-disruption, a marker
  written to the data directory survives a container restart.

No engine reachable: the live checks are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped
from stackprobe.compose.engine import (
    DockerEngine,
    EngineError,
    container_name,
    docker_host,
    service_of,
)
from stackprobe.compose.images import data_dirs, profile
from stackprobe.compose.lifecycle import one_shot
from stackprobe.compose.lint import ERROR, Finding, LintReport, format_order, lint
from stackprobe.compose.model import ComposeFile, Service, load_compose
from stackprobe.config import ServiceConfig, Stack
from stackprobe.errors import ConfigError
from stackprobe.kinds import Kind, Target

PING_TIMEOUT = 2.0
HEALTHY_WAIT_S = 20.0  # a container still "starting" gets this long to become healthy
RESTART_WAIT_S = 90.0
RESTART_BUDGET_S = 270.0  # restarts one stateful service after another until this is spent


class ComposeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str | None = None  # default: the file's `name:`, else its directory
    docker_host: str | None = None  # default: $DOCKER_HOST, else unix:///var/run/docker.sock
    persistence_services: list[str] | None = None  # default: every stateful service


@dataclass
class ComposeClient:
    path: Path
    compose: ComposeFile
    project: str
    options: ComposeOptions
    engine: DockerEngine | None = None
    engine_problem: str | None = None
    _report: LintReport | None = field(default=None, repr=False)

    @property
    def report(self) -> LintReport:
        if self._report is None:
            self._report = lint(self.compose, str(self.path))
        return self._report

    def need_engine(self) -> DockerEngine:
        if self.engine is None:
            raise CheckSkipped(f"no Docker engine reachable: {self.engine_problem}")
        return self.engine

    async def containers(self) -> dict[str, list[dict[str, Any]]]:
        """Compose service -> its containers in this project (the engine must be reachable)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for container in await self.need_engine().containers(self.project):
            name = service_of(container)
            if name is not None:
                found.setdefault(name, []).append(container)
        return found


def compose_path(target_config: ServiceConfig, stack_file: Path) -> Path:
    assert target_config.url is not None  # validated: url is required
    path = Path(target_config.url).expanduser()
    return path if path.is_absolute() else stack_file.parent / path


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[ComposeClient]:
    path = compose_path(target.config, target.stack.path)
    if not path.is_file():
        raise ConfigError(
            f"{target.stack.path}: services.{target.name}.url: Compose file {path} not found "
            "(the path is relative to the stack file)"
        )
    compose = load_compose(path)
    options: ComposeOptions = target.options
    client = ComposeClient(path, compose, options.project or compose.project, options)
    async with AsyncExitStack() as stack:
        host = docker_host(options.docker_host)
        try:
            engine = await stack.enter_async_context(DockerEngine.open(host))
            async with asyncio.timeout(PING_TIMEOUT):
                await engine.ping()
            client.engine = engine
        except (EngineError, TimeoutError) as exc:
            client.engine_problem = str(exc) or f"{host}: no answer to /_ping"
        yield client


async def _version(client: ComposeClient) -> str | None:
    if client.engine is None:
        return None
    info = await client.engine.version()
    return f"Docker Engine {info.get('Version')} (API {info.get('ApiVersion')})"


async def _liveness(client: ComposeClient) -> None:
    """The monitor keeps one client for its lifetime: when the engine was unreachable at
    connect time, ask again on each probe instead of staying down forever."""
    if client.engine is not None:
        await client.engine.ping()
        return
    async with DockerEngine.open(docker_host(client.options.docker_host)) as engine:
        await engine.ping()


class ComposeKind(Kind[ComposeClient]):
    """`url` is a file path here, not a URL."""

    def validate(self, svc: ServiceConfig) -> list[str]:
        problems = [p for p in super().validate(svc) if not p.startswith("url:")]
        if svc.url is None:
            problems.append("url: required field is missing (the path of the Compose file)")
        elif "://" in svc.url:
            problems.append(
                f"url: {svc.url!r}: for kind compose, url is the path of the Compose file "
                "(relative to the stack file)"
            )
        return problems


KIND = ComposeKind(
    name="compose",
    description="Docker Compose: healthchecks, startup order, networking and volumes of the stack",
    capabilities=("healthchecks", "startup-order", "networking", "volumes"),
    connect=_connect,
    url_schemes=("file",),
    options_model=ComposeOptions,
    liveness_gates=False,  # lint checks need only the file, not the engine
    version=_version,
    liveness=_liveness,
)
check = KIND.check


def container_of(stack: Stack, service: str) -> tuple[str, str] | None:
    """(the stack's compose service, the Compose service) whose container runs `service`, from
    its `container:`: `<compose stack service>/<Compose service>`, or the Compose service alone
    when the stack has exactly one compose service. None when it names no such thing."""
    ref = stack.service(service).container
    composes = [n for n, s in stack.services.items() if s.kind == KIND.name]
    if ref is None or not composes:
        return None
    stack_compose, _, compose_service = ref.rpartition("/")
    name = stack_compose or (composes[0] if len(composes) == 1 else "")
    return (name, compose_service) if name in composes else None


async def container_id(client: ComposeClient, compose_service: str) -> str | None:
    """The id of the project's container of `compose_service`, or None (no engine, none)."""
    if client.engine is None:
        return None
    for found in await client.engine.containers(client.project):
        if service_of(found) == compose_service:
            return str(found["Id"])
    return None


# --- static: the lint rules, per capability -------------------------------------------------


def _lint_verdict(ctx: CheckContext[ComposeClient], capability: str) -> str:
    report = ctx.client.report
    findings = report.for_capability(capability)
    errors = [f for f in findings if f.severity == ERROR]
    ctx.evidence.update(
        file=str(ctx.client.path),
        findings=[_finding(f) for f in findings],
        errors=len(errors),
        warnings=len(findings) - len(errors),
    )
    if errors:
        shown = "; ".join(f"{f.where}: [{f.rule}] {f.message}" for f in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise CheckFailed(
            f"{len(errors)} {capability} error(s) in {ctx.client.path}: {shown}{more}"
        )
    warned = f", {len(findings)} warning(s)" if findings else ""
    return f"{report.services} services: no {capability} errors{warned}"


def _finding(f: Finding) -> dict[str, Any]:
    return {"rule": f.rule, "severity": f.severity, "where": f.where, "message": f.message}


@check(
    "healthchecks",
    title="every long-running service has a sane healthcheck its image can run",
    name="lint",
)
async def check_healthchecks_lint(ctx: CheckContext[ComposeClient]) -> str:
    return _lint_verdict(ctx, "healthchecks")


@check(
    "startup-order",
    title="depends_on is acyclic and waits for stateful services to be healthy",
    name="lint",
)
async def check_startup_lint(ctx: CheckContext[ComposeClient]) -> str:
    report = ctx.client.report
    if report.startup_order is not None:
        ctx.evidence.update(
            startup_order=report.startup_order, shutdown_order=report.shutdown_order
        )
    message = _lint_verdict(ctx, "startup-order")
    order = format_order(report.startup_order or [])
    return f"{message}; startup: {order}"


@check(
    "networking",
    title="networks declared and shared by dependents; no port published twice",
    name="lint",
)
async def check_networking_lint(ctx: CheckContext[ComposeClient]) -> str:
    return _lint_verdict(ctx, "networking")


@check(
    "volumes",
    title="stateful data on named volumes; volumes declared; bind sources exist",
    name="lint",
)
async def check_volumes_lint(ctx: CheckContext[ComposeClient]) -> str:
    return _lint_verdict(ctx, "volumes")


# --- live: the running project --------------------------------------------------------------


def _expected(compose: ComposeFile) -> list[Service]:
    """Services that should have a running container (no profile-only ones)."""
    return [s for s in compose.services.values() if not s.profiles]


async def _running(ctx: CheckContext[ComposeClient]) -> dict[str, list[dict[str, Any]]]:
    containers = await ctx.client.containers()
    if not containers:
        raise CheckFailed(
            f"no container of Compose project {ctx.client.project!r} on {ctx.client.need_engine().host}: "
            f"start it with docker compose -f {ctx.client.path} up -d"
        )
    return containers


@check(
    "healthchecks",
    title="every service's container runs and Docker reports it healthy",
    name="containers_healthy",
    timeout=40,
)
async def check_containers_healthy(ctx: CheckContext[ComposeClient]) -> str:
    engine = ctx.client.need_engine()
    await _running(ctx)

    async def survey() -> tuple[dict[str, str], list[str], bool]:
        containers = await ctx.client.containers()
        states: dict[str, str] = {}
        bad: list[str] = []
        starting = False
        for svc in _expected(ctx.client.compose):
            mine = containers.get(svc.name, [])
            if not mine:
                states[svc.name] = "missing"
                bad.append(f"{svc.name}: no container")
                continue
            for container in mine:
                info = await engine.inspect(str(container["Id"]))
                state = info.get("State") or {}
                label = f"{svc.name} ({container_name(container)})"
                health = (state.get("Health") or {}).get("Status")
                if (
                    state.get("Status") == "exited"
                    and state.get("ExitCode") == 0
                    and one_shot(ctx.client.compose, svc.name)
                ):
                    states[label] = "exited 0 (one-shot job)"  # what its dependents waited for
                elif state.get("Status") != "running":
                    states[label] = str(state.get("Status"))
                    starting |= state.get("Status") in ("created", "restarting")
                    bad.append(
                        f"{label}: {state.get('Status')} (exit code {state.get('ExitCode')}, restarts {info.get('RestartCount', 0)})"
                    )
                elif svc.x_stackprobe.get("healthcheck") == "external":
                    states[label] = "running (healthcheck external)"
                elif health is None:
                    states[label] = "running (no healthcheck)"
                    bad.append(f"{label}: running without a healthcheck")
                else:
                    states[label] = str(health)
                    starting |= health == "starting"
                    if health != "healthy":
                        log = (state.get("Health") or {}).get("Log") or []
                        last = " ".join(str(log[-1].get("Output", "")).split())[:160] if log else ""
                        bad.append(
                            f"{label}: {health}" + (f" (last check: {last})" if last else "")
                        )
        return states, bad, starting

    # only a container that is still starting is worth waiting for
    deadline = time.monotonic() + HEALTHY_WAIT_S
    while True:
        states, bad, starting = await survey()
        if not starting or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    ctx.evidence["containers"] = states
    if bad:
        raise CheckFailed(f"{len(bad)} service(s) not healthy: " + "; ".join(bad))
    return f"{len(states)} container(s) running and healthy (or externally watched)"


def _service_port(svc: Service) -> int | None:
    prof = profile(svc)
    if prof is not None and prof.main_port is not None:
        return prof.main_port
    if svc.expose:
        return svc.expose[0]
    return svc.ports[0].target[0] if svc.ports else None


def _probes(host: str, port: int) -> list[list[str]]:
    """TCP connect commands, tried in order until the image has one."""
    return [
        ["nc", "-z", "-w", "3", host, str(port)],
        # bash's /dev/tcp has no connect timeout: bound it where the image has `timeout`
        ["timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{shlex.quote(host)}/{port}"],
        ["bash", "-c", f"exec 3<>/dev/tcp/{shlex.quote(host)}/{port}"],
        [
            "python3",
            "-c",
            f"import socket; socket.create_connection(({host!r}, {port}), 3).close()",
        ],
    ]


@check(
    "networking",
    title="each container reaches its dependencies over TCP, from inside",
    name="dependencies_reachable",
    timeout=60,
)
async def check_dependencies_reachable(ctx: CheckContext[ComposeClient]) -> str:
    engine = ctx.client.need_engine()
    containers = await _running(ctx)
    results: dict[str, str] = {}
    failed: list[str] = []
    untested: list[str] = []
    for svc in ctx.client.compose.services.values():
        mine = [c for c in containers.get(svc.name, []) if c.get("State") == "running"]
        if not mine or not svc.depends_on:
            continue
        container = str(mine[0]["Id"])
        for dep_name in svc.depends_on:
            dep = ctx.client.compose.services.get(dep_name)
            pair = f"{svc.name} -> {dep_name}"
            port = _service_port(dep) if dep else None
            if dep is None or port is None:
                results[pair] = "untested: no known port"
                untested.append(pair)
                continue
            pair = f"{pair}:{port}"
            for cmd in _probes(dep_name, port):
                outcome = await engine.exec(container, cmd, timeout=10)
                if outcome.missing or (cmd[0] == "timeout" and outcome.exit_code in (126, 127)):
                    continue  # not in the image (for `timeout`: the command it runs is not)
                ms = round(outcome.seconds * 1000, 1)
                if outcome.exit_code == 0:
                    results[pair] = f"reachable ({cmd[0]}, {ms} ms)"
                else:
                    results[pair] = f"unreachable ({cmd[0]} exit {outcome.exit_code})"
                    failed.append(f"{pair} ({cmd[0]} exit {outcome.exit_code})")
                break
            else:
                results[pair] = f"untested: no nc, bash or python3 in {svc.name}"
                untested.append(pair)
    ctx.evidence.update(pairs=results, untested=untested)
    if failed:
        raise CheckFailed(
            f"{len(failed)} dependency connection(s) refused or timed out: " + "; ".join(failed)
        )
    tested = len(results) - len(untested)
    if tested == 0:
        raise CheckSkipped(
            "no dependency could be tested from inside a container "
            f"(no nc, bash or python3 in: {', '.join(untested) or 'no service has depends_on'})"
        )
    note = f"; {len(untested)} untestable (no tool in the image)" if untested else ""
    return f"{tested} dependency connection(s) made from inside the containers{note}"


def _volume_name(ctx: CheckContext[ComposeClient], volume: str) -> str:
    declared = ctx.client.compose.volumes.get(volume) or {}
    if declared.get("name"):
        return str(declared["name"])
    if declared.get("external"):  # Compose does not prefix external volumes with the project
        return volume
    return f"{ctx.client.project}_{volume}"


def _stateful(ctx: CheckContext[ComposeClient]) -> list[tuple[Service, str, str]]:
    """(service, data dir, named volume) for stateful services whose data is on a named volume."""
    found = []
    wanted = ctx.client.options.persistence_services
    for svc in _expected(ctx.client.compose):
        if wanted is not None and svc.name not in wanted:
            continue
        if one_shot(ctx.client.compose, svc.name):
            continue
        for data_dir in data_dirs(svc, ctx.client.compose.base_dir):
            mount = next(
                (
                    m
                    for m in svc.volumes
                    if m.target.rstrip("/") == data_dir and m.type == "volume" and m.source
                ),
                None,
            )
            if mount is not None and mount.source is not None:
                found.append((svc, data_dir, mount.source))
    return found


@check(
    "volumes",
    title="stateful containers mount their named volumes on their data directories",
    name="named_volumes_mounted",
)
async def check_named_volumes_mounted(ctx: CheckContext[ComposeClient]) -> str:
    engine = ctx.client.need_engine()
    containers = await _running(ctx)
    checked: dict[str, str] = {}
    bad: list[str] = []
    for svc, data_dir, volume in _stateful(ctx):
        expected = _volume_name(ctx, volume)
        for container in containers.get(svc.name, []):
            info = await engine.inspect(str(container["Id"]))
            mounts = {m.get("Destination"): m for m in info.get("Mounts") or []}
            mount = mounts.get(data_dir)
            label = f"{svc.name}:{data_dir}"
            if mount is None:
                bad.append(f"{label}: nothing mounted (data in the container layer)")
            elif mount.get("Type") != "volume" or mount.get("Name") != expected:
                bad.append(
                    f"{label}: {mount.get('Type')} {mount.get('Name') or mount.get('Source')}, expected volume {expected}"
                )
            else:
                checked[label] = expected
    ctx.evidence.update(mounted=checked)
    if bad:
        raise CheckFailed(f"{len(bad)} data dir(s) not on their named volume: " + "; ".join(bad))
    if not checked:
        raise CheckSkipped("no running stateful service with a named data volume")
    return f"{len(checked)} data dir(s) on their named volumes"


@check(
    "volumes",
    title="data written to a named volume survives a container restart",
    name="survives_restart",
    timeout=RESTART_BUDGET_S + 30,
    disruptive=True,
)
async def check_survives_restart(ctx: CheckContext[ComposeClient]) -> str:
    engine = ctx.client.need_engine()
    containers = await _running(ctx)
    results: dict[str, str] = {}
    lost: list[str] = []
    loop = asyncio.get_running_loop()
    budget_end = loop.time() + RESTART_BUDGET_S  # within the check's timeout, cleanups included
    for svc, data_dir, _ in _stateful(ctx):
        if budget_end - loop.time() < RESTART_WAIT_S + 15:
            results[svc.name] = "untested: no time left in this check for another restart"
            continue
        running = [c for c in containers.get(svc.name, []) if c.get("State") == "running"]
        if not running:
            results[svc.name] = "not running"
            continue
        container = str(running[0]["Id"])
        marker = f"{data_dir}/.{ctx.name('volume-' + secrets.token_hex(3))}"
        nonce = secrets.token_hex(8)

        async def remove(container: str = container, marker: str = marker) -> None:
            await engine.exec(container, ["rm", "-f", marker], timeout=10)

        ctx.cleanup(remove, f"remove {marker} from {svc.name}")
        wrote = await engine.exec(
            container, ["sh", "-c", f"printf %s {nonce} > {shlex.quote(marker)}"]
        )
        if wrote.missing:
            results[svc.name] = "untested: no shell in the image"
            continue
        if wrote.exit_code != 0:
            results[svc.name] = f"untested: cannot write {marker} (exit {wrote.exit_code})"
            continue
        started = asyncio.get_running_loop().time()
        await engine.restart(container)
        await _await_ready(ctx, engine, container, svc)
        restart_s = round(asyncio.get_running_loop().time() - started, 1)
        same = await engine.exec(
            container, ["sh", "-c", f'[ "$(cat {shlex.quote(marker)})" = "{nonce}" ]']
        )
        if same.exit_code == 0:
            results[svc.name] = f"kept after restart ({restart_s} s to ready)"
        else:
            results[svc.name] = f"lost after restart (exit {same.exit_code})"
            lost.append(f"{svc.name}: {marker} gone or changed after a restart")
    ctx.evidence.update(services=results)
    if lost:
        raise CheckFailed("; ".join(lost))
    kept = [s for s, r in results.items() if r.startswith("kept")]
    if not kept:
        raise CheckSkipped(
            "no stateful service could be tested: "
            + "; ".join(f"{s}: {r}" for s, r in results.items())
        )
    return f"data survived a restart in {len(kept)} service(s): {', '.join(kept)}"


async def _await_ready(
    ctx: CheckContext[ComposeClient], engine: DockerEngine, container: str, svc: Service
) -> None:
    async def ready() -> None:
        state = (await engine.inspect(container)).get("State") or {}
        health = (state.get("Health") or {}).get("Status")
        if state.get("Status") != "running":
            raise CheckFailed(f"{svc.name} is {state.get('Status')}")
        if health is not None and health != "healthy":
            raise CheckFailed(f"{svc.name} is {health}")

    await ctx.eventually(
        ready, timeout=RESTART_WAIT_S, interval=0.5, what=f"{svc.name} ready after restart"
    )
