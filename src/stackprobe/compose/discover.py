"""A stack file from a Compose file: `stackprobe discover --compose FILE`.

Images become kinds (`images.py`), published ports become URLs and endpoints on the host
(127.0.0.1 unless the port is published on another address), credentials found in a
service's environment become `${VAR}` references — the variable the Compose file itself
reads, or the environment key — never the values, `depends_on` is kept between the
services that have a kind, and a `compose` service points at the file. What cannot be mapped
(an unpublished port, an image without a kind) is said in a note, not guessed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from stackprobe.compose.images import PROFILES, kind_of, profile_name
from stackprobe.compose.model import ComposeFile, Service, is_reference, references
from stackprobe.redact import Redactor

Entry = dict[str, Any]


@dataclass
class Discovery:
    stack: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def stack_name(name: str) -> str:
    """A Compose service name as a stack service name ([a-z0-9-]+)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return cleaned or "service"


def _host(ip: str | None) -> str:
    if ip in (None, "", "0.0.0.0", "::", "[::]"):  # noqa: S104 - reading a mapping, not binding
        return "127.0.0.1"
    assert ip is not None
    return f"[{ip}]" if ":" in ip else ip


def published(svc: Service, container_port: int, protocol: str = "tcp") -> str | None:
    """`host:port` where a container port is published, or None."""
    for port in svc.ports:
        if port.protocol != protocol:
            continue
        host_port = port.host_port(container_port)
        if host_port is not None:
            return f"{_host(port.host_ip)}:{host_port}"
    return None


def secret_ref(svc: Service, key: str) -> str | None:
    """`${VAR}` for a credential in the service's environment: never its value."""
    if key not in svc.environment_raw:
        return None
    raw = svc.environment_raw[key]
    if raw is not None and (refs := references(raw)):
        return f"${{{refs[0]}}}"
    return f"${{{key}}}"


class _Discoverer:
    def __init__(self, compose: ComposeFile) -> None:
        self.compose = compose
        self.notes: list[str] = []
        self.names = {name: stack_name(name) for name in compose.services}

    def note(self, svc: Service, text: str) -> None:
        self.notes.append(f"{svc.name}: {text}")

    def need(self, svc: Service, kind: str, port: int, what: str) -> str | None:
        address = published(svc, port)
        if address is None:
            self.note(
                svc,
                f"{kind}: {what} port {port} is not published; publish it "
                f'(e.g. "127.0.0.1:{port}:{port}") to check this service; skipped',
            )
        return address

    def endpoints(self, svc: Service, wanted: dict[str, tuple[int, str]]) -> dict[str, str]:
        found = {}
        for name, (port, template) in wanted.items():
            address = published(svc, port)
            if address is not None:
                found[name] = template.format(address)
        return found

    # --- kinds -----------------------------------------------------------------------------

    def consul(self, svc: Service) -> Entry | None:
        address = self.need(svc, "consul", 8500, "HTTP API")
        if address is None:
            return None
        entry: Entry = {"kind": "consul", "url": f"http://{address}"}
        dns = published(svc, 8600, "udp") or published(svc, 8600)
        if dns:
            entry["endpoints"] = {"dns": dns}
        token = secret_ref(svc, "CONSUL_HTTP_TOKEN")
        if token:
            entry["token"] = token
        return entry

    def redis(self, svc: Service) -> Entry | None:
        address = self.need(svc, "redis", 6379, "Redis")
        if address is None:
            return None
        entry: Entry = {"kind": "redis", "url": f"redis://{address}/0"}
        password = secret_ref(svc, "REDIS_PASSWORD")
        if password is None and "--requirepass" in svc.command_line():
            password = "${REDIS_PASSWORD}"  # noqa: S105 - a reference, not a value
            self.note(svc, "redis: --requirepass is set: export REDIS_PASSWORD with that password")
        if password:
            entry["password"] = password
        return entry

    def arangodb(self, svc: Service) -> Entry | None:
        address = self.need(svc, "arangodb", 8529, "HTTP API")
        if address is None:
            return None
        entry: Entry = {"kind": "arangodb", "url": f"http://{address}"}
        password = secret_ref(svc, "ARANGO_ROOT_PASSWORD")
        if password:
            entry.update(username="root", password=password)
        elif "ARANGO_RANDOM_ROOT_PASSWORD" in svc.environment:
            entry["username"] = "root"
            self.note(
                svc,
                "arangodb: ARANGO_RANDOM_ROOT_PASSWORD: set password: from the container's log",
            )
        return entry

    def trace_store(self, svc: Service, kind: str, api_port: int) -> Entry | None:
        address = self.need(svc, kind, api_port, "query API")
        if address is None:
            return None
        entry: Entry = {"kind": kind, "url": f"http://{address}"}
        wanted = {"otlp_grpc": (4317, "{}"), "otlp_http": (4318, "http://{}")}
        if kind == "jaeger":
            wanted.update(health=(13133, "http://{}/status"), metrics=(8888, "http://{}/metrics"))
        if endpoints := self.endpoints(svc, wanted):
            entry["endpoints"] = endpoints
        return entry

    def collector(self, svc: Service) -> Entry | None:
        endpoints = self.endpoints(
            svc,
            {
                "otlp_grpc": (4317, "{}"),
                "otlp_http": (4318, "http://{}"),
                "health": (13133, "http://{}/"),
                "metrics": (8888, "http://{}/metrics"),
                "prometheus": (8889, "http://{}/metrics"),
            },
        )
        if not endpoints:
            self.note(
                svc,
                "otel-collector: none of its ports (4317, 4318, 13133, 8888, 8889) is "
                "published; skipped",
            )
            return None
        return {"kind": "otel-collector", "endpoints": endpoints}

    def prometheus(self, svc: Service) -> Entry | None:
        address = self.need(svc, "prometheus", 9090, "HTTP API")
        return None if address is None else {"kind": "prometheus", "url": f"http://{address}"}

    def grafana(self, svc: Service) -> Entry | None:
        address = self.need(svc, "grafana", 3000, "HTTP API")
        if address is None:
            return None
        entry: Entry = {"kind": "grafana", "url": f"http://{address}"}
        user_raw = svc.environment_raw.get("GF_SECURITY_ADMIN_USER")
        password = secret_ref(svc, "GF_SECURITY_ADMIN_PASSWORD")
        if "GF_SECURITY_ADMIN_PASSWORD__FILE" in svc.environment:
            self.note(svc, "grafana: the admin password comes from a file: set password_file:")
        if password or user_raw:
            entry["username"] = user_raw or "admin"
        if password:
            entry["password"] = password
        return entry

    def celery(self, svc: Service) -> Entry | None:
        command = svc.command_line()
        broker = _env_or_flag(svc, ("CELERY_BROKER_URL", "BROKER_URL"), command, ("-b", "--broker"))
        backend = _env_or_flag(
            svc, ("CELERY_RESULT_BACKEND", "RESULT_BACKEND"), command, ("--result-backend",)
        )
        broker_url = self.host_url(svc, broker) if broker else None
        if broker_url is None:
            redis_deps = [d for d in svc.depends_on if self.kind(d) == "redis"]
            address = published(self.compose.services[redis_deps[0]], 6379) if redis_deps else None
            if address is None:
                self.note(svc, "celery: no broker URL reachable from the host; skipped")
                return None
            broker_url = f"redis://{address}/0"
            self.note(svc, f"celery: broker assumed to be {broker_url} (its Redis dependency)")
        entry: Entry = {"kind": "celery", "url": broker_url}
        backend_url = self.host_url(svc, backend) if backend else None
        if backend_url:
            entry["endpoints"] = {"backend": backend_url}
        queue = re.search(r"(?:-Q|--queues)[= ]([A-Za-z0-9_.,-]+)", command)
        if queue:
            entry["options"] = {"queue": queue[1].split(",")[0]}
        return entry

    def kind(self, name: str) -> str | None:
        svc = self.compose.services.get(name)
        return kind_of(svc) if svc else None

    def host_url(self, svc: Service, url: str) -> str | None:
        """A URL as seen from inside the Compose network, rewritten for the host."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        host = parts.hostname or ""
        target = self.compose.services.get(host)
        userinfo = ""
        if parts.password is not None:  # every URL, in the stack or outside it: never a literal
            secret = parts.password
            ref = (
                secret
                if is_reference(secret)
                else "${"
                + stack_name(host).upper().replace("-", "_").replace(".", "_")
                + "_PASSWORD}"
            )
            if ref != secret:
                self.note(svc, f"{host}: the URL's password was replaced by {ref}")
            userinfo = f"{parts.username or ''}:{ref}@"
        elif parts.username:
            userinfo = f"{parts.username}@"
        if target is None:
            if host in ("", "localhost"):
                return None
            netloc = f"{userinfo}{host}" + (f":{port}" if port else "")
            return urlunsplit(parts._replace(netloc=netloc))
        container_port = port or {"redis": 6379, "rediss": 6379}.get(parts.scheme, 0)
        address = published(target, container_port)
        if address is None:
            self.note(
                svc, f"{Redactor().text(url)}: port {container_port} of {host} is not published"
            )
            return None
        path = parts.path or ""
        return f"{parts.scheme}://{userinfo}{address}{path}"

    def entry(self, svc: Service) -> Entry | None:
        name = profile_name(svc)
        builders: dict[str, Callable[[Service], Entry | None]] = {
            "consul": self.consul,
            "redis": self.redis,
            "arangodb": self.arangodb,
            "tempo": lambda s: self.trace_store(s, "tempo", 3200),
            "jaeger": lambda s: self.trace_store(s, "jaeger", 16686),
            "otel-collector": self.collector,
            "prometheus": self.prometheus,
            "grafana": self.grafana,
            "celery": self.celery,
        }
        if name is None:
            self.note(svc, f"image {svc.image or '(build)'} has no stackprobe kind; skipped")
            return None
        builder = builders.get(name)
        if builder is None:
            label = PROFILES[name].label if name in PROFILES else name
            self.note(svc, f"{label} has no stackprobe kind; skipped")
            return None
        return builder(svc)


def _env_or_flag(
    svc: Service, keys: tuple[str, ...], command: str, flags: tuple[str, ...]
) -> str | None:
    for key in keys:
        raw = svc.environment_raw.get(key)
        if raw:
            return raw
    for flag in flags:
        match = re.search(rf"(?:^|\s){re.escape(flag)}[= ](\S+)", command)
        if match:
            return match[1]
    return None


def discover(compose: ComposeFile, compose_path: Path, out_dir: Path) -> Discovery:
    """The stack (as a dict ready for YAML) for a parsed Compose file."""
    d = _Discoverer(compose)
    services: dict[str, Entry] = {}
    for svc in compose.services.values():
        entry = d.entry(svc)
        if entry is not None:
            services[d.names[svc.name]] = entry
    for svc in compose.services.values():
        entry = services.get(d.names[svc.name])
        if entry is None:
            continue
        deps = [d.names[dep] for dep in svc.depends_on if d.names.get(dep) in services]
        if deps:
            entry["depends_on"] = deps
    compose_name = "compose" if "compose" not in services else "compose-file"
    try:
        url = os.path.relpath(compose_path.resolve(), out_dir)
    except ValueError:  # another drive
        url = str(compose_path.resolve())
    services[compose_name] = {"kind": "compose", "url": url}
    stack = {"version": 1, "stack": compose.project, "services": services}
    return Discovery(stack=stack, notes=d.notes)


def render_stack(stack: dict[str, Any], compose_path: Path) -> str:
    header = (
        f"# stackprobe stack file discovered from {compose_path} (stackprobe discover).\n"
        "# Credentials are ${VAR} references: export those variables before `stackprobe run`.\n"
        "# Review it, then: stackprobe config check -c <this file>\n"
    )
    return header + yaml.safe_dump(stack, sort_keys=False, default_flow_style=False)
