"""Consul: cluster, service registration, health checks, KV store and service discovery.

Checks talk to one agent through the documented HTTP API (v1, stable from 1.8 on) and, for
discovery, to its DNS port. Every service id and name, check id, KV key and session name a
check creates starts with the run prefix `stackprobe-<run_id>-consul-`. Every registered
service carries a check with `DeregisterCriticalServiceAfter` and every session a TTL, so the
agent removes them even after a killed run; KV keys cannot expire in Consul and wait for
`stackprobe clean` then. Each check removes what it created, by name.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped, expect, ms
from stackprobe.dns import SrvAnswer, query_srv
from stackprobe.errors import ServiceError
from stackprobe.http import CONNECT_TIMEOUT, HttpServiceError, client_for, hold_http
from stackprobe.httpserver import LocalHttpServer
from stackprobe.httpserver import Request as HttpRequest
from stackprobe.httpserver import Response as HttpResponse
from stackprobe.ids import PREFIX, is_leftover
from stackprobe.kinds import Held, Kind, Target

HTTP_TIMEOUT = 5.0  # every call (stackprobe.http's read timeout); blocking queries add their wait
TOKEN_HEADER = "X-Consul-Token"  # noqa: S105 - the name of the header Consul reads its ACL token from
DEREGISTER_AFTER = "1m"  # Consul's minimum: a killed run's services are reaped by the agent
PROBE_TTL = "60s"  # TTL of checks that are only there to keep a probe service reapable
SESSION_TTL = "15s"  # sessions of a killed run expire on their own (Consul minimum is 10s)
BLOCKING_WAIT_S = 5
BLOCKING_WRITE_AFTER_S = 0.5  # the concurrent write comes this long after the query was sent
DOC_ADDRESS = "192.0.2.10"  # TEST-NET-1 (RFC 5737): an address no real service has


class ConsulOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    callback_host: str = "127.0.0.1"  # where the agent reaches the HTTP check's endpoint
    dns_domain: str = "consul"  # the agent's `domain`


class ConsulExpectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    datacenter: str | None = None
    min_peers: int = Field(default=1, ge=1)


class ConsulError(HttpServiceError):
    """The agent answered a request with a status the call does not accept (the HTTP rule:
    401/403 are `error`, any other answer `failed`)."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        said = " ".join(body.split())[:200] or "(empty body)"
        super().__init__(method, path, status, said, label="consul")


@dataclass(frozen=True)
class KVEntry:
    key: str
    value: bytes
    flags: int
    create_index: int
    modify_index: int
    session: str | None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KVEntry:
        value = raw.get("Value")
        return cls(
            key=str(raw["Key"]),
            value=base64.b64decode(value) if value else b"",
            flags=int(raw.get("Flags") or 0),
            create_index=int(raw.get("CreateIndex") or 0),
            modify_index=int(raw.get("ModifyIndex") or 0),
            session=raw.get("Session"),
        )


@dataclass
class ConsulClient:
    """One agent's HTTP API (and DNS port, when configured), every call bounded."""

    http: httpx.AsyncClient
    url: str
    dns: tuple[str, int] | None
    options: ConsulOptions

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        json: Any = None,
        content: bytes | None = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """One request; an HTTP status outside `ok` raises ConsulError (one line)."""
        response = await self.http.request(
            method,
            path,
            params=params,
            json=json,
            content=content,
            timeout=(
                httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)
                if timeout
                else httpx.USE_CLIENT_DEFAULT  # None would mean no timeout at all
            ),
        )
        if response.status_code not in ok:
            raise ConsulError(
                method, response.request.url.path, response.status_code, response.text
            )
        return response

    async def get(self, path: str, **params: str | int) -> Any:
        return _json(await self.call("GET", path, params=params))

    # --- agent, catalog, health ----------------------------------------------------------------

    async def register(self, definition: dict[str, Any]) -> None:
        await self.call("PUT", "/v1/agent/service/register", json=definition)

    async def deregister(self, service_id: str) -> None:
        """Deregister a service; one that is not registered (any more) is fine."""
        await self._gone("service", f"/v1/agent/service/deregister/{_q(service_id)}")

    async def deregister_check(self, check_id: str) -> None:
        await self._gone("check", f"/v1/agent/check/deregister/{_q(check_id)}")

    async def _gone(self, what: str, path: str) -> None:
        # an unknown id: 1.8 answers 200 (ACLs off) or 500 "Unknown service" (ACLs on), later
        # versions 404: all mean "not registered"
        response = await self.call("PUT", path, ok=(200, 404, 500))
        if response.status_code == 500 and not response.text.startswith(f"Unknown {what}"):
            raise ConsulError("PUT", path, 500, response.text)

    async def ttl_update(
        self, check_id: str, status: Literal["pass", "warn", "fail"], note: str
    ) -> None:
        await self.call("PUT", f"/v1/agent/check/{status}/{_q(check_id)}", params={"note": note})

    async def health_service(
        self, name: str, *, passing: bool = False, tag: str | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {}
        if passing:
            params["passing"] = "true"
        if tag is not None:
            params["tag"] = tag
        return list(await self.get(f"/v1/health/service/{_q(name)}", **params))

    async def catalog_service(self, name: str, tag: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {"tag": tag} if tag is not None else {}
        return list(await self.get(f"/v1/catalog/service/{_q(name)}", **params))

    # --- KV ------------------------------------------------------------------------------------

    async def kv_get(self, key: str, **params: str | int) -> tuple[KVEntry | None, int]:
        """The entry (None when missing) and the X-Consul-Index to block on."""
        response = await self.call(
            "GET",
            f"/v1/kv/{_q(key)}",
            params=params,
            ok=(200, 404),
            timeout=HTTP_TIMEOUT + _wait_s(params),
        )
        index = int(response.headers.get("X-Consul-Index", 0))
        if response.status_code == 404:
            return None, index
        entries = _json(response)
        return KVEntry.from_json(entries[0]), index

    async def kv_put(
        self, key: str, value: bytes, *, cas: int | None = None, **params: str | int
    ) -> bool:
        """PUT a value; False when a `cas` or lock condition refused it."""
        if cas is not None:
            params["cas"] = cas
        response = await self.call("PUT", f"/v1/kv/{_q(key)}", params=params, content=value)
        return _bool_answer(response, "PUT", key)

    async def kv_delete(self, key: str) -> None:
        await self.call("DELETE", f"/v1/kv/{_q(key)}")

    async def kv_list(self, prefix: str) -> list[KVEntry]:
        response = await self.call(
            "GET", f"/v1/kv/{_q(prefix)}", params={"recurse": "true"}, ok=(200, 404)
        )
        return (
            [] if response.status_code == 404 else [KVEntry.from_json(e) for e in _json(response)]
        )

    async def kv_keys(self, prefix: str) -> list[str]:
        response = await self.call(
            "GET", f"/v1/kv/{_q(prefix)}", params={"keys": "true"}, ok=(200, 404)
        )
        return [] if response.status_code == 404 else [str(k) for k in _json(response)]

    # --- sessions ------------------------------------------------------------------------------

    async def session_create(self, name: str) -> str:
        body = {"Name": name, "TTL": SESSION_TTL, "Behavior": "delete", "LockDelay": "0s"}
        response = await self.call("PUT", "/v1/session/create", json=body)
        return str(_json(response)["ID"])

    async def session_destroy(self, session_id: str) -> None:
        await self.call("PUT", f"/v1/session/destroy/{_q(session_id)}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        request = response.request
        raise ConsulError(
            request.method, request.url.path, response.status_code, f"not JSON: {response.text}"
        ) from None


def _q(part: str) -> str:
    return quote(part, safe="/")


def _wait_s(params: dict[str, str | int]) -> float:
    wait = str(params.get("wait", "0s"))
    return float(wait.removesuffix("s")) if wait.endswith("s") else 0.0


def _bool_answer(response: httpx.Response, method: str, key: str) -> bool:
    text = response.text.strip()
    if text not in ("true", "false"):
        raise ConsulError(
            method, f"/v1/kv/{key}", response.status_code, f"expected true|false, got {text!r}"
        )
    return text == "true"


def _dns_endpoint(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ServiceError(f"endpoints.dns: {value!r} is not host:port")
    return host.strip("[]"), int(port)


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[ConsulClient]:
    svc = target.config
    assert svc.url is not None  # validated: url is required for this kind
    dns = _dns_endpoint(svc.endpoints.get("dns"))
    async with client_for(svc, token_header=TOKEN_HEADER) as http:
        yield ConsulClient(http=http, url=svc.url, dns=dns, options=target.options)


async def _version(client: ConsulClient) -> str | None:
    config = (await client.get("/v1/agent/self")).get("Config") or {}
    return str(config["Version"]) if config.get("Version") else None


async def _liveness(client: ConsulClient) -> None:
    if not await client.get("/v1/status/leader"):
        raise CheckFailed("no cluster leader (/v1/status/leader is empty)")


async def _watch(client: ConsulClient) -> Held:
    """A keep-alive connection to the agent's HTTP API, held idle after its leader query."""
    return await hold_http(client.http, "/v1/status/leader")


def _ours(name: str, cutoff: datetime) -> bool:
    return name.startswith(PREFIX) and is_leftover(name, cutoff)


async def _sweep(client: ConsulClient, target: Target, cutoff: datetime) -> list[str]:
    """Services, checks, KV keys and sessions named with the prefix of a run older than cutoff."""
    removed: list[str] = []
    for service_id in await client.get("/v1/agent/services"):
        if _ours(service_id, cutoff):
            await client.deregister(service_id)
            removed.append(f"service {service_id}")
    for check_id in await client.get("/v1/agent/checks"):  # checks registered on their own
        if _ours(check_id, cutoff):
            await client.deregister_check(check_id)
            removed.append(f"check {check_id}")
    for key in await client.kv_keys(PREFIX):
        if _ours(key, cutoff):
            await client.kv_delete(key)
            removed.append(f"kv {key}")
    for session in await client.get("/v1/session/list"):
        name = str(session.get("Name") or "")
        if _ours(name, cutoff):
            await client.session_destroy(str(session["ID"]))
            removed.append(f"session {name} ({session['ID']})")
    return removed


class ConsulWrites:
    """Resilience write accounting: KV PUT of run-prefixed keys, read back by listing them."""

    def __init__(self, ctx: CheckContext[Any], client: ConsulClient) -> None:
        self.client = client
        self.prefix = ctx.name(f"consul-w-{secrets.token_hex(2)}/")

    async def write(self, i: int) -> None:
        if not await self.client.kv_put(f"{self.prefix}{i}", str(i).encode()):
            raise CheckFailed(f"PUT {self.prefix}{i} answered false")

    async def kept(self, acknowledged: list[int]) -> set[int]:
        names = {k.rsplit("/", 1)[1] for k in await self.client.kv_keys(self.prefix)}
        return {i for i in acknowledged if str(i) in names}

    async def close(self) -> None:
        for key in await self.client.kv_keys(self.prefix):
            await self.client.kv_delete(key)


async def _writes(ctx: CheckContext[Any], service: str) -> ConsulWrites:
    return ConsulWrites(ctx, await ctx.open(service))


KIND: Kind[ConsulClient] = Kind(
    name="consul",
    description="Consul agent: cluster, service registration, health checks, KV and discovery",
    capabilities=("cluster", "registration", "health-checks", "kv", "discovery"),
    connect=_connect,
    url_schemes=("http", "https"),
    endpoints=("dns",),
    options_model=ConsulOptions,
    expectations_model=ConsulExpectations,
    version=_version,
    liveness=_liveness,
    watch=_watch,
    sweep=_sweep,
    writes=_writes,
)
check = KIND.check


def _free_port_number() -> int:
    return 20000 + secrets.randbelow(40000)


async def _register(ctx: CheckContext[ConsulClient], definition: dict[str, Any]) -> str:
    """Register a service whose checks all get DeregisterCriticalServiceAfter; deregister after.

    Without a check the agent would keep a service forever; with a critical check and
    DeregisterCriticalServiceAfter it reaps the service even when the run is killed.
    """
    service_id = str(definition["ID"])
    checks = definition.pop("Checks", None) or [definition.pop("Check", None) or {"TTL": PROBE_TTL}]
    definition["Checks"] = [
        {
            "CheckID": f"{service_id}-check-{i}",
            **c,
            "DeregisterCriticalServiceAfter": DEREGISTER_AFTER,
        }
        for i, c in enumerate(checks)
    ]

    async def deregister() -> None:
        await ctx.client.deregister(service_id)

    ctx.cleanup(deregister, f"deregister service {service_id}")
    await ctx.client.register(definition)
    return service_id


def _check_state(entries: list[dict[str, Any]], check_id: str) -> tuple[str | None, str]:
    """Status and output of one check as /v1/health/service shows it (None: not listed)."""
    for entry in entries:
        for item in entry.get("Checks") or []:
            if item.get("CheckID") == check_id:
                return str(item.get("Status")), str(item.get("Output") or "")
    return None, ""


def _ids(entries: list[dict[str, Any]], key: str = "Service") -> list[str]:
    """Service ids of /v1/health/service entries (key "Service") or catalog entries (None)."""
    if key == "Service":
        return sorted(str(e["Service"]["ID"]) for e in entries)
    return sorted(str(e["ServiceID"]) for e in entries)


# --- cluster ----------------------------------------------------------------------------------


@check(
    "cluster",
    title="a leader is elected, peers are listed, agent version and datacenter reported",
    name="leader",
)
async def check_leader(ctx: CheckContext[ConsulClient]) -> str:
    started = time.perf_counter()
    leader = await ctx.client.get("/v1/status/leader")
    ctx.evidence["leader_ms"] = ms(time.perf_counter() - started)
    peers = list(await ctx.client.get("/v1/status/peers"))
    ctx.evidence.update(leader=leader, peers=peers)
    if not leader:  # decided before anything else: a leaderless agent may stall other calls
        raise CheckFailed(
            "leader: expected an elected leader, saw none (/v1/status/leader is empty)"
        )
    if leader not in peers:
        raise CheckFailed(
            f"peers: expected the leader {leader!r} among the raft peers, saw {peers!r}"
        )
    config = (await ctx.client.get("/v1/agent/self")).get("Config") or {}
    members = await ctx.client.get("/v1/agent/members")
    ctx.evidence.update(
        version=config.get("Version"),
        datacenter=config.get("Datacenter"),
        node=config.get("NodeName"),
        server=config.get("Server"),
        members_alive=sum(1 for m in members if m.get("Status") == 1),
        members=len(members),
        token="configured" if ctx.service.token else "none",
    )
    expected_dc = ctx.expectations.datacenter
    if expected_dc is not None and expected_dc != config.get("Datacenter"):
        raise CheckFailed(
            f"datacenter: expected {expected_dc!r} (expectations.datacenter), saw {config.get('Datacenter')!r}"
        )
    min_peers = ctx.expectations.min_peers
    if len(peers) < min_peers:
        raise CheckFailed(
            f"peers: expected at least {min_peers} (expectations.min_peers), saw {len(peers)}: {peers!r}"
        )
    return (
        f"Consul {config.get('Version')} in {config.get('Datacenter')}, leader {leader}, "
        f"{len(peers)} raft peer(s)"
    )


# --- registration -----------------------------------------------------------------------------

_CATALOG_FIELDS = {
    "ID": "ServiceID",
    "Name": "ServiceName",
    "Tags": "ServiceTags",
    "Meta": "ServiceMeta",
    "Address": "ServiceAddress",
    "Port": "ServicePort",
}


@check(
    "registration",
    title="a probe service registers, appears in the catalog with exactly its fields, deregisters and is gone",
    name="lifecycle",
)
async def check_registration(ctx: CheckContext[ConsulClient]) -> str:
    client = ctx.client
    nonce = secrets.token_hex(4)
    service_id = ctx.name(f"consul-registration-{nonce}")
    fields: dict[str, Any] = {
        "ID": service_id,
        "Name": service_id,
        "Tags": ["stackprobe", f"probe-{nonce}"],
        "Meta": {"stackprobe_run": ctx.run_id, "probe": nonce},
        "Address": DOC_ADDRESS,
        "Port": _free_port_number(),
    }
    started = time.monotonic()
    await _register(ctx, dict(fields))
    ctx.evidence["register_ms"] = ms(time.monotonic() - started)

    async def listed() -> list[dict[str, Any]]:
        entries = await client.catalog_service(service_id)
        if not entries:
            raise CheckFailed(f"/v1/catalog/service/{service_id} is empty")
        return entries

    entries = await ctx.eventually(listed, timeout=5.0, interval=0.05, what="catalog registration")
    ctx.evidence["visible_after_ms"] = ms(time.monotonic() - started)
    expect("catalog entries for the probe service", 1, len(entries))
    seen = {name: entries[0].get(catalog) for name, catalog in _CATALOG_FIELDS.items()}
    ctx.evidence["catalog_entry"] = seen
    if seen != fields:
        diff = {k: seen[k] for k in fields if seen[k] != fields[k]}
        raise CheckFailed(
            f"catalog entry: expected { ({k: fields[k] for k in diff})!r}, saw {diff!r}"
        )
    agent_view = await client.get(f"/v1/agent/service/{_q(service_id)}")
    expect(
        "agent's view of the service (port, tags)",
        (fields["Port"], fields["Tags"]),
        (agent_view.get("Port"), agent_view.get("Tags")),
    )
    deregistered = time.monotonic()
    await client.deregister(service_id)

    async def gone() -> None:
        if left := await client.catalog_service(service_id):
            raise CheckFailed(f"{len(left)} catalog entr(y/ies) still listed")
        if service_id in await client.get("/v1/catalog/services"):
            raise CheckFailed("still in /v1/catalog/services")
        if service_id in await client.get("/v1/agent/services"):
            raise CheckFailed("still in /v1/agent/services")

    await ctx.eventually(gone, timeout=5.0, interval=0.05, what="deregistration")
    ctx.evidence["gone_after_ms"] = ms(time.monotonic() - deregistered)
    return (
        f"listed with all 6 fields after {ctx.evidence['visible_after_ms']:.0f} ms, "
        f"gone {ctx.evidence['gone_after_ms']:.0f} ms after deregistration"
    )


# --- health checks ----------------------------------------------------------------------------


async def _await_status(
    ctx: CheckContext[ConsulClient],
    service: str,
    check_id: str,
    expected: str,
    *,
    timeout: float,
    detail: Callable[[], str] = lambda: "",
) -> tuple[float, str]:
    """Poll /v1/health/service until `check_id` shows `expected`; seconds taken and output."""
    started = time.monotonic()

    async def shows() -> str:
        status, output = _check_state(await ctx.client.health_service(service), check_id)
        if status != expected:
            extra = detail()
            raise CheckFailed(
                f"expected {expected}, saw {status or 'no such check'}"
                + (f" ({extra})" if extra else "")
                + (f"; output {output[:160]!r}" if output else "")
            )
        return output

    output = await ctx.eventually(
        shows, timeout=timeout, interval=0.05, what=f"{expected} in /v1/health/service/{service}"
    )
    return time.monotonic() - started, output


TTL_S = 3


@check(
    "health-checks",
    title="a TTL check moves critical → passing → warning → critical and expires when not refreshed",
    timeout=20,
    name="ttl_transitions",
)
async def check_ttl_transitions(ctx: CheckContext[ConsulClient]) -> str:
    service_id = ctx.name(f"consul-ttl-{secrets.token_hex(3)}")
    check_id = f"{service_id}-check-0"
    await _register(
        ctx,
        {"ID": service_id, "Name": service_id, "Tags": ["stackprobe"], "Port": _free_port_number(),
         "Check": {"Name": "stackprobe TTL probe", "TTL": f"{TTL_S}s"}},
    )  # fmt: skip
    steps: list[tuple[Literal["pass", "warn", "fail"] | None, str]] = [
        (None, "critical"),
        ("pass", "passing"),
        ("warn", "warning"),
        ("fail", "critical"),
        ("pass", "passing"),
    ]
    transitions: list[dict[str, Any]] = []
    for action, expected in steps:
        note = f"stackprobe {action or 'register'} {secrets.token_hex(3)}"
        if action is not None:
            await ctx.client.ttl_update(check_id, action, note)
        took, output = await _await_status(ctx, service_id, check_id, expected, timeout=5.0)
        transitions.append({"to": expected, "via": action or "register", "visible_ms": ms(took)})
        if action is not None and note not in output:
            raise CheckFailed(
                f"{expected} check output: expected the note {note!r}, saw {output!r}"
            )
    ctx.evidence["transitions"] = transitions
    # not refreshed any more: the agent must mark it critical once the TTL runs out
    took, output = await _await_status(ctx, service_id, check_id, "critical", timeout=TTL_S + 5.0)
    ctx.evidence.update(ttl_s=TTL_S, expired_after_s=round(took, 2), expired_output=output[:200])
    return (
        "critical → passing → warning → critical → passing seen in /v1/health/service "
        f"(max {max(t['visible_ms'] for t in transitions):.0f} ms each); "
        f"expired to critical {took:.1f} s after the last pass (TTL {TTL_S} s)"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def callback_problem(agent_url: str, callback_host: str) -> str | None:
    """Why the agent cannot reach an endpoint served on `callback_host`, or None."""
    agent_host = urlsplit(agent_url).hostname or ""
    if _is_loopback(callback_host) and not _is_loopback(agent_host):
        return (
            f"the agent ({agent_host}) is not local and options.callback_host is {callback_host}: "
            "set callback_host to an address of this machine the agent can reach"
        )
    return None


class CallbackEndpoint:
    """The endpoint the agent's HTTP check calls: answers `status`, counts requests."""

    def __init__(self, host: str) -> None:
        self.status = 200
        self.server = LocalHttpServer(self._answer, host)

    @property
    def requests(self) -> int:
        return self.server.requests

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        if self.status == 200:
            return HttpResponse(200, b"ok\n")
        return HttpResponse(self.status, b"failing on purpose\n")


@check(
    "health-checks",
    title="an HTTP check on an endpoint the check serves goes passing, then critical on HTTP 500",
    timeout=20,
    name="http_check",
)
async def check_http(ctx: CheckContext[ConsulClient]) -> str:
    host = ctx.client.options.callback_host
    if problem := callback_problem(ctx.client.url, host):
        raise CheckSkipped(problem)
    endpoint = CallbackEndpoint(host)
    ctx.cleanup(endpoint.server.close, "stop the callback endpoint")
    port = (await endpoint.server.start()).port
    service_id = ctx.name(f"consul-http-{secrets.token_hex(3)}")
    check_id = f"{service_id}-check-0"
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/health"
    await _register(
        ctx,
        {"ID": service_id, "Name": service_id, "Tags": ["stackprobe"], "Port": port,
         "Check": {"Name": "stackprobe HTTP probe", "HTTP": url, "Interval": "1s", "Timeout": "1s"}},
    )  # fmt: skip
    ctx.evidence.update(callback_url=url, interval_s=1)

    def requests() -> str:
        if endpoint.requests == 0:
            return (
                f"the agent never requested {url}: set options.callback_host to an address "
                "of this machine the agent can reach"
            )
        return f"{endpoint.requests} request(s) from the agent to {url}"

    passing_after, _ = await _await_status(
        ctx, service_id, check_id, "passing", timeout=8.0, detail=requests
    )
    ctx.evidence["passing_after_ms"] = ms(passing_after)
    endpoint.status = 500
    critical_after, output = await _await_status(
        ctx, service_id, check_id, "critical", timeout=8.0, detail=requests
    )
    ctx.evidence.update(
        critical_after_ms=ms(critical_after), requests=endpoint.requests, output=output[:200]
    )
    if "500" not in output:
        raise CheckFailed(
            f"critical check output: expected the HTTP 500 to be named, saw {output!r}"
        )
    return (
        f"passing after {passing_after:.1f} s, critical {critical_after:.1f} s after the "
        f"endpoint started answering 500 ({endpoint.requests} requests)"
    )


# --- KV ---------------------------------------------------------------------------------------


def _kv_keys(ctx: CheckContext[ConsulClient], *suffixes: str) -> list[str]:
    """Name KV keys for this check and register their deletion before anything is written."""
    keys = [ctx.name(f"consul-kv-{s}") for s in suffixes]

    async def delete() -> None:
        for key in keys:
            await ctx.client.kv_delete(key)

    ctx.cleanup(delete, f"delete {len(keys)} KV key(s)")
    return keys


@check("kv", title="binary and UTF-8 values and flags read back exactly", name="round_trip")
async def check_kv_round_trip(ctx: CheckContext[ConsulClient]) -> str:
    binary_key, text_key = _kv_keys(ctx, "binary", "text")
    client = ctx.client
    binary = bytes(range(256)) + secrets.token_bytes(16)
    text = f"héllo ✓ 𝄞 {secrets.token_hex(4)}"
    flags = secrets.randbelow(2**32)
    started = time.perf_counter()
    expect("PUT of a binary value", True, await client.kv_put(binary_key, binary, flags=flags))
    ctx.evidence["put_ms"] = ms(time.perf_counter() - started)
    expect("PUT of a UTF-8 value", True, await client.kv_put(text_key, text.encode()))
    started = time.perf_counter()
    entry, _ = await client.kv_get(binary_key)
    ctx.evidence["get_ms"] = ms(time.perf_counter() - started)
    if entry is None:
        raise CheckFailed(f"GET {binary_key}: expected the value just written, saw 404")
    expect("binary value (JSON, base64)", binary, entry.value)
    expect("flags", flags, entry.flags)
    raw = await client.call("GET", f"/v1/kv/{_q(binary_key)}", params={"raw": "true"})
    expect("binary value (?raw)", binary, raw.content)
    text_entry, _ = await client.kv_get(text_key)
    expect("UTF-8 value", text, text_entry.value.decode("utf-8", "replace") if text_entry else None)
    ctx.evidence.update(binary_bytes=len(binary), text_bytes=len(text.encode()), flags=flags)
    return f"{len(binary)} binary bytes, a UTF-8 value and flags {flags} read back exactly"


@check(
    "kv",
    title="check-and-set: create-only refuses an existing key, a stale index is refused",
    name="cas",
)
async def check_kv_cas(ctx: CheckContext[ConsulClient]) -> str:
    (key,) = _kv_keys(ctx, "cas")
    client = ctx.client
    expect("create-only PUT (cas=0) of a new key", True, await client.kv_put(key, b"v1", cas=0))
    expect(
        "create-only PUT (cas=0) of an existing key",
        False,
        await client.kv_put(key, b"other", cas=0),
    )
    entry, _ = await client.kv_get(key)
    expect("value after the refused create-only PUT", b"v1", entry.value if entry else None)
    assert entry is not None
    stale = entry.modify_index
    expect("plain PUT", True, await client.kv_put(key, b"v2"))
    current, _ = await client.kv_get(key)
    if current is None or current.modify_index <= stale:
        raise CheckFailed(
            f"ModifyIndex after a PUT: expected more than {stale}, saw {current.modify_index if current else None}"
        )
    expect(
        f"PUT with the stale index (cas={stale})",
        False,
        await client.kv_put(key, b"stale", cas=stale),
    )
    expect("value after the refused stale PUT", b"v2", (await client.kv_get(key))[0].value)  # type: ignore[union-attr]
    expect(
        f"PUT with the current index (cas={current.modify_index})",
        True,
        await client.kv_put(key, b"v3", cas=current.modify_index),
    )
    expect("value after the CAS PUT", b"v3", (await client.kv_get(key))[0].value)  # type: ignore[union-attr]
    ctx.evidence.update(stale_index=stale, current_index=current.modify_index)
    return f"cas=0 refused an existing key; cas={stale} (stale) refused, cas={current.modify_index} applied"


@check(
    "kv",
    title="a recursive list returns exactly the keys under a prefix; delete removes one",
    name="list_and_delete",
)
async def check_kv_list_and_delete(ctx: CheckContext[ConsulClient]) -> str:
    tree = ctx.name("consul-kv-tree/")
    a, bc, d, sibling = _kv_keys(ctx, "tree/a", "tree/b/c", "tree/d", "tree-sibling")
    client = ctx.client
    for key in (a, bc, d, sibling):
        expect(f"PUT {key}", True, await client.kv_put(key, key.encode()))
    listed = await client.kv_list(tree)
    expect(f"keys listed under {tree} (?recurse)", [a, bc, d], sorted(e.key for e in listed))
    expect(
        "values listed",
        [a.encode(), bc.encode(), d.encode()],
        [e.value for e in sorted(listed, key=lambda e: e.key)],
    )
    expect(f"key names under {tree} (?keys)", [a, bc, d], sorted(await client.kv_keys(tree)))
    await client.kv_delete(bc)
    gone, _ = await client.kv_get(bc)
    expect(f"GET {bc} after DELETE", None, gone)
    expect(f"keys under {tree} after one DELETE", [a, d], sorted(await client.kv_keys(tree)))
    ctx.evidence.update(listed=len(listed), prefix=tree)
    return f"recursive list returned exactly the {len(listed)} keys under the prefix; DELETE removed one"


@check(
    "kv", title="a blocking query wakes up within 1 s of a concurrent write", name="blocking_query"
)
async def check_kv_blocking_query(ctx: CheckContext[ConsulClient]) -> str:
    (key,) = _kv_keys(ctx, "watched")
    client = ctx.client
    await client.kv_put(key, b"before")
    _, index = await client.kv_get(key)
    sent = time.monotonic()
    early = 0
    while True:
        # Consul: "the return of a blocking request is no guarantee of a change" (other writes
        # in the KV store wake it too). Re-issue on an early return that shows no change to
        # this key; fail on a changed value, or when it never blocks.
        watch = asyncio.create_task(client.kv_get(key, index=index, wait=f"{BLOCKING_WAIT_S}s"))
        ctx.cleanup(lambda w=watch: _cancel(w), "stop the blocking query")  # type: ignore[misc]
        done, _ = await asyncio.wait({watch}, timeout=BLOCKING_WRITE_AFTER_S)
        if not done:
            break
        entry, new_index = watch.result()
        early += 1
        if (entry.value if entry else None) != b"before" or early > 3:
            raise CheckFailed(
                f"blocking query (index={index}, wait={BLOCKING_WAIT_S}s): expected it to wait for a "
                f"change, it returned {early} time(s) early, last after {time.monotonic() - sent:.3f} s "
                f"with index {new_index} and value {entry.value if entry else None!r} before anything was written"
            )
        index = max(index, new_index)
    ctx.evidence["early_returns"] = early
    written = time.monotonic()
    await client.kv_put(key, b"after")
    committed = time.monotonic()  # the write's own latency is not the query's to wake from
    entry, new_index = await watch
    woke = max(0.0, time.monotonic() - committed)
    ctx.evidence.update(
        index_before=index,
        index_after=new_index,
        held_s=round(written - sent, 3),
        write_ms=ms(committed - written),
        wake_ms=ms(woke),
    )
    expect("value the blocking query returned", b"after", entry.value if entry else None)
    if new_index <= index:
        raise CheckFailed(
            f"X-Consul-Index after the write: expected more than {index}, saw {new_index}"
        )
    if woke > 1.0:
        raise CheckFailed(
            f"blocking query woke {woke:.2f} s after the write returned: expected within 1 s"
        )
    return f"blocking query held {written - sent:.1f} s, woke {ms(woke)} ms after the write"


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: its outcome no longer matters, and asyncio must not log it


@check("kv", title="a session lock has one holder at a time and passes on release", name="lock")
async def check_kv_lock(ctx: CheckContext[ConsulClient]) -> str:
    (key,) = _kv_keys(ctx, "lock")
    client = ctx.client
    sessions: list[str] = []

    async def destroy() -> None:
        for session in sessions:
            await client.session_destroy(session)

    ctx.cleanup(destroy, "destroy sessions")
    for holder in ("a", "b"):
        sessions.append(await client.session_create(ctx.name(f"consul-lock-{holder}")))
    first, second = sessions
    expect("acquire by the first session", True, await client.kv_put(key, b"a", acquire=first))
    expect(
        "acquire by a second session while held",
        False,
        await client.kv_put(key, b"b", acquire=second),
    )
    entry, _ = await client.kv_get(key)
    expect("lock holder", first, entry.session if entry else None)
    expect("release by the holder", True, await client.kv_put(key, b"a", release=first))
    expect(
        "acquire by the second session after release",
        True,
        await client.kv_put(key, b"b", acquire=second),
    )
    entry, _ = await client.kv_get(key)
    expect("lock holder after hand-over", second, entry.session if entry else None)
    ctx.evidence.update(sessions=len(sessions), lock_index=entry.modify_index if entry else None)
    return "a second session was refused the held lock and acquired it after release"


# --- discovery --------------------------------------------------------------------------------


async def _two_instances(
    ctx: CheckContext[ConsulClient], suffix: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """One service, two instances: `healthy` (tag blue, passing) and `failing` (tag green, critical)."""
    name = ctx.name(f"consul-{suffix}")
    healthy: dict[str, Any] = {"ID": f"{name}-1", "Name": name, "Tags": ["stackprobe", "blue"], "Address": "127.0.0.1",
               "Port": _free_port_number(), "Check": {"TTL": PROBE_TTL, "Status": "passing"}}  # fmt: skip
    failing: dict[str, Any] = {"ID": f"{name}-2", "Name": name, "Tags": ["stackprobe", "green"], "Address": "127.0.0.1",
               "Port": healthy["Port"] + 1, "Check": {"TTL": PROBE_TTL, "Status": "critical"}}  # fmt: skip
    for instance in (healthy, failing):
        await _register(ctx, dict(instance))
    return name, healthy, failing


@check(
    "discovery",
    title="health queries return only healthy instances; tag filters and the catalog agree",
    name="health_filtering",
)
async def check_health_filtering(ctx: CheckContext[ConsulClient]) -> str:
    client = ctx.client
    name, healthy, failing = await _two_instances(ctx, "discovery")
    both = sorted([healthy["ID"], failing["ID"]])

    async def registered() -> None:
        seen = _ids(await client.health_service(name))
        if seen != both:
            raise CheckFailed(f"expected instances {both}, saw {seen}")

    started = time.monotonic()
    await ctx.eventually(registered, timeout=5.0, interval=0.05, what="both instances listed")
    ctx.evidence["visible_after_ms"] = ms(time.monotonic() - started)
    started = time.perf_counter()
    passing = _ids(await client.health_service(name, passing=True))
    ctx.evidence["passing_query_ms"] = ms(time.perf_counter() - started)
    expect(f"/v1/health/service/{name}?passing", [healthy["ID"]], passing)
    expect(
        "?tag=green (the critical instance)",
        [failing["ID"]],
        _ids(await client.health_service(name, tag="green")),
    )
    expect(
        "?passing&tag=green", [], _ids(await client.health_service(name, passing=True, tag="green"))
    )
    expect(
        "catalog ?tag=blue",
        [healthy["ID"]],
        _ids(await client.catalog_service(name, tag="blue"), key="Catalog"),
    )
    expect("catalog instances", both, _ids(await client.catalog_service(name), key="Catalog"))
    services = await client.get("/v1/catalog/services")
    expect(
        f"tags of {name} in /v1/catalog/services",
        ["blue", "green", "stackprobe"],
        sorted(services.get(name) or []),
    )
    ctx.evidence.update(instances=both, passing=passing)
    return "?passing returned only the healthy instance; tag filters and the catalog agree"


@check(
    "discovery",
    title="DNS SRV on the agent's DNS port lists only the healthy instance",
    name="dns_srv",
)
async def check_dns_srv(ctx: CheckContext[ConsulClient]) -> str:
    if ctx.client.dns is None:
        ctx.evidence["dns"] = "dns not configured"
        raise CheckSkipped("endpoints.dns not configured (host:port of the agent's DNS)")
    host, port = ctx.client.dns
    domain = ctx.client.options.dns_domain.strip(".")
    name, healthy, _ = await _two_instances(ctx, "dns")

    async def ask(qname: str) -> tuple[SrvAnswer, float]:
        started = time.perf_counter()
        answer = await query_srv(host, port, qname, timeout=2.0)
        return answer, time.perf_counter() - started

    async def answered() -> tuple[SrvAnswer, float]:
        answer, took = await ask(f"{name}.service.{domain}")
        ports = sorted(r.port for r in answer.records)
        if ports != [healthy["Port"]]:
            raise CheckFailed(
                f"expected SRV port {healthy['Port']} only (healthy instance), saw {ports} ({answer.rcode})"
            )
        return answer, took

    started = time.monotonic()
    answer, took = await ctx.eventually(answered, timeout=5.0, interval=0.05, what="DNS SRV answer")
    ctx.evidence.update(
        dns=f"{host}:{port}",
        visible_after_ms=ms(time.monotonic() - started),
        query_ms=ms(took),
        srv=[f"{r.priority} {r.weight} {r.port} {r.target}" for r in answer.records],
        addresses=answer.addresses,
    )
    target = answer.records[0].target.lower()
    expect("A record of the SRV target", [healthy["Address"]], answer.addresses.get(target))
    blue, _ = await ask(f"blue.{name}.service.{domain}")
    expect("SRV ports for tag blue", [healthy["Port"]], [r.port for r in blue.records])
    green, _ = await ask(f"green.{name}.service.{domain}")
    expect(
        "SRV records for tag green (only a critical instance)", [], [r.port for r in green.records]
    )
    ctx.evidence["green_rcode"] = green.rcode
    return (
        f"SRV answer listed only the healthy instance (port {healthy['Port']}) in {ms(took)} ms; "
        "tag queries agree"
    )
