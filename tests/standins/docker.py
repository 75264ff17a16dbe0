"""A stand-in for the Docker Engine API v1.43 (Docker Engine 24), for tests only.

Why it exists: no Docker engine runs on the machines that run these tests, yet the compose
kind's live checks (stackprobe.services.compose over stackprobe.compose.engine) must be
exercised end to end. DESIGN.md allows "a Docker Engine API stand-in, modelled on the Engine
API version it names" for them. Nothing here was recorded from a real engine: the shapes
follow the Engine API v1.43 reference (docs.docker.com/engine/api/v1.43), and where the
reference is silent behaviour follows moby's source, marked "(source)".

Like the real engine it listens on a unix socket and serves every path with or without the
`/v1.43` prefix. Modelled:
- `GET /_ping` → 200 `OK` (text/plain) with an `Api-Version: 1.43` header.
- `GET /version` → {Version, ApiVersion "1.43", MinAPIVersion, Os, Arch, ...}.
- `GET /containers/json?all=1&filters={"label":["k=v"]}` → [{Id, Names ["/name"], Image,
  State, Status, Labels}]; only running containers without `all` (filters: label only).
- `GET /containers/<id or name>/json` → {Id, Name, RestartCount, Config{Image, Labels},
  State{Status, Running, ExitCode, Health{Status, FailingStreak, Log[{Start, End, ExitCode,
  Output}]}}, Mounts[{Type, Name, Source, Destination, RW}]}; `Health` only when the container
  has a healthcheck; unknown → 404 {"message": "No such container: <id>"}.
- `POST /containers/<id>/exec` {Cmd, ...} → 201 {"Id"}; not running → 409 {"message":
  "Container <id> is not running"}.
- `POST /exec/<id>/start` {Detach: true} → 200 with an empty body once the command ran; a
  command the image lacks → 400 {"message": "OCI runtime exec failed: exec failed: unable to
  start container process: exec: \"<cmd>\": executable file not found in $PATH: unknown"} and
  ExitCode 127 on the exec (source). `GET /exec/<id>/json` → {ID, Running false, ExitCode,
  ContainerID, ProcessConfig{entrypoint, arguments}}.
- `POST /containers/<id>/stop?t=` → 204, 304 when not running; State `exited`, ExitCode 0.
- `POST /containers/<id>/kill?signal=` → 204 (State `exited`, ExitCode 137 for SIGKILL), 409
  {"message": "Cannot kill container: <id>: Container <id> is not running"} when not running.
- `POST /containers/<id>/pause` → 204 (State `paused`, Paused true, Running true), 409
  "Container <id> is not running" (source: errdefs.Conflict); `/unpause` → 204, 409
  "Container <id> is not paused".
- `POST /containers/<id>/start` → 204, 304 when already running; health restarts at
  "starting" as after a restart.
- `GET /containers/<id>/logs?stdout=1&stderr=1&tail=N` → 200, the last N lines the container
  printed (`log`: (stream, line) pairs, 1 stdout 2 stderr). Without a TTY the body is the
  multiplexed stream: per line an 8-byte header [stream, 0, 0, 0, size (uint32 big-endian)]
  and the bytes, content type `application/vnd.docker.multiplexed-stream` (API ≥ 1.42); with
  `tty` the raw bytes, `application/vnd.docker.raw-stream`.
- `POST /containers/<id>/restart?t=` → 204; RestartCount is not changed by a manual restart
  (source: it counts restarts by the restart policy), health goes back to "starting" for
  `starting_polls` inspections, then "healthy". A restart keeps the container's writable layer
  and its volumes; tmpfs mounts come back empty.

The commands containers "run" are the ones stackprobe sends: `nc -z -w N host port`,
`bash -c "exec 3<>/dev/tcp/host/port"`, `python3 -c "...create_connection(('host', port)..."`
(exit 0 when the container can reach host:port, else 1), `sh -c "printf %s V > PATH"`,
`sh -c '[ "$(cat PATH)" = "V" ]'`, `rm -f PATH`. Files live in the container's layer, or in a
named volume (shared by name) or tmpfs when a mount covers their path.

Fault switches (set on a `Container` while running): `state` ("exited"...), `health`
("unhealthy" with `health_output`), `tools` (what the image contains), `unreachable`
((host, port) pairs the container cannot reach), `mounts` (e.g. tmpfs on the data dir).
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_VERSION = "1.43"
ENGINE_VERSION = "24.0.7"


@dataclass
class Container:
    project: str
    service: str
    image: str
    tools: set[str] = field(default_factory=lambda: {"sh", "nc", "rm", "cat", "printf"})
    state: str = "running"
    health: str | None = "healthy"  # None: no healthcheck
    health_output: str = ""
    mounts: list[dict[str, Any]] = field(default_factory=list)
    unreachable: set[tuple[str, int]] = field(default_factory=set)
    starting_polls: int = 0
    id: str = field(default_factory=lambda: secrets.token_hex(32))
    layer: dict[str, str] = field(default_factory=dict)
    restarts_seen: int = 0
    exit_code: int = 1  # after it stopped (1: the state a test set by hand)
    log: list[tuple[int, str]] = field(default_factory=list)  # (stream 1|2, line) printed
    tty: bool = False

    @property
    def name(self) -> str:
        return f"{self.project}-{self.service}-1"


@dataclass
class _Exec:
    container: Container
    cmd: list[str]
    exit_code: int | None = None


class DockerStandin:
    """A fake engine with containers, named volumes and exec; see the module docstring."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.containers: list[Container] = []
        self.volumes: dict[str, dict[str, str]] = {}  # name -> path -> content
        self.reachable: dict[str, set[int]] = {}  # host -> ports anyone can reach
        self.requests: list[str] = []
        self._execs: dict[str, _Exec] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def add(self, container: Container) -> Container:
        self.containers.append(container)
        for mount in container.mounts:
            if mount["Type"] == "volume":
                self.volumes.setdefault(mount["Name"], {})
        return container

    def find(self, ref: str) -> Container | None:
        return next(
            (c for c in self.containers if c.id.startswith(ref) or c.name == ref.lstrip("/")),
            None,
        )

    def start(self) -> DockerStandin:
        self._server = _Server(str(self.socket_path), self)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> DockerStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API ---------------------------------------------------------------------------

    def handle(self, method: str, target: str, body: bytes) -> tuple[int, Any, str]:
        parts = urlsplit(target)
        path = re.sub(r"^/v1\.\d+", "", parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.requests.append(f"{method} {path}")
        with self._lock:
            return self._route(method, path, query, json.loads(body or b"null"))

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, str]:
        if method == "GET" and path == "/_ping":
            return 200, "OK", "text/plain; charset=utf-8"
        if method == "GET" and path == "/version":
            return 200, {
                "Version": ENGINE_VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": "1.12",
                "Os": "linux", "Arch": "amd64", "KernelVersion": "6.1.0", "GoVersion": "go1.20.10",
            }, "application/json"  # fmt: skip
        if method == "GET" and path == "/containers/json":
            return 200, self._list(query), "application/json"
        if match := re.fullmatch(
            r"/containers/([^/]+)/(json|logs|exec|restart|stop|kill|pause|unpause|start)", path
        ):
            container = self.find(match[1])
            if container is None:
                return 404, {"message": f"No such container: {match[1]}"}, "application/json"
            action = match[2]
            if action == "json" and method == "GET":
                return 200, self._inspect(container), "application/json"
            if action == "logs" and method == "GET":
                return self._logs(container, query)
            if action == "exec" and method == "POST":
                if container.state != "running":
                    return (
                        409,
                        {"message": f"Container {container.id} is not running"},
                        "application/json",
                    )
                exec_id = secrets.token_hex(32)
                self._execs[exec_id] = _Exec(container, [str(c) for c in body["Cmd"]])
                return 201, {"Id": exec_id}, "application/json"
            if action == "restart" and method == "POST":
                self._restart(container)
                return 204, None, "application/json"
            if method == "POST" and action in ("stop", "kill", "pause", "unpause", "start"):
                return self._lifecycle(container, action, query)
        if match := re.fullmatch(r"/exec/([^/]+)/(start|json)", path):
            ex = self._execs.get(match[1])
            if ex is None:
                return 404, {"message": f"No such exec instance: {match[1]}"}, "application/json"
            if match[2] == "start" and method == "POST":
                if ex.cmd[0] not in ex.container.tools:
                    ex.exit_code = 127
                    return 400, {"message": (
                        "OCI runtime exec failed: exec failed: unable to start container process: "
                        f'exec: "{ex.cmd[0]}": executable file not found in $PATH: unknown'
                    )}, "application/json"  # fmt: skip
                ex.exit_code = self._run(ex.container, ex.cmd)
                return 200, None, "application/json"
            if match[2] == "json" and method == "GET":
                return 200, {
                    "ID": match[1], "Running": False, "ExitCode": ex.exit_code,
                    "ContainerID": ex.container.id, "OpenStdout": False, "OpenStderr": False,
                    "ProcessConfig": {"entrypoint": ex.cmd[0], "arguments": ex.cmd[1:], "tty": False},
                }, "application/json"  # fmt: skip
        return (
            404,
            {"message": f"page not found: {method} {path} (docker stand-in)"},
            "application/json",
        )

    @staticmethod
    def _logs(c: Container, query: dict[str, str]) -> tuple[int, Any, str]:
        wanted = {s for s, key in ((1, "stdout"), (2, "stderr")) if query.get(key) in ("1", "true")}
        lines = [(s, line) for s, line in c.log if s in wanted]
        tail = query.get("tail", "all")
        if tail != "all":
            lines = lines[-int(tail) :] if int(tail) > 0 else []
        if c.tty:
            raw = b"".join(line.encode() + b"\n" for _, line in lines)
            return 200, raw, "application/vnd.docker.raw-stream"
        body = b"".join(
            bytes([s, 0, 0, 0]) + len(data).to_bytes(4, "big") + data
            for s, line in lines
            for data in [line.encode() + b"\n"]
        )
        return 200, body, "application/vnd.docker.multiplexed-stream"

    def _list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        wanted = json.loads(query.get("filters") or "{}").get("label", [])
        found = []
        for c in self.containers:
            labels = self._labels(c)
            if any(labels.get(k) != v for k, _, v in (w.partition("=") for w in wanted)):
                continue
            if c.state != "running" and query.get("all") not in ("1", "true"):
                continue
            status = "Up 5 minutes" if c.state == "running" else "Exited (1) 1 minute ago"
            if c.state == "running" and c.health:
                status += f" ({'health: starting' if c.health == 'starting' else c.health})"
            found.append({"Id": c.id, "Names": [f"/{c.name}"], "Image": c.image,
                          "State": c.state, "Status": status, "Labels": labels})  # fmt: skip
        return found

    @staticmethod
    def _labels(c: Container) -> dict[str, str]:
        return {
            "com.docker.compose.project": c.project,
            "com.docker.compose.service": c.service,
            "com.docker.compose.container-number": "1",
            "com.docker.compose.oneoff": "False",
        }

    def _inspect(self, c: Container) -> dict[str, Any]:
        health = c.health
        if health == "starting" and c.starting_polls <= 0:
            c.health = health = "healthy"
        elif health == "starting":
            c.starting_polls -= 1
        state: dict[str, Any] = {
            "Status": c.state, "Running": c.state in ("running", "paused"),
            "Paused": c.state == "paused", "Restarting": c.state == "restarting",
            "ExitCode": 0 if c.state in ("running", "paused") else c.exit_code,
        }  # fmt: skip
        if health is not None:
            log = [{"Start": "2024-01-01T00:00:00Z", "End": "2024-01-01T00:00:01Z",
                    "ExitCode": 0 if health == "healthy" else 1, "Output": c.health_output}]  # fmt: skip
            state["Health"] = {
                "Status": health,
                "FailingStreak": 0 if health == "healthy" else 3,
                "Log": log,
            }
        return {
            "Id": c.id, "Name": f"/{c.name}", "RestartCount": 0,
            "Config": {"Image": c.image, "Labels": self._labels(c)},
            "State": state, "Mounts": c.mounts,
        }  # fmt: skip

    def _lifecycle(self, c: Container, action: str, query: dict[str, str]) -> tuple[int, Any, str]:
        json_type = "application/json"
        running = c.state in ("running", "paused")
        if action == "stop":
            if not running:
                return 304, None, json_type
            c.state, c.exit_code = "exited", 0
        elif action == "kill":
            if not running:
                return 409, {"message": f"Cannot kill container: {c.id}: Container {c.id} is not running"}, json_type  # fmt: skip
            c.state, c.exit_code = "exited", 137 if query.get("signal", "SIGKILL") in ("SIGKILL", "9", "KILL") else 143  # fmt: skip
        elif action == "pause":
            if c.state != "running":
                return 409, {"message": f"Container {c.id} is not running"}, json_type
            c.state = "paused"
        elif action == "unpause":
            if c.state != "paused":
                return 409, {"message": f"Container {c.id} is not paused"}, json_type
            c.state = "running"
        elif action == "start":
            if running:
                return 304, None, json_type
            self._restart(c)
        return 204, None, json_type

    def _restart(self, c: Container) -> None:
        c.restarts_seen += 1
        c.state = "running"
        for mount in c.mounts:
            if mount["Type"] == "tmpfs":
                prefix = mount["Destination"].rstrip("/") + "/"
                c.layer = {p: v for p, v in c.layer.items() if not p.startswith(prefix)}
        if c.health is not None:
            c.health, c.starting_polls = "starting", 2

    def _store(self, c: Container, path: str) -> dict[str, str]:
        """Where a file lives: the named volume mounted over it, else the container layer."""
        for mount in sorted(c.mounts, key=lambda m: -len(m["Destination"])):
            if (
                path.startswith(mount["Destination"].rstrip("/") + "/")
                and mount["Type"] == "volume"
            ):
                return self.volumes.setdefault(mount["Name"], {})
        return c.layer

    def _run(self, c: Container, cmd: list[str]) -> int:
        text = " ".join(cmd)
        target: tuple[str, int] | None = None
        if cmd[0] == "nc":
            target = (cmd[-2], int(cmd[-1]))
        else:
            pattern = {
                "bash": r"/dev/tcp/([^/]+)/(\d+)",
                "python3": r"create_connection\(\('([^']+)', (\d+)\)",
            }.get(cmd[0])
            if pattern and (m := re.search(pattern, text)):
                target = (m[1], int(m[2]))
        if target is not None:
            ok = target[1] in self.reachable.get(target[0], set()) and target not in c.unreachable
            return 0 if ok else 1
        if cmd[:2] == ["rm", "-f"]:
            for path in cmd[2:]:
                self._store(c, path).pop(path, None)
            return 0
        if cmd[:2] == ["sh", "-c"]:
            script = cmd[2]
            if m := re.fullmatch(r"printf %s (\S+) > (\S+)", script):
                path = shlex.split(m[2])[0]
                self._store(c, path)[path] = m[1]
                return 0
            if m := re.fullmatch(r'\[ "\$\(cat (\S+)\)" = "(\S+)" \]', script):
                path = shlex.split(m[1])[0]
                return 0 if self._store(c, path).get(path) == m[2] else 1
        return 2  # a command the stand-in does not model


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, engine: DockerStandin) -> None:
        super().__init__(path, _Handler)
        self.engine = engine


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload, content_type = self.server.engine.handle(self.command, self.path, body)
        data = b"" if payload is None else payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        )  # fmt: skip
        self.send_response(status)
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Server", f"Docker/{ENGINE_VERSION} (linux)")
        if status not in (204, 304):
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status not in (204, 304):
            self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass
