"""Toxiproxy in front of sandbox services, on request (`stackprobe sandbox up --proxy cache`):
one proxy per named stack service, listening on a port of its own and forwarding to the
service's real port. The sandbox's stack file then points the service's `url` at the proxy
and names it in `toxiproxy: {api, proxy}`, so network faults reach the service's clients."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from stackprobe.sandbox.component import Component, Layout
from stackprobe.sandbox.components.observability import CACHE_BIN

HOST = "127.0.0.1"
NAME = "toxiproxy"


def proxy_port_name(service: str) -> str:
    return f"proxy-{service}"


def toxiproxy_component(
    proxied: tuple[str, ...], upstreams: Callable[[Layout], dict[str, str]]
) -> Component:
    """The Toxiproxy of the sandbox for the `proxied` services; `upstreams(layout)` gives each
    one's real host:port."""

    def command(layout: Layout) -> list[str]:
        real = upstreams(layout)
        config = [
            {"name": service, "listen": f"{HOST}:{layout.port(NAME, proxy_port_name(service))}",
             "upstream": real[service], "enabled": True}
            for service in proxied
        ]  # fmt: skip
        layout.dir.mkdir(parents=True, exist_ok=True)
        path = layout.dir / "proxies.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        return [str(CACHE_BIN / "toxiproxy-server"), "-host", HOST, "-port", str(layout.port(NAME, "api")), "-config", str(path)]  # fmt: skip

    def ready(layout: Layout) -> bool:
        try:
            answer = httpx.get(f"http://{HOST}:{layout.port(NAME, 'api')}/proxies", timeout=0.5)
            return answer.status_code == 200 and set(proxied) <= set(answer.json())
        except (httpx.HTTPError, ValueError):
            return False

    return Component(
        name=NAME,
        binary=str(CACHE_BIN / "toxiproxy-server"),
        install="scripts/install-services toxiproxy",
        port_names=("api", *(proxy_port_name(s) for s in proxied)),
        command=command,
        ready=ready,
        services=lambda layout: {},
    )


def through_proxy(service: dict[str, Any], name: str, layout: Layout) -> dict[str, Any]:
    """A stack-file entry rewritten to reach its service through its proxy."""
    parts = urlsplit(str(service["url"]))
    listen = f"{HOST}:{layout.port(NAME, proxy_port_name(name))}"
    netloc = f"{parts.netloc.rsplit('@', 1)[0]}@{listen}" if "@" in parts.netloc else listen
    return {
        **service,
        "url": urlunsplit(parts._replace(netloc=netloc)),
        "toxiproxy": {"api": f"http://{HOST}:{layout.port(NAME, 'api')}", "proxy": name},
    }


def upstream_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"
