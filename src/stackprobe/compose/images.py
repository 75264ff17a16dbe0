"""What stackprobe knows about the images of the stacks it checks.

For each known image: the stackprobe kind it runs, where it keeps its data, which container
ports are administrative APIs (no authentication by default, or full control once logged in),
its main API port, and which tools a healthcheck can use inside it. The tool facts come from
the images' own Dockerfiles: Tempo (distroless) and the collector and Toxiproxy (scratch) ship
no shell at all, only their binaries; Prometheus, ArangoDB and Grafana are busybox/Alpine
based (wget, no curl in Prometheus and ArangoDB); the Consul image adds curl.

A service can name its kind itself (`x-stackprobe: {kind: redis}`) when its image is custom.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackprobe.compose.model import Service

STATEFUL_KINDS = ("redis", "consul", "arangodb", "tempo", "prometheus", "grafana")


@dataclass(frozen=True)
class ImageProfile:
    label: str  # what the image is, for messages
    kind: str | None  # the stackprobe kind, None when there is none (toxiproxy)
    data_dirs: tuple[str, ...] = ()
    admin_ports: tuple[int, ...] = ()
    main_port: int | None = None
    shell: bool | None = None  # None: not known
    tools: frozenset[str] = frozenset()  # known to be present
    absent: frozenset[str] = frozenset()  # known to be missing
    only_tools: bool = False  # `tools` is everything the image contains (scratch/distroless)
    healthcheck_hint: str = ""


_BUSYBOX = frozenset({"sh", "wget", "nc"})
PROFILES: dict[str, ImageProfile] = {
    "consul": ImageProfile(
        "Consul", "consul", ("/consul/data",), (8500, 8501), 8500, True,
        frozenset({"sh", "curl", "wget", "consul", "jq"}),
        healthcheck_hint='test: ["CMD", "consul", "members"] (or curl -fs http://127.0.0.1:8500/v1/status/leader)',
    ),
    "redis": ImageProfile(
        "Redis", "redis", ("/data",), (6379,), 6379, True,
        frozenset({"sh", "redis-cli"}),
        healthcheck_hint='test: ["CMD-SHELL", "redis-cli ping | grep -q PONG"]',
    ),
    "arangodb": ImageProfile(
        "ArangoDB", "arangodb", ("/var/lib/arangodb3",), (8529,), 8529, True,
        _BUSYBOX | {"arangosh"}, frozenset({"curl"}),
        healthcheck_hint='test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8529/_admin/server/availability"]',
    ),
    "tempo": ImageProfile(
        "Grafana Tempo (distroless)", "tempo", ("/var/tempo",), (3200, 9095), 3200, False,
        frozenset({"/tempo"}), only_tools=True,
        healthcheck_hint='x-stackprobe: {healthcheck: external, reason: "distroless image: no shell or HTTP client"} (dependents wait with service_started)',
    ),
    "jaeger": ImageProfile(
        "Jaeger", "jaeger", (), (16686, 13133, 14269, 8888), 16686, None,
        healthcheck_hint="a CMD healthcheck using a tool the image contains, or x-stackprobe: {healthcheck: external, reason: ...}",
    ),
    "otel-collector": ImageProfile(
        "OpenTelemetry Collector (scratch)", "otel-collector", (), (13133, 55679, 8888, 1777), None, False,
        frozenset({"/otelcol", "/otelcol-contrib", "/otelcol-k8s"}), only_tools=True,
        healthcheck_hint='x-stackprobe: {healthcheck: external, reason: "scratch image: no shell or HTTP client"} (dependents wait with service_started)',
    ),
    "prometheus": ImageProfile(
        "Prometheus", "prometheus", ("/prometheus",), (9090,), 9090, True,
        _BUSYBOX | {"promtool", "prometheus"}, frozenset({"curl"}),
        healthcheck_hint='test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]',
    ),
    "grafana": ImageProfile(
        "Grafana", "grafana", ("/var/lib/grafana",), (3000,), 3000, True,
        _BUSYBOX | {"grafana", "grafana-cli"},
        healthcheck_hint='test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3000/api/health"]',
    ),
    "toxiproxy": ImageProfile(
        "Toxiproxy (scratch)", None, (), (8474,), 8474, False,
        frozenset({"/toxiproxy", "/toxiproxy-cli"}), only_tools=True,
        healthcheck_hint='test: ["CMD", "/toxiproxy-cli", "list"]',
    ),
    "celery": ImageProfile(
        "Celery worker", "celery", (), (), None, None,
        healthcheck_hint='test: ["CMD-SHELL", "celery -b $$BROKER_URL inspect ping -d celery@$$HOSTNAME"]',
    ),
}  # fmt: skip

# image repository (registry host and tag removed) -> profile
_REPOS = {
    "consul": "consul",
    "hashicorp/consul": "consul",
    "redis": "redis",
    "redis/redis-stack-server": "redis",
    "bitnami/redis": "redis",
    "valkey/valkey": "redis",
    "bitnami/valkey": "redis",
    "arangodb": "arangodb",
    "arangodb/arangodb": "arangodb",
    "arangodb/enterprise": "arangodb",
    "grafana/tempo": "tempo",
    "jaegertracing/jaeger": "jaeger",
    "jaegertracing/all-in-one": "jaeger",
    "otel/opentelemetry-collector": "otel-collector",
    "otel/opentelemetry-collector-contrib": "otel-collector",
    "otel/opentelemetry-collector-k8s": "otel-collector",
    "prom/prometheus": "prometheus",
    "prometheus/prometheus": "prometheus",
    "bitnami/prometheus": "prometheus",
    "grafana/grafana": "grafana",
    "grafana/grafana-oss": "grafana",
    "grafana/grafana-enterprise": "grafana",
    "shopify/toxiproxy": "toxiproxy",
}
_COLLECTOR_RELEASES = re.compile(r"open-telemetry/opentelemetry-collector-releases/")
_CELERY_WORKER = re.compile(r"\bcelery\b.*\bworker\b")


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(repository without registry host, tag, digest) of an image reference."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # a registry host
    if parts[0] == "library" and len(parts) == 2:
        parts = parts[1:]
    return "/".join(parts).lower(), tag, digest or None


def profile_name(service: Service) -> str | None:
    """Which known image a service runs: x-stackprobe.kind, then the image, then the command."""
    declared = service.x_stackprobe.get("kind")
    if isinstance(declared, str):
        return declared
    if service.image:
        repo, _, _ = split_image(service.image)
        if repo in _REPOS:
            return _REPOS[repo]
        if _COLLECTOR_RELEASES.search(service.image.lower()):
            return "otel-collector"
        if "celery" in repo.rsplit("/", 1)[-1]:
            return "celery"
    if _CELERY_WORKER.search(service.command_line()):
        return "celery"
    return None


def profile(service: Service) -> ImageProfile | None:
    name = profile_name(service)
    return PROFILES.get(name) if name else None


def kind_of(service: Service) -> str | None:
    """The stackprobe kind a service runs, or None."""
    name = profile_name(service)
    if name is None:
        return None
    known = PROFILES.get(name)
    return known.kind if known else name
