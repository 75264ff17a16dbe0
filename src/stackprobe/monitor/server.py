"""The monitor's web face as an ASGI app: the page, the JSON API, /metrics, health.

`create_app` builds a Starlette app (/probe: `stackprobe.monitor.probe`); `MonitorServer` serves it with uvicorn on the running
asyncio loop (what `stackprobe serve` does). No external assets: the page is one document that
polls `api/status` (relative, so the app can be mounted under a prefix). Bound beyond loopback
only with a token: a Bearer header, or `?token=` for the page itself; /healthz and /readyz
stay open for orchestrators' probes. Only GET is served.

Mount the monitor in your own ASGI app (run `monitor.run(stop)` beside it, e.g. in a lifespan):

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from stackprobe.monitor.server import create_app

    app = Starlette(routes=[Mount("/health", app=create_app(monitor, token="s3cr3t"))])
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import h11
import uvicorn
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from stackprobe.errors import ConfigError
from stackprobe.monitor import metrics, probe
from stackprobe.monitor.core import Monitor
from stackprobe.monitor.page import PAGE
from stackprobe.redact import Redactor

MAX_REQUEST_BYTES = 16 * 1024  # a request head larger than this is refused
HEAD_TIMEOUT_S = 5.0  # a connection must deliver each request head within this, or is closed
MAX_CONNECTIONS = 256  # open connections beyond this are closed at once (requests: 503)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page may carry ?token= in its URL
}
Endpoint = Callable[[Request], Awaitable[Response]]


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


def create_app(monitor: Monitor, token: str | None) -> Starlette:
    """The monitor's routes as a Starlette app, with its own private metrics registry."""
    views = _Views(monitor, metrics.registry_for(monitor))

    def guarded(endpoint: Endpoint, *, query_token: bool = False) -> Endpoint:
        async def call(request: Request) -> Response:
            if not _authorized(request, token, query_token):
                return _json(
                    401, {"error": "missing or wrong token (Authorization: Bearer <token>)"}
                )
            return await endpoint(request)

        return call

    routes = [
        # ?token= only for the page itself (a browser cannot send a header on navigation)
        Route("/", guarded(views.page, query_token=True)),
        Route("/api/status", guarded(views.status)),
        Route("/api/services/{name:path}", guarded(views.service)),
        Route("/api/history", guarded(views.history)),
        Route("/api/runs/latest", guarded(views.latest_run)),
        Route("/api/flow", guarded(views.flow)),
        Route("/metrics", guarded(views.metrics)),
        Route("/probe", guarded(views.probe)),  # the blackbox exporter's contract
        Route("/healthz", views.healthz),  # open: they reveal only up/down
        Route("/readyz", views.readyz),
        Route("/{path:path}", guarded(views.no_route)),  # unknown paths answer only with a token
    ]
    return Starlette(routes=routes, middleware=[Middleware(_Hardened, redactor=monitor.redactor)])


def _authorized(request: Request, token: str | None, query_token: bool) -> bool:
    if not token:
        return True
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not given and query_token:
        given = request.query_params.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())


class _Hardened:
    """Around every route: GET only, bounded heads, security headers, a redacted 500 on a bug."""

    def __init__(self, app: ASGIApp, redactor: Redactor) -> None:
        self.app = app
        self.redactor = redactor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_hardened(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        if scope["method"] != "GET":
            refusal = _text(405, "only GET is served")
            refusal.headers["Allow"] = "GET"
            await refusal(scope, receive, send_hardened)
            return
        # h11 bounds a head only while it is incomplete; one that arrived whole is measured here
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        head += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > MAX_REQUEST_BYTES:
            await _text(431, "request head too large")(scope, receive, send_hardened)
            return
        try:
            await self.app(scope, receive, send_hardened)
        except Exception as exc:  # a bug in one view answers 500, redacted, like every error
            if started:
                raise
            await _text(500, self.redactor.text(f"error: {exc}"))(scope, receive, send_hardened)


class _Views:
    def __init__(self, monitor: Monitor, registry: CollectorRegistry) -> None:
        self.monitor = monitor
        self.registry = registry
        self.prober = probe.Prober(monitor)

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def status(self, request: Request) -> Response:
        return _json(200, self.monitor.status_document())

    async def service(self, request: Request) -> Response:
        m = self.monitor
        name = request.path_params["name"]
        if name not in m.stack.services:
            return _json(404, {"error": f"no service {name!r}", "services": list(m.stack.services)})
        view = m.service_view(name, m.statuses()[name])
        run = m.latest_run
        view["checks"] = [r.model_dump() for r in run.results if r.service == name] if run else []
        view["latency_percentiles_ms"] = m.history.latency_percentiles(name)
        return _json(200, view)

    async def history(self, request: Request) -> Response:
        m = self.monitor
        name = request.query_params.get("service", "")
        if name not in m.stack.services:
            return _json(400, {"error": "pass ?service=<name>", "services": list(m.stack.services)})
        h = m.history
        return _json(
            200,
            {
                "service": name,
                "uptime_percent": h.uptime(name),
                "latency_ms": h.latency_percentiles(name),
                "probes": [
                    {
                        "ts": p.ts,
                        "ok": p.ok,
                        "latency_ms": p.latency_ms,
                        "error": m.redactor.text(p.error),
                    }
                    for p in h.recent(name, 300)
                ],
            },
        )

    async def latest_run(self, request: Request) -> Response:
        run = self.monitor.history.latest_run()
        if run is None:
            return _json(404, {"error": "no full run has finished yet"})
        return Response(run, media_type="application/json")

    async def flow(self, request: Request) -> Response:
        return _json(200, self.monitor.flow_view())

    async def metrics(self, request: Request) -> Response:
        body, content_type = metrics.exposition(self.registry, request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    async def probe(self, request: Request) -> Response:
        try:
            wanted = probe.parse(self.monitor, request.query_params)
            seconds = probe.budget(request.headers.get(probe.SCRAPE_TIMEOUT_HEADER))
        except probe.BadProbe as exc:
            return _text(400, self.monitor.redactor.text(str(exc)) + "\n")
        result = await self.prober.run(wanted, seconds)
        body, content_type = metrics.exposition(
            probe.registry_of(result, self.monitor), request.headers.get("accept", "")
        )
        return Response(body, media_type=content_type)

    async def healthz(self, request: Request) -> Response:
        doc = self.monitor.status_document()
        down = [n for n, s in doc["services"].items() if s["alive"] is not True]
        return _json(200 if doc["all_up"] else 503, {"all_up": doc["all_up"], "not_up": down})

    async def readyz(self, request: Request) -> Response:
        m = self.monitor
        return _json(200 if m.ready else 503, {"ready": m.ready, "probe_rounds": m.rounds})

    async def no_route(self, request: Request) -> Response:
        return _json(404, {"error": f"no route {request.scope['path']}"})


def _json(status: int, doc: Any) -> Response:
    return Response(json.dumps(doc, default=str), status_code=status, media_type="application/json")


def _text(status: int, text: str) -> Response:
    return PlainTextResponse(text, status_code=status)


class _HeadDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a connection cap.

    uvicorn arms its keep-alive timer only after a response and cancels it on any data, so a
    client that sends half a request line would hold its connection forever.
    """

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn's limit_concurrency only answers 503 to requests: idle connections beyond it
        # would still be held, so close them at once
        if self.limit_concurrency is not None and len(self.connections) > self.limit_concurrency:
            transport.close()
            return
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()  # the next request head on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(HEAD_TIMEOUT_S, self._head_overdue)

    def _head_overdue(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class _InProcessUvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C keeps cancelling the caller's task."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of `host`, all on one port (0: a free one)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        sockets: list[socket.socket] = []
        try:
            for family, _, _, _, address in dict.fromkeys(infos):
                bound = sockets[0].getsockname()[1] if sockets else port
                sockets.append(
                    socket.create_server((address[0], bound, *address[2:]), family=family)
                )
        except OSError:
            for sock in sockets:
                sock.close()
            raise
    except OSError as exc:
        raise ConfigError(
            f"--host/--port: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return sockets


class MonitorServer:
    """`create_app` served by uvicorn in-process, on the running loop."""

    def __init__(self, monitor: Monitor, host: str, port: int, token: str | None = None) -> None:
        require_token_beyond_loopback(host, token)
        self.monitor = monitor
        self.host = host
        self.port = port
        self.token = token
        self._server: _InProcessUvicorn | None = None
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sockets = _listen(self.host, self.port)
        self.port = int(sockets[0].getsockname()[1])
        config = uvicorn.Config(
            create_app(self.monitor, self.token),
            host=self.host,
            port=self.port,
            http=_HeadDeadlineH11,
            ws="none",
            lifespan="off",
            log_config=None,  # leave the process's logging alone
            log_level=logging.CRITICAL + 1,  # silent: the API and stderr line say what matters
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=int(HEAD_TIMEOUT_S),  # idle after a response (not half-sent heads)
            timeout_graceful_shutdown=2,
            limit_concurrency=MAX_CONNECTIONS,
            h11_max_incomplete_event_size=MAX_REQUEST_BYTES,
        )
        self._server = _InProcessUvicorn(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=sockets))
        while not self._server.started:
            if self._serving.done():
                self._serving.result()  # raises what stopped it
                raise RuntimeError(f"uvicorn stopped before serving {self.host}:{self.port}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving


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
