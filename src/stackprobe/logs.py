"""The last lines of a failing service's log, for the report: the sandbox's log file for a
sandbox service, the Docker Engine API (`/containers/<id>/logs`) for a service of the stack's
Compose project (`container:`), else the stack file's `logs: {file: ...}` or `logs: {command:
[...]}`. Redacted like everything else by the runner; bounded in time and size."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from stackprobe.config import Stack
from stackprobe.connect import open_service
from stackprobe.explain import explain
from stackprobe.results import LogTail
from stackprobe.sandbox.manager import Sandbox
from stackprobe.services.compose import container_id, container_of

COMMAND_TIMEOUT = 10.0
MAX_LINE = 2000  # characters of one line kept


async def tail_of(stack: Stack, name: str, lines: int, sandbox: Sandbox | None) -> LogTail | None:
    """The service's last `lines` log lines from the first source it has, or None."""
    svc = stack.service(name)
    try:
        if svc.logs is not None and svc.logs.file:
            path = Path(svc.logs.file)
            path = path if path.is_absolute() else stack.path.parent / path
            return LogTail(source=f"file {path}", lines=_last(path, lines))
        if svc.logs is not None and svc.logs.command:
            return LogTail(
                source=f"command {' '.join(svc.logs.command)}",
                lines=await _command(svc.logs.command, lines),
            )
        if sandbox is not None:
            try:
                proc = sandbox.process(name)
            except Exception:  # noqa: BLE001 - a service the sandbox does not run
                proc = None
            if proc is not None and proc.log.is_file():
                return LogTail(source=f"sandbox log {proc.log}", lines=_last(proc.log, lines))
        if svc.container is not None:
            return await _docker(stack, name, lines)
    except Exception as exc:  # noqa: BLE001 - the report says why there is no log
        return LogTail(source="unavailable", lines=[f"could not read the log: {explain(exc)}"])
    return None


def _last(path: Path, lines: int) -> list[str]:
    with path.open("rb") as handle:
        kept = deque(handle, maxlen=lines)
    return [raw.decode("utf-8", "replace").rstrip("\r\n")[:MAX_LINE] for raw in kept]


async def _command(argv: list[str], lines: int) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return [line[:MAX_LINE] for line in out.decode("utf-8", "replace").splitlines()[-lines:]]


async def _docker(stack: Stack, name: str, lines: int) -> LogTail | None:
    ref = container_of(stack, name)
    if ref is None:
        return None
    compose, compose_service = ref
    async with open_service(stack, compose) as opened:
        engine = opened.client.engine
        if engine is None:
            return LogTail(
                source="unavailable",
                lines=[f"no Docker engine reachable for the logs of {compose_service}"],
            )
        found = await container_id(opened.client, compose_service)
        if found is None:
            return None
        return LogTail(
            source=f"docker logs {compose_service} ({found[:12]})",
            lines=await engine.logs(found, lines),
        )
