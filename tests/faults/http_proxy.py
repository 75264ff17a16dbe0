"""A fault injector for HTTP services: a reverse proxy that tampers with chosen exchanges.

It sits between a check and a real server (a Consul agent in the tests). Every request is
forwarded as is unless `on_request` rewrites it (drops a query parameter) or answers it itself
(swallows a write); every answer comes back as is unless `on_response` rewrites it (changes a
field). So the check sees a real server that misbehaves in one precise way. Every request that
reached the proxy is kept in `seen`, for tests that inspect what a check sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

HOP_BY_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    def without_param(self, name: str) -> HttpRequest:
        query = [(k, v) for k, v in parse_qsl(urlsplit(self.target).query, keep_blank_values=True)]
        kept = urlencode([(k, v) for k, v in query if k != name])
        return replace(self, target=self.path + (f"?{kept}" if kept else ""))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    def with_json(self, value: Any) -> HttpResponse:
        return replace(self, body=json.dumps(value).encode())


OnRequest = Callable[[HttpRequest], HttpRequest | HttpResponse]
OnResponse = Callable[[HttpRequest, HttpResponse], HttpResponse]


def _pass_request(request: HttpRequest) -> HttpRequest | HttpResponse:
    return request


def _pass_response(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    return response


class HttpFaultProxy:
    """Runs in its own thread with its own loop, so sync and async tests can both use it."""

    def __init__(
        self,
        upstream: str,
        on_request: OnRequest = _pass_request,
        on_response: OnResponse = _pass_response,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.on_request = on_request
        self.on_response = on_response
        self.port = 0
        self.seen: list[HttpRequest] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=60.0)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(
            ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, httpx.HTTPError
        ):
            while (request := await _read_request(reader)) is not None:
                self.seen.append(request)
                answer = self.on_request(request)
                if isinstance(answer, HttpRequest):
                    upstream = await self._client.request(
                        answer.method,
                        answer.target,
                        headers={
                            k: v
                            for k, v in answer.headers.items()
                            if k not in HOP_BY_HOP and k != "accept-encoding"
                        },
                        content=answer.body,
                    )
                    answer = self.on_response(
                        request,
                        HttpResponse(
                            upstream.status_code,
                            upstream.content,
                            {k.lower(): v for k, v in upstream.headers.items()},
                        ),
                    )
                writer.write(_encode(answer))
                await writer.drain()
        writer.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[HttpFaultProxy]:
        self._thread.start()
        self._ready.wait(5)
        try:
            yield self
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


async def _read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return HttpRequest(method, target, headers, body)


def _encode(response: HttpResponse) -> bytes:
    headers = {
        k: v for k, v in response.headers.items() if k not in HOP_BY_HOP and k != "content-encoding"
    }
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "Unknown"
    head = f"HTTP/1.1 {response.status} {phrase}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    head += f"Content-Length: {len(response.body)}\r\n\r\n"
    return head.encode("latin-1") + response.body
