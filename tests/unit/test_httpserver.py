"""The one in-process HTTP server the checks use for callbacks (stackprobe.httpserver)."""

from __future__ import annotations

import asyncio

import httpx

from stackprobe.httpserver import LocalHttpServer, Request, Response


def test_it_serves_the_handler_with_headers_and_body_and_counts() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(201, b"made", headers={"X-Probe": "1"})

    async def scenario() -> httpx.Response:
        async with LocalHttpServer(handler) as server, httpx.AsyncClient() as client:
            answer = await client.post(
                f"{server.url}/x?y=1", content=b"body", headers={"traceparent": "00-a-b-01"}
            )
            assert server.requests == 1
            return answer

    answer = asyncio.run(scenario())
    assert (answer.status_code, answer.text, answer.headers["x-probe"]) == (201, "made", "1")
    (request,) = seen
    assert (request.method, request.target, request.body) == ("POST", "/x?y=1", b"body")
    assert request.headers["traceparent"] == "00-a-b-01"


def test_a_failing_handler_is_a_500_and_a_silent_client_is_dropped() -> None:
    async def handler(request: Request) -> Response:
        raise ValueError("broken on purpose")

    async def scenario() -> tuple[int, bytes]:
        async with LocalHttpServer(handler, header_timeout=0.3) as server:
            async with httpx.AsyncClient() as client:
                status = (await client.get(server.url)).status_code
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HT")  # half a request line, then nothing
            async with asyncio.timeout(3):
                rest = await reader.read()  # the server closes the connection
            writer.close()
            return status, rest

    assert asyncio.run(scenario()) == (500, b"")
