"""One small in-process HTTP server for checks that need a callback: the Consul HTTP health
check's endpoint, the trace correlation hops, the flow's probe service.

HTTP/1.1 parsing is h11's (the parser httpx itself stands on), one request per connection,
bounded: a client that does not send its request head within `header_timeout` is dropped.

    async with LocalHttpServer(handler) as server:      # handler: async (Request) -> Response
        register(f"{server.url}/health")
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

import h11

MAX_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class LocalHttpServer:
    """Serves `handler` on `host` and a free port until closed; counts requests served."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", header_timeout: float = 5.0):
        self.handler = handler
        self.host = host
        self.header_timeout = header_timeout
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> LocalHttpServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LocalHttpServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        try:
            async with asyncio.timeout(self.header_timeout):
                request = await _read_request(conn, reader)
            if request is None:
                return
            self.requests += 1
            try:
                response = await self.handler(request)
            except Exception as exc:  # noqa: BLE001 - the caller sees a 500, the check its own error
                response = Response(500, f"{type(exc).__name__}: {exc}".encode())
            headers = [
                ("Content-Type", response.content_type),
                ("Content-Length", str(len(response.body))),
                ("Connection", "close"),
                *response.headers.items(),
            ]
            writer.write(
                conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
            )
            writer.write(conn.send(h11.Data(data=response.body)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            async with asyncio.timeout(self.header_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError, h11.ProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
    head: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await reader.read(16384)
            conn.receive_data(chunk)
            if not chunk and head is None:
                return None
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return Request(
                method=head.method.decode("ascii", "replace"),
                target=head.target.decode("ascii", "replace"),
                headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers},
                body=body,
            )
        elif isinstance(event, h11.ConnectionClosed):
            return None
