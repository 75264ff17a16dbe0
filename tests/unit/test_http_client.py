"""HTTP kinds build their client from the stack file's credentials, and treat 401/403 as an
error of configuration (the check could not run), not as a misbehaving service."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from stackprobe.config import ServiceConfig
from stackprobe.errors import Outcome, ServiceError, outcome_of
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
    request = httpx.Request("GET", "http://p:9090/api/v1/targets?state=active")
    response = httpx.Response(status, text='{"message":"Unauthorized"}', request=request)
    with pytest.raises(
        ServiceError, match=f"HTTP {status} from GET /api/v1/targets: .*credentials refused"
    ) as info:
        refuse_auth(response)
    assert outcome_of(info.value) is Outcome.ERROR
    refuse_auth(httpx.Response(500, text="boom", request=request))  # not an auth problem
