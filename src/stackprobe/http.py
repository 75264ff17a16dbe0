"""One HTTP layer for every HTTP kind: the client factory, the error, and the rule.

The rule, applied by every HTTP kind (and tested kind by kind in tests/unit/test_http_rule.py):

    the check could not talk to the service as configured            -> error
        no connection (refused, unknown host, TLS), no answer in time,
        401 or 403 (credentials missing or refused)
    the service answered, and not as its documented API says          -> failed
        any other status the call does not accept (404, 429, 5xx, ...),
        a body that is not the documented JSON

A call names the statuses it accepts (`ok=`); a documented "not found" (a trace store's 404 for
an unknown trace id) is accepted and handled by the check, never raised. Credentials come from
the stack file: `token` as a Bearer header (or the kind's own header, Consul's X-Consul-Token),
else `password` as basic auth (with `username`, or the kind's default user). URLs in errors have
no query string and no password.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx

from stackprobe.config import ServiceConfig
from stackprobe.errors import Outcome, ServiceError
from stackprobe.redact import Redactor

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
TIMEOUT = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
BODY_EXCERPT = 200
SUCCESS = tuple(range(200, 300))


class HttpServiceError(ServiceError):
    """An HTTP answer a check cannot use, with its request: `consul: HTTP 500 from PUT
    /v1/kv/x: <what the service said>` (the message names the path, `url` holds all of it).

    `outcome` follows the rule above: 401/403 are `error`, every other answer `failed`.
    """

    def __init__(
        self, method: str, url: str, status: int, said: str, *, label: str = "http", hint: str = ""
    ) -> None:
        self.method = method
        self.url = Redactor().text(url)
        self.status = status
        self.said = said
        path = urlsplit(self.url).path or self.url
        super().__init__(f"{label}: HTTP {status} from {method} {path}: {said}{hint}")

    @property
    def outcome(self) -> Outcome:
        return Outcome.ERROR if self.status in (401, 403) else Outcome.FAILED


def excerpt(response: httpx.Response) -> str:
    """The body in one short line, or `(empty body)`."""
    return " ".join(response.text.split())[:BODY_EXCERPT] or "(empty body)"


def where(response: httpx.Response) -> tuple[str, str]:
    """(method, URL without query) of the request that got `response` ("?" when unknown)."""
    try:
        request = response.request
    except RuntimeError:  # a response built by hand, without its request
        return "?", "?"
    return request.method, str(request.url.copy_with(query=None))


_AUTH_HINT = " (credentials refused or missing: token / password in the stack file)"


def http_error(
    response: httpx.Response,
    *,
    label: str = "http",
    said: Callable[[httpx.Response], str] = excerpt,
    hints: dict[int, str] | None = None,
) -> HttpServiceError:
    """The HttpServiceError for an answer a call does not accept."""
    method, url = where(response)
    status = response.status_code
    hint = (hints or {}).get(status, _AUTH_HINT if status in (401, 403) else "")
    return HttpServiceError(method, url, status, said(response), label=label, hint=hint)


def raise_unless(
    response: httpx.Response,
    ok: tuple[int, ...] = (200,),
    *,
    label: str = "http",
    said: Callable[[httpx.Response], str] = excerpt,
    hints: dict[int, str] | None = None,
) -> httpx.Response:
    """`response` when its status is one of `ok`; else the rule's HttpServiceError."""
    if response.status_code not in ok:
        raise http_error(response, label=label, said=said, hints=hints)
    return response


def json_body(response: httpx.Response, *, label: str = "http") -> Any:
    """The answer's JSON; a body that is not JSON is the service answering wrongly (failed)."""
    try:
        return response.json()
    except ValueError:
        method, url = where(response)
        raise HttpServiceError(
            method, url, response.status_code, f"not JSON: {excerpt(response)}", label=label
        ) from None


def expect_json(
    response: httpx.Response, *, ok: tuple[int, ...] = SUCCESS, label: str = "http"
) -> Any:
    """The JSON of an answer the call accepts; the rule's HttpServiceError otherwise."""
    return json_body(raise_unless(response, ok, label=label), label=label)


def json_or_none(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON (an error page, an empty body)."""
    try:
        return response.json()
    except ValueError:
        return None


def refuse_auth(response: httpx.Response, what: str = "") -> None:
    """401/403: the configured credentials were refused (or are missing): outcome `error`."""
    if response.status_code in (401, 403):
        raise http_error(response)


def client_settings(
    svc: ServiceConfig, *, default_user: str | None = None, token_header: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for httpx.Client or httpx.AsyncClient: base URL, timeouts, credentials."""
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    if svc.token:
        if token_header:
            headers[token_header] = svc.token
        else:
            headers["Authorization"] = f"Bearer {svc.token}"
    elif svc.password is not None:
        auth = (svc.username or default_user or "", svc.password)
    return {"base_url": svc.url or "", "timeout": TIMEOUT, "headers": headers, "auth": auth}


def client_for(
    svc: ServiceConfig,
    base_url: str | None = None,
    default_user: str | None = None,
    token_header: str | None = None,
) -> httpx.AsyncClient:
    """The async client of one service, as every HTTP kind builds it."""
    settings = client_settings(svc, default_user=default_user, token_header=token_header)
    if base_url is not None:
        settings["base_url"] = base_url
    return httpx.AsyncClient(**settings)


def plain_client(base_url: str) -> httpx.AsyncClient:
    """A client with the layer's timeouts and no credentials (a tool's own API: Toxiproxy)."""
    return httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT)


def credential_label(svc: ServiceConfig, default_user: str | None = None) -> str:
    """What authenticates, for evidence: never the secret itself."""
    if svc.token:
        return "token"
    if svc.password is not None:
        return f"basic as {svc.username or default_user or ''}"
    return "none"


class HttpApi:
    """An httpx client with the rule applied: `call` returns only answers the call accepts."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        label: str = "http",
        said: Callable[[httpx.Response], str] = excerpt,
        hints: dict[int, str] | None = None,
    ) -> None:
        self.http = http
        self.label = label
        self._said = said
        self._hints = hints

    async def call(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        return raise_unless(response, ok, label=self.label, said=self._said, hints=self._hints)

    async def json(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> Any:
        return json_body(await self.call(method, path, ok=ok, **kwargs), label=self.label)

    async def get_json(self, path: str, **params: Any) -> Any:
        return await self.json("GET", path, params=params or None)


HOLD_READ = 64 * 1024


class HeldHttp:
    """An idle HTTP/1.1 keep-alive connection after one answered request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def closed(self) -> str:
        try:
            while await self.reader.read(HOLD_READ):  # an idle keep-alive gets nothing
                pass
        except OSError as exc:  # a reset (the process died with data unread)
            return f"held connection reset: {exc.strerror or type(exc).__name__}"
        return "held connection closed by the server"

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def hold_http(http: httpx.AsyncClient, path: str, timeout: float = READ_TIMEOUT) -> HeldHttp:
    """One keep-alive connection to `http`'s server, held idle after a GET of `path` (with the
    client's own base URL, headers and credentials) that it answered with 2xx and without
    closing; raises ServiceError when it cannot be held (refused, an error status, no
    keep-alive), so the monitor falls back to probes only."""
    request = http.build_request("GET", path)
    if isinstance(http.auth, httpx.BasicAuth):
        request = next(http.auth.auth_flow(request))
    url = request.url
    tls = ssl.create_default_context() if url.scheme == "https" else None
    port = url.port or (443 if tls else 80)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(url.host, port, ssl=tls)
        try:
            await _one_keep_alive_exchange(reader, writer, request)
        except BaseException:
            writer.close()
            raise
    return HeldHttp(reader, writer)


async def _one_keep_alive_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: httpx.Request
) -> None:
    conn = h11.Connection(h11.CLIENT)
    headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"connection"]
    writer.write(conn.send(h11.Request(method="GET", target=request.url.raw_path, headers=headers)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()
    status = 0
    while True:
        try:
            event = conn.next_event()
        except h11.ProtocolError as exc:
            raise ServiceError(f"GET {request.url.path}: not HTTP/1.1: {exc}") from None
        if event is h11.NEED_DATA:
            data = await reader.read(HOLD_READ)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE:
                raise ServiceError(f"GET {request.url.path}: connection closed before an answer")
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            break
    if status not in SUCCESS:
        raise ServiceError(f"GET {request.url.path}: HTTP {status}, not held")
    try:
        conn.start_next_cycle()  # refused when the server said `Connection: close`
    except h11.ProtocolError:
        raise ServiceError(f"GET {request.url.path}: the server does not keep it alive") from None
