"""Orchestration: every endpoint of the stack is reachable on the network, and the Compose file
(a `compose` service of the stack) declares health checks, start-up order and volumes soundly.

The sandbox runs processes, not containers: the Compose tests skip there, with the reason.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from stackprobe.config import Stack


def addresses(stack: Stack) -> dict[str, tuple[str, int]]:
    """Every host:port the stack names (url and endpoints), by `<service>.<endpoint>`."""
    found: dict[str, tuple[str, int]] = {}
    for name, svc in stack.services.items():
        for label, value in [("url", svc.url), *svc.endpoints.items()]:
            if not value or svc.kind == "compose":
                continue
            parts = urlsplit(value if "://" in value else f"tcp://{value}")
            if parts.hostname and parts.port:
                found[f"{name}.{label}"] = (parts.hostname, parts.port)
    return found


def test_every_endpoint_accepts_connections(stackprobe_stack: Stack) -> None:
    unreachable: dict[str, str] = {}
    targets = addresses(stackprobe_stack)
    assert targets, "the stack names no host:port"
    for label, (host, port) in targets.items():
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as exc:
            unreachable[label] = f"{host}:{port}: {exc.strerror or exc}"
    assert unreachable == {}


@pytest.fixture
def compose(stackprobe_stack: Stack) -> dict[str, Any]:
    files = [s.url for s in stackprobe_stack.services.values() if s.kind == "compose" and s.url]
    if not files:
        pytest.skip("the stack has no compose service (the sandbox runs processes, not containers)")
    path = Path(files[0])
    if not path.is_absolute():
        path = stackprobe_stack.path.parent / path
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def test_every_service_has_a_healthcheck_or_says_why_not(compose: dict[str, Any]) -> None:
    missing = [
        name
        for name, svc in compose["services"].items()
        if "healthcheck" not in svc
        and (svc.get("x-stackprobe") or {}).get("healthcheck") != "external"
    ]
    assert missing == []


def test_start_up_order_names_real_services_without_cycles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    graph = {
        name: list(svc.get("depends_on") or {}) for name, svc in services.items()
    }  # short and long syntax both list the names
    assert {d for deps in graph.values() for d in deps} <= set(services)
    order: list[str] = []
    while len(order) < len(graph):
        ready = [n for n, deps in graph.items() if n not in order and set(deps) <= set(order)]
        assert ready, f"depends_on cycle among {sorted(set(graph) - set(order))}"
        order += sorted(ready)


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {
        str(v).split(":", 1)[0] if isinstance(v, str) else v.get("source")
        for svc in compose["services"].values()
        for v in svc.get("volumes") or []
    }
    named = {v for v in used if v and not v.startswith((".", "/", "~", "$"))}
    assert named <= declared
