"""A small Docker Engine API client (API v1.43, Docker Engine 24) for the live compose checks.

It speaks the documented HTTP API over the engine's unix socket (or tcp://), with httpx and a
timeout on every call: `/_ping`, `/version`, `/containers/json` filtered by the Compose
project label, `/containers/<id>/json` (State.Health), exec create/start/inspect, restart, and
the fault injector's stop / kill / pause / unpause / start.
Compose labels every container it creates with `com.docker.compose.project` and
`com.docker.compose.service`; that is how containers are matched to services.

Exec runs detached and its exit code is read from the exec's inspect: the checks only need
"did it succeed". A command the image does not contain is reported as missing (the engine's
"executable file not found" error on start, or exit code 126/127), not as a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from stackprobe.errors import ServiceError

API_VERSION = "1.43"
DEFAULT_HOST = "unix:///var/run/docker.sock"
TIMEOUT = 5.0
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
_MISSING = ("executable file not found", "no such file or directory")


class EngineError(ServiceError):
    """The engine answered with an error status, or could not be reached."""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None  # None: the command is not in the image
    seconds: float

    @property
    def missing(self) -> bool:
        return self.exit_code is None


def docker_host(explicit: str | None = None) -> str:
    return explicit or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def _transport(host: str) -> tuple[httpx.AsyncHTTPTransport | None, str]:
    parts = urlsplit(host)
    if parts.scheme == "unix":
        return httpx.AsyncHTTPTransport(uds=parts.path), "http://docker"
    if parts.scheme == "tcp":
        return None, f"http://{parts.netloc}"
    if parts.scheme in ("http", "https"):
        return None, f"{parts.scheme}://{parts.netloc}"
    raise EngineError(f"DOCKER_HOST {host!r}: use unix:///path, tcp://host:port or http(s)://")


class DockerEngine:
    def __init__(self, http: httpx.AsyncClient, host: str) -> None:
        self.http = http
        self.host = host

    @classmethod
    @asynccontextmanager
    async def open(cls, host: str | None = None) -> AsyncIterator[DockerEngine]:
        where = docker_host(host)
        transport, base = _transport(where)
        async with httpx.AsyncClient(
            transport=transport, base_url=f"{base}/v{API_VERSION}", timeout=TIMEOUT
        ) as http:
            yield cls(http, where)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            answer = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EngineError(
                f"docker engine at {self.host}: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from None
        if answer.status_code >= 400:
            try:
                said = str(answer.json().get("message", answer.text))
            except ValueError:
                said = answer.text
            raise EngineError(
                f"docker engine: HTTP {answer.status_code} from {method} {path}: {said.strip()[:200]}"
            )
        return answer

    async def ping(self) -> str:
        return (await self._call("GET", "/_ping")).text

    async def version(self) -> dict[str, Any]:
        return dict((await self._call("GET", "/version")).json())

    async def containers(self, project: str) -> list[dict[str, Any]]:
        """Every container of a Compose project, running or not."""
        filters = json.dumps({"label": [f"{PROJECT_LABEL}={project}"]})
        answer = await self._call(
            "GET", "/containers/json", params={"all": "1", "filters": filters}
        )
        return list(answer.json())

    async def inspect(self, container: str) -> dict[str, Any]:
        return dict((await self._call("GET", f"/containers/{quote(container)}/json")).json())

    async def restart(self, container: str, stop_timeout_s: int = 10) -> None:
        await self._call(
            "POST",
            f"/containers/{quote(container)}/restart",
            params={"t": str(stop_timeout_s)},
            timeout=stop_timeout_s + TIMEOUT,
        )

    async def stop(self, container: str, stop_timeout_s: int = 10) -> None:
        """SIGTERM, then SIGKILL after the timeout; 304 (already stopped) is fine."""
        await self._call(
            "POST",
            f"/containers/{quote(container)}/stop",
            params={"t": str(stop_timeout_s)},
            timeout=stop_timeout_s + TIMEOUT,
        )

    async def kill(self, container: str, signal: str = "SIGKILL") -> None:
        await self._call("POST", f"/containers/{quote(container)}/kill", params={"signal": signal})

    async def pause(self, container: str) -> None:
        """Freeze every process of the container (cgroup freezer): it answers nothing."""
        await self._call("POST", f"/containers/{quote(container)}/pause")

    async def unpause(self, container: str) -> None:
        await self._call("POST", f"/containers/{quote(container)}/unpause")

    async def start(self, container: str) -> None:
        """Start a stopped container; 304 (already started) is fine."""
        await self._call("POST", f"/containers/{quote(container)}/start")

    async def logs(self, container: str, tail: int) -> list[str]:
        """The container's last `tail` log lines (stdout and stderr). Without a TTY the engine
        multiplexes the two streams in frames behind an 8-byte header (stream 1 or 2, three
        zero bytes, size big-endian); with one it sends the bytes raw. The content type says
        which only since API 1.42, so the header's shape is what decides."""
        answer = await self._call(
            "GET",
            f"/containers/{quote(container)}/logs",
            params={"stdout": "1", "stderr": "1", "tail": str(tail)},
        )
        data = answer.content
        if data[:1] in (b"\x01", b"\x02") and data[1:4] == b"\x00\x00\x00":
            frames = bytearray()
            while len(data) >= 8:
                size = int.from_bytes(data[4:8], "big")
                frames += data[8 : 8 + size]
                data = data[8 + size :]
            data = bytes(frames)
        return data.decode("utf-8", "replace").splitlines()[-tail:]

    async def exec(self, container: str, cmd: list[str], timeout: float = 10.0) -> ExecResult:
        """Run a command in a container; its exit code, or None when the command is missing."""
        started = time.monotonic()
        created = await self._call(
            "POST",
            f"/containers/{quote(container)}/exec",
            json={"Cmd": cmd, "AttachStdout": False, "AttachStderr": False, "Tty": False},
        )
        exec_id = str(created.json()["Id"])
        try:
            await self._call("POST", f"/exec/{exec_id}/start", json={"Detach": True, "Tty": False})
        except EngineError as exc:
            if any(m in str(exc).lower() for m in _MISSING):
                return ExecResult(None, time.monotonic() - started)
            raise
        deadline = started + timeout
        while True:
            info = (await self._call("GET", f"/exec/{exec_id}/json")).json()
            if not info.get("Running"):
                code = info.get("ExitCode")
                elapsed = time.monotonic() - started
                if code in (126, 127):
                    return ExecResult(None, elapsed)
                return ExecResult(int(code) if code is not None else -1, elapsed)
            if time.monotonic() > deadline:
                raise EngineError(f"exec {' '.join(cmd)!r} still running after {timeout:g} s")
            await asyncio.sleep(0.1)


def service_of(container: dict[str, Any]) -> str | None:
    labels = container.get("Labels") or {}
    value = labels.get(SERVICE_LABEL)
    return str(value) if value is not None else None


def container_name(container: dict[str, Any]) -> str:
    names = container.get("Names") or [container.get("Id", "?")[:12]]
    return str(names[0]).lstrip("/")
