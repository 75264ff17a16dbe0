"""Consul service discovery through its documented HTTP API, via the plugin's `consul_client`.

`consul_client.http` is an HTTP client on the agent's API; everything registered or written
is named under `consul_client.ns` and removed by name after the test.
"""

from __future__ import annotations

import base64

import pytest

from stackprobe.pytest_plugin import ServiceHandle
from stackprobe.testing import eventually


def register(consul: ServiceHandle[object], port: int = 8080) -> str:
    """Register a service with a TTL check under the run's prefix; deregistered after the test."""
    service_id = consul.name("checkout")
    consul.cleanup(lambda: consul.http.put(f"/v1/agent/service/deregister/{service_id}"))
    answer = consul.http.put(
        "/v1/agent/service/register",
        json={
            "ID": service_id, "Name": service_id, "Address": "127.0.0.1", "Port": port,
            "Tags": ["infra-test"],
            "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "1m"},
        },
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    return service_id


@pytest.mark.stackprobe(kind="consul", capability="cluster")
def test_the_cluster_has_a_leader(consul_client: ServiceHandle[object]) -> None:
    leader = consul_client.http.get("/v1/status/leader").json()
    peers = consul_client.http.get("/v1/status/peers").json()
    assert leader, "no leader elected"
    assert leader in peers


@pytest.mark.stackprobe(kind="consul", capability="registration")
def test_a_registered_service_is_known_to_the_agent(consul_client: ServiceHandle[object]) -> None:
    service_id = register(consul_client, port=8081)
    services = consul_client.http.get("/v1/agent/services").json()
    assert services[service_id]["Port"] == 8081
    assert services[service_id]["Tags"] == ["infra-test"]


@pytest.mark.stackprobe(kind="consul", capability="health-checks")
def test_health_follows_the_ttl_check(consul_client: ServiceHandle[object]) -> None:
    service_id = register(consul_client)

    def passing() -> list[str]:
        entries = consul_client.http.get(f"/v1/health/service/{service_id}?passing=1").json()
        return [e["Service"]["ID"] for e in entries]

    assert passing() == []  # a new TTL check starts critical
    consul_client.http.put(f"/v1/agent/check/pass/service:{service_id}").raise_for_status()
    eventually(lambda: True if passing() == [service_id] else None, 5, "passing after check/pass")
    consul_client.http.put(f"/v1/agent/check/fail/service:{service_id}").raise_for_status()
    eventually(lambda: True if passing() == [] else None, 5, "not passing after check/fail")


@pytest.mark.stackprobe(kind="consul", capability="kv")
def test_kv_round_trip_and_check_and_set(consul_client: ServiceHandle[object]) -> None:
    key = consul_client.name("config/feature-flags")
    consul_client.cleanup(lambda: consul_client.http.delete(f"/v1/kv/{key}"))
    http = consul_client.http
    assert http.put(f"/v1/kv/{key}", content=b'{"checkout": true}').json() is True
    assert http.put(f"/v1/kv/{key}?cas=0", content=b"overwrite").json() is False  # create-only
    (entry,) = http.get(f"/v1/kv/{key}").json()
    assert base64.b64decode(entry["Value"]) == b'{"checkout": true}'
    stale = entry["ModifyIndex"]
    assert http.put(f"/v1/kv/{key}?cas={stale}", content=b"v2").json() is True
    assert http.put(f"/v1/kv/{key}?cas={stale}", content=b"v3").json() is False  # stale index
    assert http.get(f"/v1/kv/{key}?raw").content == b"v2"


@pytest.mark.stackprobe(kind="consul", capability="discovery")
def test_discovery_returns_the_registered_address(consul_client: ServiceHandle[object]) -> None:
    service_id = register(consul_client, port=8082)
    instances = consul_client.http.get(f"/v1/catalog/service/{service_id}").json()
    assert [(i["ServiceAddress"], i["ServicePort"]) for i in instances] == [("127.0.0.1", 8082)]
    assert service_id in consul_client.http.get("/v1/catalog/services").json()
