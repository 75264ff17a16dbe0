"""A stack file from a Compose file: `stackprobe discover --compose FILE`.

Images become kinds (`images.py`, under any registry or mirror), ports become URLs and
endpoints on the host: published ports (127.0.0.1 unless published on another address), or
the server's own port with `network_mode: host`, after the server's flags (`--port`,
`--web.listen-address`, `GF_SERVER_HTTP_PORT`...). Credentials found in a service's
environment become `${VAR}` references — the variable the Compose file itself reads, or the
environment key — never the values. A Celery worker's broker comes from its environment
(interpolated as Compose does, so `${BROKER:-redis://redis:6379/2}` is database 2), its
env_file or its flags. `depends_on` is kept between the services that have a kind, one-shot
jobs are left out, and a `compose` service points at the file.

Where a role (`links`) has several candidates — two collectors, two Prometheus, Jaeger and
Tempo — the link is read from the Compose file: a service's environment, command and mounted
config files naming the other (`tempo:4317` in the collector's config), then depends_on.
When nothing tells, the first candidate is picked and a note says so, so the stack file
always passes `stackprobe config check`. What cannot be mapped (an unpublished port, an image
without a kind) is said in a note, not guessed.
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

from stackprobe.catalog import known_kinds
from stackprobe.compose.images import (
    PROFILES,
    kind_of,
    listeners,
    main_port,
    mounted_file,
    profile_name,
    words,
)
from stackprobe.compose.lifecycle import lifecycle
from stackprobe.compose.lint import cycle_in
from stackprobe.compose.model import ComposeFile, Service, host_path, is_reference, references
from stackprobe.redact import Redactor

Entry = dict[str, Any]
MAX_MENTION_FILES = 20  # files read from one mounted config directory


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


def published(
    svc: Service, container_port: int, protocol: str = "tcp", base: Path = Path()
) -> str | None:
    """`host:port` where a container port is reachable from the host, or None."""
    if svc.host_network:
        bound = next(
            (lst for lst in listeners(svc, base) or [] if lst.port == container_port), None
        )
        return f"{_host(bound.address if bound else None)}:{container_port}"
    for port in svc.ports:
        if port.protocol != protocol:
            continue
        host_port = port.host_port(container_port)
        if host_port is not None:
            return f"{_host(port.host_ip)}:{host_port}"
    return None


def secret_ref(svc: Service, *keys: str) -> str | None:
    """`${VAR}` for a credential in the service's environment: never its value."""
    for key in keys:
        if key not in svc.environment_raw and key not in svc.environment:
            continue
        raw = svc.environment_raw.get(key)
        if raw is not None and (refs := references(raw)):
            return f"${{{refs[0]}}}"
        return f"${{{key}}}"
    return None


@dataclass(frozen=True)
class HostURL:
    """A URL from inside the Compose network, as seen from the host; the password apart."""

    url: str  # without a password
    username: str | None
    password: str | None  # a ${VAR} reference


class _Discoverer:
    def __init__(self, compose: ComposeFile) -> None:
        self.compose = compose
        self.base = compose.base_dir
        self.notes: list[str] = []
        self.names: dict[str, str] = {}
        for name in compose.services:
            candidate, n = stack_name(name), 2
            while candidate in self.names.values() or candidate in ("compose",):
                candidate, n = f"{stack_name(name)}-{n}", n + 1
            self.names[name] = candidate

    def note(self, svc: Service, text: str) -> None:
        self.notes.append(f"{svc.name}: {text}")

    def published(self, svc: Service, port: int, protocol: str = "tcp") -> str | None:
        return published(svc, port, protocol, self.base)

    def need(self, svc: Service, kind: str, port: int, what: str) -> str | None:
        address = self.published(svc, port)
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
            address = self.published(svc, port)
            if address is not None:
                found[name] = template.format(address)
        return found

    def port(self, svc: Service, default: int) -> int:
        return main_port(svc, self.base) or default

    # --- kinds -----------------------------------------------------------------------------

    def consul(self, svc: Service) -> Entry | None:
        address = self.need(svc, "consul", self.port(svc, 8500), "HTTP API")
        if address is None:
            return None
        entry: Entry = {"kind": "consul", "url": f"http://{address}"}
        dns = self.published(svc, 8600, "udp") or self.published(svc, 8600)
        if dns:
            entry["endpoints"] = {"dns": dns}
        token = secret_ref(svc, "CONSUL_HTTP_TOKEN")
        if token:
            entry["token"] = token
        return entry

    def redis(self, svc: Service) -> Entry | None:
        address = self.need(svc, "redis", self.port(svc, 6379), "Redis")
        if address is None:
            return None
        entry: Entry = {"kind": "redis", "url": f"redis://{address}/0"}
        password = secret_ref(svc, "REDIS_PASSWORD", "VALKEY_PASSWORD")
        if password is None and "--requirepass" in words(svc):
            password = "${REDIS_PASSWORD}"  # noqa: S105 - a reference, not a value
            self.note(svc, "redis: --requirepass is set: export REDIS_PASSWORD with that password")
        if password:
            entry["password"] = password
        return entry

    def arangodb(self, svc: Service) -> Entry | None:
        address = self.need(svc, "arangodb", self.port(svc, 8529), "HTTP API")
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
        address = self.need(svc, "prometheus", self.port(svc, 9090), "HTTP API")
        return None if address is None else {"kind": "prometheus", "url": f"http://{address}"}

    def grafana(self, svc: Service) -> Entry | None:
        address = self.need(svc, "grafana", self.port(svc, 3000), "HTTP API")
        if address is None:
            return None
        entry: Entry = {"kind": "grafana", "url": f"http://{address}"}
        password = secret_ref(svc, "GF_SECURITY_ADMIN_PASSWORD")
        if "GF_SECURITY_ADMIN_PASSWORD__FILE" in svc.environment:
            self.note(svc, "grafana: the admin password comes from a file: set password_file:")
        user = svc.environment.get("GF_SECURITY_ADMIN_USER")
        if user == "" and svc.environment_raw.get("GF_SECURITY_ADMIN_USER"):
            self.note(
                svc, "grafana: GF_SECURITY_ADMIN_USER comes from an unset variable; admin assumed"
            )
        if password or user:
            entry["username"] = user or "admin"
        if password:
            entry["password"] = password
        return entry

    def celery(self, svc: Service) -> Entry | None:
        broker = self.setting(svc, ("CELERY_BROKER_URL", "BROKER_URL"), ("-b", "--broker"))
        backend = self.setting(
            svc, ("CELERY_RESULT_BACKEND", "RESULT_BACKEND"), ("--result-backend",)
        )
        broker_url = self.host_url(svc, *broker) if broker else None
        if broker_url is None:
            redis_deps = [d for d in svc.depends_on if self.kind(d) == "redis"]
            target = self.compose.services[redis_deps[0]] if redis_deps else None
            address = self.published(target, self.port(target, 6379)) if target else None
            if address is None:
                self.note(svc, "celery: no broker URL reachable from the host; skipped")
                return None
            broker_url = HostURL(f"redis://{address}/0", None, None)
            self.note(svc, f"celery: broker assumed to be {broker_url.url} (its Redis dependency)")
        entry: Entry = {"kind": "celery", "url": broker_url.url}
        if broker_url.username:
            entry["username"] = broker_url.username
        if broker_url.password:
            entry["password"] = broker_url.password
        backend_url = self.host_url(svc, *backend) if backend else None
        if backend_url and backend_url.url.startswith(("redis://", "rediss://")):
            entry["endpoints"] = {"backend": _with_password(backend_url)}
        elif backend_url:
            self.note(svc, f"celery: result backend {backend_url.url} is not Redis; not checked")
        queue = re.search(r"(?:-Q|--queues)[= ]([A-Za-z0-9_.,-]+)", " ".join(words(svc)))
        if queue:
            entry["options"] = {"queue": queue[1].split(",")[0]}
        return entry

    def setting(
        self, svc: Service, keys: tuple[str, ...], flags: tuple[str, ...]
    ) -> tuple[str, str] | None:
        """(value, as written) of an environment key (or env_file), else of a command flag."""
        for key in keys:
            value = svc.environment.get(key)
            raw = svc.environment_raw.get(key)
            if value:
                return value, raw or value
            if raw:
                self.note(svc, f"{key} comes from {raw}, which is not set here")
        command = " ".join(words(svc))
        for flag in flags:
            match = re.search(rf"(?:^|\s){re.escape(flag)}[= ](\S+)", command)
            if match:
                return match[1], match[1]
        return None

    def kind(self, name: str) -> str | None:
        svc = self.compose.services.get(name)
        return kind_of(svc) if svc else None

    def host_url(self, svc: Service, url: str, raw: str) -> HostURL | None:
        """A URL as seen from inside the Compose network, rewritten for the host."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            self.note(svc, f"{Redactor().text(url)} is not a URL; skipped")
            return None
        if not parts.scheme:
            return None
        host = parts.hostname or ""
        target = next(
            (s for s in self.compose.services.values() if host in (s.name, *s.aliases)), None
        )
        password = None
        if parts.password is not None:  # every URL, in the stack or outside it: never a literal
            written = re.search(r"://[^/@\s]*:([^@\s/]*)@", raw)
            refs = references(written[1]) if written else []
            if refs and is_reference(written[1] if written else ""):
                password = f"${{{refs[0]}}}"
            else:
                name = stack_name(host).upper().replace("-", "_").replace(".", "_")
                password = f"${{{name}_PASSWORD}}"
                self.note(svc, f"{host}: the URL's password was replaced by {password}")
        username = parts.username or None
        if target is None:
            if host in ("", "localhost", "127.0.0.1"):
                return None
            netloc = host + (f":{port}" if port else "")
            return HostURL(urlunsplit(parts._replace(netloc=netloc)), username, password)
        container_port = port or {"redis": 6379, "rediss": 6379}.get(parts.scheme, 0)
        address = self.published(target, container_port)
        if address is None:
            self.note(
                svc, f"{Redactor().text(url)}: port {container_port} of {host} is not published"
            )
            return None
        return HostURL(f"{parts.scheme}://{address}{parts.path or ''}", username, password)

    def entries(self, svc: Service) -> list[tuple[str, Entry]]:
        """(stack service name, entry) for a Compose service: none, one, or more."""
        name = profile_name(svc)
        if name is None:
            self.note(svc, f"image {svc.image or '(build)'} has no stackprobe kind; skipped")
            return []
        life = lifecycle(self.compose, svc)
        if life.one_shot:
            self.note(svc, f"a one-shot job ({life.why}); skipped")
            return []
        prof = PROFILES.get(name)
        kind = prof.kind if prof else name
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
        builder = builders.get(kind or "")
        if builder is None:
            label = prof.label if prof else name
            self.note(svc, f"{label} has no stackprobe kind; skipped")
            return []
        found = []
        entry = builder(svc)
        if entry is not None:
            found.append((self.names[svc.name], entry))
        if name == "grafana-lgtm":  # its OTLP receivers are a collector of their own
            otlp = self.endpoints(
                svc, {"otlp_grpc": (4317, "{}"), "otlp_http": (4318, "http://{}")}
            )
            if otlp:
                found.append(
                    (f"{self.names[svc.name]}-otlp", {"kind": "otel-collector", "endpoints": otlp})
                )
        return found


def _with_password(url: HostURL) -> str:
    if url.password is None:
        return url.url
    parts = urlsplit(url.url)
    return urlunsplit(parts._replace(netloc=f"{url.username or ''}:{url.password}@{parts.netloc}"))


# --- links: which service plays a role for another ------------------------------------------


class _Mentions:
    """How strongly one Compose service names another: 3 host:port or URL, 2 the name, 1
    depends_on; read from environment, command and mounted config files."""

    def __init__(self, compose: ComposeFile) -> None:
        self.compose = compose
        self._texts: dict[str, str] = {}

    def text(self, svc: Service) -> str:
        if svc.name not in self._texts:
            parts = [v for v in svc.environment.values() if v]
            parts.append(" ".join(words(svc)))
            for mount in svc.volumes:
                if mount.type == "bind" and mount.source:
                    parts += _read_mounted(
                        svc,
                        mount.target,
                        host_path(self.compose.base_dir, mount.source),
                        self.compose.base_dir,
                    )
            self._texts[svc.name] = "\n".join(parts)
        return self._texts[svc.name]

    def score(self, a: Service, b: Service) -> int:
        text = self.text(a)
        best = 1 if b.name in a.depends_on else 0
        for name in (b.name, *b.aliases):
            escaped = re.escape(name)
            if re.search(rf"(?<![\w.-]){escaped}:\d{{2,5}}\b|://{escaped}\b", text):
                return 3
            if re.search(rf"(?<![\w.-]){escaped}(?![\w.-])", text):
                best = max(best, 2)
        return best


def _read_mounted(svc: Service, target: str, host: Path, base: Path) -> list[str]:
    if host.is_dir():
        try:
            files = sorted(p for p in host.iterdir() if p.is_file())[:MAX_MENTION_FILES]
        except OSError:
            return []
        return [
            t for p in files if (t := mounted_file(svc, f"{target.rstrip('/')}/{p.name}", base))
        ]
    text = mounted_file(svc, target, base)
    return [text] if text else []


def _links(d: _Discoverer, services: dict[str, Entry], origin: dict[str, Service]) -> None:
    """Set `links.<role>` where a role has several candidates, from the Compose file."""
    kinds = known_kinds()
    mentions = _Mentions(d.compose)
    for name, entry in services.items():
        kind = kinds.get(entry["kind"])
        if kind is None:
            continue
        for role, wanted in kind.links.items():
            targets = (wanted,) if isinstance(wanted, str) else wanted
            candidates = [n for n, e in services.items() if e["kind"] in targets and n != name]
            if len(candidates) < 2:
                continue
            me = origin[name]
            scores = {
                c: max(mentions.score(me, origin[c]), mentions.score(origin[c], me))
                if origin[c] is not me
                else 0
                for c in candidates
            }
            best = max(scores.values())
            top = [c for c in candidates if scores[c] == best]
            entry.setdefault("links", {})[role] = top[0]
            label = " or ".join(targets)
            if best == 0 or len(top) > 1:
                why = (
                    "nothing in the Compose file tells them apart"
                    if best == 0
                    else (f"{', '.join(top)} are named alike")
                )
                d.notes.append(
                    f"{me.name}: links.{role}: several {label} services ({', '.join(candidates)}); "
                    f"picked {top[0]} ({why}): change it in the stack file if another is meant"
                )


def _drop_cycles(services: dict[str, Entry], notes: list[str]) -> None:
    """Compose refuses a depends_on cycle; a stack file must not carry one either."""
    while cycle := cycle_in({n: e.get("depends_on", []) for n, e in services.items()}):
        node, dep = cycle[-2], cycle[-1]
        services[node]["depends_on"].remove(dep)
        if not services[node]["depends_on"]:
            del services[node]["depends_on"]
        notes.append(f"{node}: depends_on {dep} dropped: depends_on forms a cycle")


def discover(compose: ComposeFile, compose_path: Path, out_dir: Path) -> Discovery:
    """The stack (as a dict ready for YAML) for a parsed Compose file."""
    d = _Discoverer(compose)
    services: dict[str, Entry] = {}
    origin: dict[str, Service] = {}
    for svc in compose.services.values():
        for name, entry in d.entries(svc):
            services[name] = entry
            origin[name] = svc
    for name, entry in services.items():
        svc = origin[name]
        deps = [d.names[dep] for dep in svc.depends_on if d.names.get(dep) in services]
        if deps and d.names[svc.name] == name:
            entry["depends_on"] = deps
    _drop_cycles(services, d.notes)
    _links(d, services, origin)
    compose_name = "compose"
    try:
        url = os.path.relpath(compose_path.resolve(), out_dir)
    except ValueError:  # another drive
        url = str(compose_path.resolve())
    services[compose_name] = {"kind": "compose", "url": url}
    stack = {"version": 1, "stack": compose.project, "services": services}
    return Discovery(stack=stack, notes=[*compose.unset_required, *d.notes])


def render_stack(stack: dict[str, Any], compose_path: Path) -> str:
    header = (
        f"# stackprobe stack file discovered from {compose_path} (stackprobe discover).\n"
        "# Credentials are ${VAR} references: export those variables before `stackprobe run`.\n"
        "# Review it, then: stackprobe config check -c <this file>\n"
    )
    return header + yaml.safe_dump(stack, sort_keys=False, default_flow_style=False)
