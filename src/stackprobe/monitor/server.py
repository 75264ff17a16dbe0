"""A small asyncio HTTP server for the monitor: the page, the JSON API, /metrics, health.

No framework and no external assets: the page is one document that polls /api/status.
Bound beyond loopback only with a token (Bearer header, or `?token=` for the page itself).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from stackprobe.errors import ConfigError
from stackprobe.monitor import metrics
from stackprobe.monitor.core import Monitor
from stackprobe.monitor.page import PAGE

MAX_REQUEST_BYTES = 16 * 1024
OPEN_PATHS = {"/healthz", "/readyz"}  # for orchestrators' probes; they reveal only up/down


def require_token_beyond_loopback(host: str, token: str | None) -> None:
    """Refuse to serve other machines without a token (one clear line, exit 2)."""
    if token:
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host.lower() == "localhost"
    if not loopback:
        raise ConfigError(
            f"--host {host}: serving beyond loopback requires --token (or STACKPROBE_TOKEN); "
            "without one, bind to 127.0.0.1"
        )


class MonitorServer:
    def __init__(self, monitor: Monitor, host: str, port: int, token: str | None = None) -> None:
        require_token_beyond_loopback(host, token)
        self.monitor = monitor
        self.host = host
        self.port = port
        self.token = token
        self.server: asyncio.Server | None = None
        self.registry = metrics.registry_for(monitor)

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise ConfigError(
                f"--host/--port: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            writer.close()
            return
        try:
            status, ctype, body = self.respond(head)
        except Exception as exc:  # noqa: BLE001 - one bad request must not leak the connection
            status, ctype, body = _text(
                "500 Internal Server Error", self.monitor.redactor.text(f"error: {exc}")
            )
        headers = [
            f"HTTP/1.1 {status}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Referrer-Policy: no-referrer",  # the page may carry ?token= in its URL
            "Connection: close",
        ]
        try:
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
            async with asyncio.timeout(10):  # a client that never reads does not hold us
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    def respond(self, head: bytes) -> tuple[str, str, bytes]:
        """(status line, content type, body) for one request head."""
        if len(head) > MAX_REQUEST_BYTES:
            return _text("431 Request Header Fields Too Large", "request head too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return _text("400 Bad Request", "malformed request line")
        method, target, _ = parts
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        url = urlsplit(target)
        path, query = unquote(url.path), parse_qs(url.query)
        if method != "GET":
            return _text("405 Method Not Allowed", "only GET is served")
        # ?token= only for the page itself (a browser cannot send a header on navigation)
        if path not in OPEN_PATHS and not self._authorized(headers, query if path == "/" else {}):
            return _json(
                "401 Unauthorized",
                {"error": "missing or wrong token (Authorization: Bearer <token>)"},
            )
        return self.route(path, query, headers.get("accept", ""))

    def _authorized(self, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        if not self.token:
            return True
        given = (
            headers.get("authorization", "").removeprefix("Bearer ").strip()
            or (query.get("token") or [""])[0]
        )
        return hmac.compare_digest(given.encode(), self.token.encode())

    def route(
        self, path: str, query: dict[str, list[str]], accept: str = ""
    ) -> tuple[str, str, bytes]:
        m = self.monitor
        if path == "/":
            return "200 OK", "text/html; charset=utf-8", PAGE.encode()
        if path == "/api/status":
            return _json("200 OK", m.status_document())
        if path.startswith("/api/services/"):
            name = path.removeprefix("/api/services/")
            if name not in m.stack.services:
                return _json(
                    "404 Not Found",
                    {"error": f"no service {name!r}", "services": list(m.stack.services)},
                )
            return _json("200 OK", self.service_detail(name))
        if path == "/api/history":
            name = (query.get("service") or [""])[0]
            if name not in m.stack.services:
                return _json(
                    "400 Bad Request",
                    {"error": "pass ?service=<name>", "services": list(m.stack.services)},
                )
            return _json("200 OK", self.history(name))
        if path == "/api/runs/latest":
            run = m.history.latest_run()
            if run is None:
                return _json("404 Not Found", {"error": "no full run has finished yet"})
            return "200 OK", "application/json", run.encode()
        if path == "/metrics":
            body, content_type = metrics.exposition(self.registry, accept)
            return "200 OK", content_type, body
        if path == "/healthz":
            doc = m.status_document()
            down = [n for n, s in doc["services"].items() if s["alive"] is not True]
            return _json(
                "200 OK" if doc["all_up"] else "503 Service Unavailable",
                {"all_up": doc["all_up"], "not_up": down},
            )
        if path == "/readyz":
            return _json(
                "200 OK" if m.ready else "503 Service Unavailable",
                {"ready": m.ready, "probe_rounds": m.rounds},
            )
        return _json("404 Not Found", {"error": f"no route {path}"})

    def history(self, name: str) -> dict[str, Any]:
        h = self.monitor.history
        return {
            "service": name,
            "uptime_percent": h.uptime(name),
            "latency_ms": h.latency_percentiles(name),
            "probes": [
                {
                    "ts": p.ts,
                    "ok": p.ok,
                    "latency_ms": p.latency_ms,
                    "error": self.monitor.redactor.text(p.error),
                }
                for p in h.recent(name, 300)
            ],
        }

    def service_detail(self, name: str) -> dict[str, Any]:
        m = self.monitor
        view = m.service_view(name, m.statuses()[name])
        run = m.latest_run
        view["checks"] = [r.model_dump() for r in run.results if r.service == name] if run else []
        view["latency_percentiles_ms"] = m.history.latency_percentiles(name)
        return view


def _json(status: str, doc: Any) -> tuple[str, str, bytes]:
    return status, "application/json", json.dumps(doc, default=str).encode()


def _text(status: str, text: str) -> tuple[str, str, bytes]:
    return status, "text/plain; charset=utf-8", text.encode()


async def serve_until_stopped(
    monitor: Monitor, server: MonitorServer, on_ready: Callable[[MonitorServer], None] | None = None
) -> int:
    """Serve and probe until cancelled (Ctrl-C); 130 once everything is closed."""
    await server.start()
    if on_ready:
        on_ready(server)
    try:
        await monitor.run(asyncio.Event())
    except asyncio.CancelledError:
        return 130
    finally:
        await server.close()
    return 0
