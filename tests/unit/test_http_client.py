"""HTTP kinds build their client from the stack file's credentials, and treat 401/403 as an
error of configuration (the check could not run), not as a misbehaving service."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from stackprobe.config import ServiceConfig
from stackprobe.errors import ServiceError
from stackprobe.http import client_for, refuse_auth


def test_token_becomes_a_bearer_header_and_a_password_basic_auth() -> None:
    async def build() -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        return (
            client_for(ServiceConfig(kind="prometheus", url="http://p:9090", token="t0k3n")),
            client_for(
                ServiceConfig(kind="prometheus", url="http://p:9090", password="pw"),
                default_user="admin",
            ),
        )

    with_token, with_password = asyncio.run(build())
    assert with_token.headers["Authorization"] == "Bearer t0k3n" and with_token.auth is None
    request = with_password.build_request("GET", "/api/v1/query")
    flow = with_password.auth.sync_auth_flow(request)  # type: ignore[union-attr]
    assert next(flow).headers["Authorization"] == "Basic YWRtaW46cHc="  # admin:pw
    assert str(with_token.base_url) == "http://p:9090"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_service_error(status: int) -> None:
    response = httpx.Response(status, text='{"message":"Unauthorized"}')
    with pytest.raises(
        ServiceError, match=f"GET /api/v1/targets: HTTP {status}: credentials refused"
    ):
        refuse_auth(response, "GET /api/v1/targets")
    refuse_auth(httpx.Response(500, text="boom"), "GET /x")  # not an auth problem: no raise
