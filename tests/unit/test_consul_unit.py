"""Pure logic of the Consul kind and the HTTP causes every HTTP kind shares."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest

from stackprobe.errors import ServiceError
from stackprobe.explain import explain
from stackprobe.loader import load_stack
from stackprobe.services.consul import (
    KIND,
    CallbackEndpoint,
    ConsulError,
    KVEntry,
    _dns_endpoint,
    callback_problem,
)


@pytest.mark.parametrize(
    ("agent", "callback", "local"),
    [
        ("http://127.0.0.1:8500", "127.0.0.1", True),
        ("http://localhost:8500", "127.0.0.1", True),
        ("http://[::1]:8500", "::1", True),
        ("https://consul.internal:8501", "127.0.0.1", False),
        ("http://10.0.0.5:8500", "localhost", False),
        ("http://10.0.0.5:8500", "10.0.0.9", True),  # an address the user says the agent reaches
    ],
)
def test_the_http_check_needs_an_agent_that_can_reach_the_callback(
    agent: str, callback: str, local: bool
) -> None:
    problem = callback_problem(agent, callback)
    assert (problem is None) is local
    if problem:
        assert "options.callback_host" in problem


def test_dns_endpoint_is_host_and_port() -> None:
    assert _dns_endpoint("127.0.0.1:8600") == ("127.0.0.1", 8600)
    assert _dns_endpoint("[::1]:8600") == ("::1", 8600)
    assert _dns_endpoint(None) is None
    for bad in ("127.0.0.1", "host:port", ":8600"):
        with pytest.raises(ServiceError, match=r"endpoints\.dns: .* is not host:port"):
            _dns_endpoint(bad)


def test_kv_entries_decode_base64_values_and_null_values() -> None:
    raw = {"Key": "k", "Value": base64.b64encode(b"\x00\xff").decode(), "Flags": 7,
           "CreateIndex": 3, "ModifyIndex": 5, "LockIndex": 0}  # fmt: skip
    assert KVEntry.from_json(raw) == KVEntry("k", b"\x00\xff", 7, 3, 5, None)
    assert KVEntry.from_json({"Key": "empty", "Value": None}).value == b""


def test_http_error_answers_read_as_one_line() -> None:
    err = ConsulError("PUT", "/v1/kv/x", 403, "Permission denied\n")
    assert explain(err) == "consul: HTTP 403 from PUT /v1/kv/x: Permission denied"
    assert explain(ConsulError("GET", "/v1/x", 502, "")).endswith("(empty body)")


def test_httpx_errors_name_where_and_why() -> None:
    async def scenario() -> list[str]:
        causes = []
        async with httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=2) as client:
            try:
                await client.get("/v1/status/leader")
            except httpx.HTTPError as exc:
                causes.append(explain(exc))
        return causes

    assert asyncio.run(scenario()) == ["http: cannot connect to 127.0.0.1:9: Connection refused"]
    request = httpx.Request("GET", "http://h:1/v1/kv/k?index=3")
    assert (
        explain(httpx.ReadTimeout("", request=request))
        == "http: no answer in time (ReadTimeout) to GET http://h:1/v1/kv/k"
    )
    assert (
        explain(httpx.RemoteProtocolError("Server disconnected", request=request))
        == "http: Server disconnected (GET http://h:1/v1/kv/k)"
    )
    assert explain(httpx.ReadError("boom")) == "http: boom"


def test_the_callback_endpoint_answers_its_status_and_counts() -> None:
    async def scenario() -> tuple[list[int], int]:
        endpoint = CallbackEndpoint("127.0.0.1")
        port = (await endpoint.server.start()).port
        statuses = []
        async with httpx.AsyncClient(timeout=2) as client:
            statuses.append((await client.get(f"http://127.0.0.1:{port}/health")).status_code)
            endpoint.status = 500
            statuses.append((await client.get(f"http://127.0.0.1:{port}/health")).status_code)
        await endpoint.server.close()
        return statuses, endpoint.requests

    assert asyncio.run(scenario()) == ([200, 500], 2)


def test_the_stack_file_takes_url_dns_endpoint_and_options(tmp_path: Path) -> None:
    path = tmp_path / "stack.yaml"
    path.write_text(
        "services:\n  discovery:\n    kind: consul\n    url: http://127.0.0.1:8500\n"
        "    endpoints: {dns: '127.0.0.1:8600'}\n    token: ${CONSUL_HTTP_TOKEN}\n"
        "    options: {callback_host: 10.0.0.9, dns_domain: consul}\n"
    )
    stack = load_stack(path, env={"CONSUL_HTTP_TOKEN": "tok-123"})
    svc = stack.service("discovery")
    assert KIND.validate(svc) == []
    assert stack.secrets() == ["tok-123"]
    bad = svc.model_copy(update={"url": "redis://h:1", "options": {"callbak_host": "x"}})
    assert KIND.validate(bad) == [
        "url: scheme 'redis' not supported here (use http or https)",
        "options.callbak_host: unknown option (known: callback_host, dns_domain)",
    ]
