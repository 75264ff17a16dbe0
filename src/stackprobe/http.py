"""One way to build the HTTP client of an HTTP-API kind from its service config.

Credentials come from the stack file: `token` as a Bearer header, else `password` as basic
auth (with `username`, or the kind's default user). An answer of 401 or 403 means the check
could not run as configured, so it raises ServiceError (outcome `error`), never CheckFailed.
"""

from __future__ import annotations

from typing import Any

import httpx

from stackprobe.config import ServiceConfig
from stackprobe.errors import ServiceError

TIMEOUT = 5.0


def client_for(
    svc: ServiceConfig, base_url: str | None = None, default_user: str | None = None
) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {svc.token}"} if svc.token else {}
    auth = (
        (svc.username or default_user or "", svc.password)
        if svc.password and not svc.token
        else None
    )
    return httpx.AsyncClient(
        base_url=base_url or svc.url or "", timeout=TIMEOUT, headers=headers, auth=auth
    )


def json_or_none(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON (an error page, an empty body)."""
    try:
        return response.json()
    except ValueError:
        return None


def refuse_auth(response: httpx.Response, what: str) -> None:
    """401/403: the configured credentials were refused (or are missing)."""
    if response.status_code in (401, 403):
        body = " ".join(response.text.split())[:160] or "(empty body)"
        raise ServiceError(
            f"{what}: HTTP {response.status_code}: credentials refused or missing "
            f"(token / password in the stack file): {body}"
        )
