"""Sandbox component: a Consul agent in dev mode (in-memory server, its own leader).

Every port comes from the sandbox layout, so it never collides with a Consul the user runs on
the default ports. It is ready once a leader is elected.
"""

from __future__ import annotations

import httpx

from stackprobe.sandbox.component import Component, Layout

PORTS = ("http", "dns", "serf_lan", "serf_wan", "server", "grpc")


def http_url(layout: Layout) -> str:
    return f"http://127.0.0.1:{layout.port('consul', 'http')}"


def consul_command(layout: Layout, node: str = "stackprobe-sandbox") -> list[str]:
    port = {name: str(layout.port("consul", name)) for name in PORTS}
    return [
        "consul", "agent", "-dev",
        "-node", node,
        "-bind", "127.0.0.1",
        "-client", "127.0.0.1",
        "-http-port", port["http"],
        "-dns-port", port["dns"],
        "-serf-lan-port", port["serf_lan"],
        "-serf-wan-port", port["serf_wan"],
        "-server-port", port["server"],
        "-grpc-port", port["grpc"],
        "-log-level", "info",
    ]  # fmt: skip


def leader_elected(url: str, timeout: float = 0.5) -> bool:
    try:
        response = httpx.get(f"{url}/v1/status/leader", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and bool(response.json())


CONSUL = Component(
    name="consul",
    binary="consul",
    install="scripts/install-services consul",
    port_names=PORTS,
    command=consul_command,
    ready=lambda layout: leader_elected(http_url(layout)),
    services=lambda layout: {
        "discovery": {
            "kind": "consul",
            "url": http_url(layout),
            "endpoints": {"dns": f"127.0.0.1:{layout.port('consul', 'dns')}"},
        }
    },
)

COMPONENTS = (CONSUL,)
