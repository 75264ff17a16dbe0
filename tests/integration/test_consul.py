"""Consul checks against real Consul 1.8.7 agents: the sandbox's, and agents of the tests' own.

Every capability is shown passing on a healthy agent and failing, with what was seen, when a
real agent misbehaves (a server that never elects a leader, an unexpected datacenter) or when
the HTTP fault proxy of `tests/faults/http_proxy.py` forwards to the real agent but tampers
with one exchange (a catalog answer with a wrong port, a swallowed TTL update, a dropped `cas`,
`index` or `passing` query parameter). Agents a test stops, or starts with ACLs on, are its
own, on free ports (`tests/integration/consul_agent.py`), never the session sandbox's.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackprobe.catalog import known_kinds
from stackprobe.ids import new_run_id
from stackprobe.results import RunResult
from tests.conftest import CliRunner, RunningSandbox, free_port
from tests.faults.http_proxy import HttpFaultProxy, HttpRequest, HttpResponse
from tests.integration.consul_agent import (
    ConsulAgent,
    start_acl_agent,
    start_agent,
    start_leaderless_server,
)
from tests.integration.helpers import outcomes, run_stack, write_stack

CONSUL = known_kinds()["consul"]
CONSUL_CAPS = CONSUL.capabilities


def consul_url(sandbox: RunningSandbox) -> str:
    url = sandbox.stack.service("discovery").url
    assert url is not None
    return url


@pytest.fixture
def agent_http(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    """A plain HTTP client on the sandbox's agent, to look at what a run left behind."""
    with httpx.Client(base_url=consul_url(sandbox), timeout=5.0) as client:
        yield client


def consul_stack(tmp_path: Path, url: str, **extra: object) -> Path:
    return write_stack(tmp_path, {"discovery": {"kind": "consul", "url": url, **extra}})


def by_check(result: RunResult) -> dict[str, Any]:
    return {r.check: r for r in result.results}


def snapshot(client: httpx.Client) -> dict[str, Any]:
    """Everything a run could touch on the agent, with indexes (which move on any write)."""
    kv = client.get("/v1/kv/", params={"recurse": "true"})
    return {
        "kv": kv.json() if kv.status_code == 200 else [],
        "services": client.get("/v1/agent/services").json(),
        "checks": client.get("/v1/agent/checks").json(),
        "sessions": client.get("/v1/session/list").json(),
        "catalog": client.get("/v1/catalog/services").json(),
    }


def wait_until(condition: Any, timeout: float = 5.0) -> bool:
    """Poll (never a fixed sleep) until `condition()` is true; False on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- passing on the real agent ----------------------------------------------------------------


def test_every_consul_capability_passes_on_the_sandbox_with_evidence(
    sandbox: RunningSandbox,
) -> None:
    result = run_stack(sandbox.sandbox.stack_file, kinds=("consul",))
    assert {r.check: r.message for r in result.results if r.outcome.value != "passed"} == {}
    cov = result.coverage.services["discovery"]
    assert (cov.percent, set(cov.capabilities)) == (100.0, set(CONSUL_CAPS))
    checks = by_check(result)
    version = result.services["discovery"].version
    assert version is not None and version.startswith("1.")
    leader = checks["consul.cluster.leader"].evidence
    assert leader["version"] == version and leader["datacenter"] == "dc1"
    assert leader["leader"] in leader["peers"]
    ttl = checks["consul.health-checks.ttl_transitions"].evidence
    assert [t["to"] for t in ttl["transitions"]] == [
        "critical", "passing", "warning", "critical", "passing",
    ]  # fmt: skip
    assert ttl["expired_after_s"] >= 2.5 and "TTL expired" in ttl["expired_output"]
    http = checks["consul.health-checks.http_check"].evidence
    assert http["requests"] >= 2 and "500" in http["output"]
    assert checks["consul.kv.blocking_query"].evidence["wake_ms"] < 1000
    assert checks["consul.kv.blocking_query"].evidence["held_s"] >= 0.4
    dns = checks["consul.discovery.dns_srv"].evidence
    assert dns["dns"] == sandbox.stack.service("discovery").endpoints["dns"]
    assert len(dns["srv"]) == 1 and dns["green_rcode"] == "NXDOMAIN"
    reg = checks["consul.registration.lifecycle"].evidence
    assert reg["catalog_entry"]["Address"] == "192.0.2.10"
    assert reg["catalog_entry"]["ID"].startswith(f"stackprobe-{result.run_id}-")


def test_cli_run_json_reports_all_five_capabilities_passed(
    cli: CliRunner, sandbox: RunningSandbox
) -> None:
    cli.use_sandbox(sandbox)
    started = time.monotonic()
    res = cli("run", "--sandbox", "--kind", "consul", "--format", "json")
    took = time.monotonic() - started
    assert res.code == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    caps = doc["coverage"]["services"]["discovery"]["capabilities"]
    assert caps == dict.fromkeys(CONSUL_CAPS, "passed")
    assert all(r["evidence"] for r in doc["results"])
    assert took < 20, f"a Consul run took {took:.1f} s"


def test_every_name_carries_the_run_prefix_and_everything_registered_is_reapable(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    """Through a pass-through proxy: read every write the checks sent to the agent."""
    with HttpFaultProxy(consul_url(sandbox)).running() as proxy:
        endpoints = sandbox.stack.service("discovery").endpoints
        result = run_stack(consul_stack(tmp_path, proxy.url, endpoints=endpoints))
    assert set(outcomes(result).values()) == {"passed"}
    ns = f"stackprobe-{result.run_id}-"
    writes = [r for r in proxy.seen if r.method in ("PUT", "DELETE")]
    registrations = [r.json() for r in writes if r.path == "/v1/agent/service/register"]
    assert len(registrations) >= 6
    for service in registrations:
        assert service["ID"].startswith(ns) and service["Name"].startswith(ns)
        assert service["Checks"], service
        for check in service["Checks"]:
            assert check["DeregisterCriticalServiceAfter"] == "1m"
            assert check["CheckID"].startswith(ns)
    sessions = [r.json() for r in writes if r.path == "/v1/session/create"]
    assert sessions and all(s["Name"].startswith(ns) and s["TTL"] == "15s" for s in sessions)
    kv = [r for r in writes if r.path.startswith("/v1/kv/")]
    assert kv and all(r.path.startswith(f"/v1/kv/{ns}") for r in kv)
    for r in writes:
        if r.path.startswith(("/v1/agent/service/deregister/", "/v1/agent/check/")):
            assert r.path.rsplit("/", 1)[1].startswith(ns), r.path


# --- nothing left behind, nothing of the user's touched ---------------------------------------


def seed_user_data(client: httpx.Client) -> None:
    """What an application keeps in Consul, including names that merely look like ours."""
    assert client.put("/v1/kv/app/config", content=b"\x00\xff binary \xc3\xa9").json() is True
    assert client.put("/v1/kv/app/feature", content="on ✓".encode(), params={"flags": 7}).json()
    assert client.put("/v1/kv/stackprobe-notarun", content=b"user data").json() is True
    client.put(
        "/v1/agent/service/register",
        json={"ID": "app-web-1", "Name": "app-web", "Tags": ["v1"], "Port": 8080,
              "Check": {"CheckID": "app-web-1-ttl", "TTL": "1h", "Status": "passing"}},
    ).raise_for_status()  # fmt: skip
    client.put("/v1/session/create", json={"Name": "app-leader"}).raise_for_status()


def remove_user_data(client: httpx.Client) -> None:
    for key in ("app/config", "app/feature", "stackprobe-notarun"):
        client.delete(f"/v1/kv/{key}")
    client.put("/v1/agent/service/deregister/app-web-1")
    for session in client.get("/v1/session/list").json():
        if session["Name"] == "app-leader":
            client.put(f"/v1/session/destroy/{session['ID']}")


def test_a_run_leaves_user_data_byte_for_byte_and_nothing_of_its_own(
    sandbox: RunningSandbox, agent_http: httpx.Client
) -> None:
    seed_user_data(agent_http)
    try:
        before = snapshot(agent_http)
        assert len(before["kv"]) >= 3 and "app-web-1" in before["services"]
        result = run_stack(sandbox.sandbox.stack_file, kinds=("consul",))
        assert result.exit_code == 0
        # the agent drops deregistered services from the catalog by anti-entropy: poll briefly
        assert wait_until(lambda: snapshot(agent_http) == before), json.dumps(
            snapshot(agent_http), indent=1
        )
        assert result.run_id not in json.dumps(snapshot(agent_http))
        values = {e["Key"]: base64.b64decode(e["Value"]) for e in snapshot(agent_http)["kv"]}
        assert values["app/config"] == b"\x00\xff binary \xc3\xa9"
    finally:
        remove_user_data(agent_http)


def test_clean_removes_old_leftovers_and_nothing_else(
    sandbox: RunningSandbox, agent_http: httpx.Client, cli: CliRunner
) -> None:
    old = f"stackprobe-{new_run_id(datetime.now(UTC) - timedelta(hours=3))}-consul"
    fresh = f"stackprobe-{new_run_id()}-consul"
    seed_user_data(agent_http)
    try:
        for prefix in (old, fresh):
            agent_http.put(
                "/v1/agent/service/register",
                json={"ID": f"{prefix}-svc", "Name": f"{prefix}-svc",
                      "Check": {"CheckID": f"{prefix}-svc-check", "TTL": "10m",
                                "DeregisterCriticalServiceAfter": "1m"}},
            ).raise_for_status()  # fmt: skip
            agent_http.put(
                "/v1/agent/check/register",
                json={"ID": f"{prefix}-lonely-check", "Name": "left alone", "TTL": "10m"},
            ).raise_for_status()
            assert agent_http.put(f"/v1/kv/{prefix}-kv-key", content=b"left").json() is True
            agent_http.put(
                "/v1/session/create", json={"Name": f"{prefix}-lock-a", "TTL": "600s"}
            ).raise_for_status()
        before = snapshot(agent_http)
        cli.use_sandbox(sandbox)
        res = cli("clean", "--sandbox", "--older-than", "1h")
        assert res.code == 0, res.stderr
        assert f"service {old}-svc" in res.stdout
        assert f"check {old}-lonely-check" in res.stdout
        assert f"kv {old}-kv-key" in res.stdout
        assert f"session {old}-lock-a" in res.stdout
        assert fresh not in res.stdout
        after = snapshot(agent_http)
        assert old not in json.dumps(
            {k: v for k, v in after.items() if k != "catalog"}
        )  # the catalog follows the agent by anti-entropy
        assert wait_until(lambda: old not in json.dumps(snapshot(agent_http)["catalog"]))

        def without_old(snap: dict[str, Any]) -> str:
            return json.dumps(
                {
                    "kv": [e for e in snap["kv"] if old not in e["Key"]],
                    "services": {k: v for k, v in snap["services"].items() if old not in k},
                    "checks": {k: v for k, v in snap["checks"].items() if old not in k},
                    "sessions": [s for s in snap["sessions"] if old not in s["Name"]],
                },
                sort_keys=True,
            )

        assert without_old(after) == without_old(before)  # the fresh run's and the user's remain
    finally:
        remove_user_data(agent_http)
        for sid, _ in snapshot(agent_http)["services"].items():
            if sid.startswith(fresh):
                agent_http.put(f"/v1/agent/service/deregister/{sid}")
        agent_http.put(f"/v1/agent/check/deregister/{fresh}-lonely-check")
        agent_http.delete(f"/v1/kv/{fresh}-kv-key")
        for session in agent_http.get("/v1/session/list").json():
            if session["Name"].startswith(fresh):
                agent_http.put(f"/v1/session/destroy/{session['ID']}")


# --- a stopped agent --------------------------------------------------------------------------


@pytest.fixture
def own_agent(tmp_path: Path) -> Iterator[ConsulAgent]:
    agent = start_agent(tmp_path / "consul")
    try:
        yield agent
    finally:
        agent.stop()


def test_killing_the_agent_mid_run_turns_remaining_checks_into_one_line_errors(
    cli: CliRunner, tmp_path: Path, own_agent: ConsulAgent
) -> None:
    stack = consul_stack(tmp_path, own_agent.url, endpoints={"dns": own_agent.dns})
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackprobe", "run", "-c", str(stack), "--format", "json"],
        env=cli.env(), cwd=cli.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with own_agent.client() as client:
        # the TTL check waits ~3 s for its TTL to run out: kill the agent while it does
        assert wait_until(
            lambda: any("consul-ttl" in s for s in client.get("/v1/agent/services").json()),
            timeout=20,
        )
    killed = time.monotonic()
    own_agent.kill()
    out, err = proc.communicate(timeout=60)
    after_kill = time.monotonic() - killed
    assert proc.returncode == 1, err
    assert "Traceback" not in out + err
    doc = json.loads(out)
    results = {r["check"]: r for r in doc["results"]}
    assert results["consul.health-checks.ttl_transitions"]["outcome"] == "error"
    errors = [r for r in doc["results"] if r["outcome"] == "error"]
    assert errors
    for r in errors:
        assert r["message"] and "\n" not in r["message"], r
        message = r["message"]
        cause = message.split(" failed: ", 1)[-1] if message.startswith("cleanup ") else message
        assert cause.startswith(("http: ", "consul: ", "DNS query", "no DNS answer")), r
    timeouts = {spec.id: spec.timeout or 10 for spec in CONSUL.checks}
    for r in doc["results"]:
        assert r["outcome"] in ("passed", "error"), r
        assert r["duration_s"] <= timeouts[r["check"]] + 5, r  # within its timeout (+cleanups)
    assert after_kill < 15


# --- each capability fails, with what it saw, when the agent misbehaves -----------------------


def test_cluster_fails_on_a_server_that_never_elects_a_leader(tmp_path: Path) -> None:
    agent = start_leaderless_server(tmp_path / "consul")
    try:
        result = run_stack(consul_stack(tmp_path, agent.url), capabilities=("cluster", "kv"))
    finally:
        agent.kill()  # a leaderless server takes long to leave gracefully
    checks = by_check(result)
    leader = checks["consul.cluster.leader"]
    assert (leader.outcome.value, leader.message) == (
        "failed",
        "leader: expected an elected leader, saw none (/v1/status/leader is empty)",
    )
    assert leader.evidence["leader"] == "" and leader.evidence["peers"] == []
    # what needs the leader cannot run: the agent holds the write ~7 s, then answers 500
    kv = checks["consul.kv.round_trip"]
    assert kv.outcome.value == "error" and "\n" not in kv.message
    assert kv.message.startswith(
        (
            "http: no answer in time (ReadTimeout) to PUT http://127.0.0.1:",
            "consul: HTTP 500 from PUT /v1/kv/stackprobe-",
        )
    ), kv.message
    assert result.exit_code == 1


def test_cluster_fails_when_the_datacenter_is_not_the_expected_one(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    path = consul_stack(tmp_path, consul_url(sandbox), expectations={"datacenter": "dc9"})
    [r] = run_stack(path, capabilities=("cluster",)).results
    assert (r.outcome.value, r.message) == (
        "failed",
        "datacenter: expected 'dc9' (expectations.datacenter), saw 'dc1'",
    )


def wrong_catalog_port(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """The catalog answers with the registered port plus one."""
    if request.path.startswith("/v1/catalog/service/") and "registration" in request.path:
        entries = response.json()
        for entry in entries:
            entry["ServicePort"] += 1
        return response.with_json(entries)
    return response


def swallow_ttl_pass(request: HttpRequest) -> HttpRequest | HttpResponse:
    """`PUT /v1/agent/check/pass/<id>` is answered 200 but never reaches the agent."""
    if request.path.startswith("/v1/agent/check/pass/"):
        return HttpResponse(200)
    return request


def misdirect_http_check(request: HttpRequest) -> HttpRequest | HttpResponse:
    """The HTTP check is registered against a closed port instead of the check's endpoint."""
    if request.path == "/v1/agent/service/register":
        service = request.json()
        for check in service.get("Checks") or []:
            if "HTTP" in check:
                check["HTTP"] = f"http://127.0.0.1:{free_port()}/health"
        return replace(request, body=json.dumps(service).encode())
    return request


def drop_param(name: str, path_prefix: str) -> Any:
    def on_request(request: HttpRequest) -> HttpRequest | HttpResponse:
        if request.path.startswith(path_prefix) and name in request.query:
            return request.without_param(name)
        return request

    on_request.__doc__ = f"`?{name}` is dropped from requests to {path_prefix}"
    return on_request


@pytest.mark.parametrize(
    ("on_request", "on_response", "capability", "check", "seen"),
    [
        (None, wrong_catalog_port, "registration", "consul.registration.lifecycle", "catalog entry: expected {'Port': "),
        (swallow_ttl_pass, None, "health-checks", "consul.health-checks.ttl_transitions", "expected passing, saw critical"),
        (misdirect_http_check, None, "health-checks", "consul.health-checks.http_check", "expected passing, saw critical (the agent never requested http://"),
        (drop_param("cas", "/v1/kv/"), None, "kv", "consul.kv.cas", "create-only PUT (cas=0) of an existing key: expected False, saw True"),
        (drop_param("index", "/v1/kv/"), None, "kv", "consul.kv.blocking_query", "expected it to wait for a change, it returned 4 time(s) early"),
        (drop_param("passing", "/v1/health/service/"), None, "discovery", "consul.discovery.health_filtering", "?passing: expected ["),
    ],
)  # fmt: skip
def test_checks_fail_with_what_they_saw_when_the_agent_misbehaves(
    tmp_path: Path,
    sandbox: RunningSandbox,
    on_request: Any,
    on_response: Any,
    capability: str,
    check: str,
    seen: str,
) -> None:
    faults: dict[str, Any] = {}
    if on_request is not None:
        faults["on_request"] = on_request
    if on_response is not None:
        faults["on_response"] = on_response
    with HttpFaultProxy(consul_url(sandbox), **faults).running() as proxy:
        result = run_stack(consul_stack(tmp_path, proxy.url), capabilities=(capability,))
    r = by_check(result)[check]
    assert r.outcome.value == "failed", r.message
    assert seen in r.message, r.message
    assert result.exit_code == 1


def test_http_check_is_skipped_with_a_reason_when_the_agent_is_not_local(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    """A non-loopback agent address with the default loopback callback host: the check is run
    directly (stackprobe.testing) on a client that talks to the real agent but is configured
    with a remote address, since an unreachable agent would make every check `error`."""
    from stackprobe.services.consul import ConsulClient, ConsulOptions, check_http
    from stackprobe.testing import check_context, run_check

    remote = consul_url(sandbox).replace("127.0.0.1", "consul.internal.example")

    async def make_client() -> ConsulClient:
        return ConsulClient(
            httpx.AsyncClient(base_url=consul_url(sandbox)), remote, None, ConsulOptions()
        )

    import asyncio

    client = asyncio.run(make_client())
    r = run_check(check_http, check_context("consul", client, config={"url": remote}))
    assert r.outcome.value == "skipped"
    assert r.message.startswith("the agent (consul.internal.example) is not local")


def test_dns_part_is_skipped_when_no_dns_endpoint_is_configured(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    result = run_stack(consul_stack(tmp_path, consul_url(sandbox)), capabilities=("discovery",))
    checks = by_check(result)
    dns = checks["consul.discovery.dns_srv"]
    assert dns.outcome.value == "skipped" and dns.evidence == {"dns": "dns not configured"}
    assert checks["consul.discovery.health_filtering"].outcome.value == "passed"
    assert result.coverage.services["discovery"].capabilities["discovery"] == "passed"


# --- ACL tokens -------------------------------------------------------------------------------

MASTER_TOKEN = "3f0c2a9e-acl-master-token-7d1b"


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    agent = start_acl_agent(tmp_path_factory.mktemp("consul-acl"), MASTER_TOKEN)
    try:
        yield agent
    finally:
        agent.stop()


def test_the_token_is_sent_as_x_consul_token(
    tmp_path: Path, acl_agent: ConsulAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", MASTER_TOKEN)
    path = consul_stack(tmp_path, acl_agent.url, token="${CONSUL_HTTP_TOKEN}")
    result = run_stack(path)
    assert {r.check: r.message for r in result.results if r.outcome.value != "passed"} == {
        "consul.discovery.dns_srv": "endpoints.dns not configured (host:port of the agent's DNS)"
    }  # DNS answers with the agent's default token, which ACLs deny: not configured here
    assert by_check(result)["consul.cluster.leader"].evidence["token"] == "configured"
    assert MASTER_TOKEN not in result.model_dump_json()


def test_without_the_token_an_acl_agent_gives_one_line_permission_errors(
    tmp_path: Path, acl_agent: ConsulAgent
) -> None:
    result = run_stack(consul_stack(tmp_path, acl_agent.url), capabilities=("cluster", "kv"))
    for r in result.results:
        assert r.outcome.value == "error", r
        assert r.message.startswith("consul: HTTP 403 from "), r.message
        assert "Permission denied" in r.message, r.message
    assert result.exit_code == 1


def test_a_token_never_shows_up_in_json_output(
    cli: CliRunner, tmp_path: Path, acl_agent: ConsulAgent
) -> None:
    """A wrong token, echoed back by a proxy in its 403 answer: the report masks it."""
    secret = "wrong-token-5b9e1c77"

    def echo_token(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status == 403:
            token = request.headers.get("x-consul-token", "")
            return HttpResponse(403, f"ACL not found for token {token}".encode())
        return response

    with HttpFaultProxy(acl_agent.url, on_response=echo_token).running() as proxy:
        stack = consul_stack(tmp_path, proxy.url, token="${CONSUL_HTTP_TOKEN}")
        res = cli("run", "-c", str(stack), "--format", "json", CONSUL_HTTP_TOKEN=secret)
    assert res.code == 1
    assert secret not in res.stdout + res.stderr
    doc = json.loads(res.stdout)
    messages = [r["message"] for r in doc["results"] if r["outcome"] == "error"]
    assert any(m.endswith("ACL not found for token ***") for m in messages), messages
    saved = (cli.state_dir / "runs" / f"{doc['run_id']}.json").read_text()
    assert secret not in saved
