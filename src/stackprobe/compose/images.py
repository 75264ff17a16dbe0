"""What stackprobe knows about the images of the stacks it checks.

For each known image: the stackprobe kind it runs, where it keeps its data, which container
ports are administrative APIs (no authentication by default, or full control once logged in),
its main API port, and which tools a healthcheck can use inside it. The tool facts come from
the images' own Dockerfiles: Tempo (distroless) and the collector and Toxiproxy (scratch) ship
no shell at all, only their binaries; Prometheus, ArangoDB and Grafana are busybox/Alpine
based (wget, no curl in Prometheus and ArangoDB); the Consul image adds curl.

A service can name its kind itself (`x-stackprobe: {kind: redis}`) when its image is custom.

Where a server keeps its data and where it listens also depend on how it is started: the
server's own flags and variables move the data directory (`--storage.tsdb.path`,
`GF_PATHS_DATA`, `redis-server --dir`, `consul -data-dir`, a mounted `redis.conf`), turn
persistence off (`redis-server --save "" --appendonly no`; a `consul agent -dev`), or run a
stateless role (Tempo `-target=distributor|querier|query-frontend`); `data_dirs()` and
`listeners()` read them.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from stackprobe.compose.model import Service, host_path

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
    workdir: str | None = None  # the image's WORKDIR: relative data paths start there


_BUSYBOX = frozenset({"sh", "wget", "nc"})
_REDIS_HINT = 'test: ["CMD-SHELL", "redis-cli ping | grep -q PONG"]'
_GRAFANA_HINT = 'test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3000/api/health"]'
_PROMETHEUS_HINT = 'test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]'
_CONSUL_HINT = (
    'test: ["CMD", "consul", "members"] (or curl -fs http://127.0.0.1:8500/v1/status/leader)'
)
PROFILES: dict[str, ImageProfile] = {
    "consul": ImageProfile(
        "Consul", "consul", ("/consul/data",), (8500, 8501), 8500, True,
        frozenset({"sh", "curl", "wget", "consul", "jq"}), healthcheck_hint=_CONSUL_HINT,
    ),
    "consul-bitnami": ImageProfile(
        "Consul (Bitnami)", "consul", ("/bitnami/consul",), (8500, 8501), 8500, True,
        frozenset({"sh", "consul"}), healthcheck_hint=_CONSUL_HINT,
    ),
    "redis": ImageProfile(
        "Redis", "redis", ("/data",), (6379,), 6379, True,
        frozenset({"sh", "redis-cli"}), healthcheck_hint=_REDIS_HINT, workdir="/data",
    ),
    "redis-bitnami": ImageProfile(
        "Redis (Bitnami)", "redis", ("/bitnami/redis/data",), (6379,), 6379, True,
        frozenset({"sh", "redis-cli"}), healthcheck_hint=_REDIS_HINT,
    ),
    "redis-stack": ImageProfile(
        "Redis Stack", "redis", ("/data",), (6379, 8001), 6379, True,
        frozenset({"sh", "redis-cli"}), healthcheck_hint=_REDIS_HINT,
    ),
    "valkey": ImageProfile(
        "Valkey", "redis", ("/data",), (6379,), 6379, True,
        frozenset({"sh", "valkey-cli"}),
        healthcheck_hint='test: ["CMD-SHELL", "valkey-cli ping | grep -q PONG"]',
    ),
    "valkey-bitnami": ImageProfile(
        "Valkey (Bitnami)", "redis", ("/bitnami/valkey/data",), (6379,), 6379, True,
        frozenset({"sh", "valkey-cli"}),
        healthcheck_hint='test: ["CMD-SHELL", "valkey-cli ping | grep -q PONG"]',
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
        _BUSYBOX | {"promtool", "prometheus"}, frozenset({"curl"}), healthcheck_hint=_PROMETHEUS_HINT,
        workdir="/prometheus",
    ),
    "prometheus-bitnami": ImageProfile(
        "Prometheus (Bitnami)", "prometheus", ("/opt/bitnami/prometheus/data",), (9090,), 9090, True,
        frozenset({"sh", "promtool", "prometheus"}), healthcheck_hint=_PROMETHEUS_HINT,
        workdir="/opt/bitnami/prometheus",
    ),
    "grafana": ImageProfile(
        "Grafana", "grafana", ("/var/lib/grafana",), (3000,), 3000, True,
        _BUSYBOX | {"grafana", "grafana-cli"}, healthcheck_hint=_GRAFANA_HINT,
    ),
    "grafana-bitnami": ImageProfile(
        "Grafana (Bitnami)", "grafana", ("/opt/bitnami/grafana/data",), (3000,), 3000, True,
        frozenset({"sh", "grafana", "grafana-cli"}), healthcheck_hint=_GRAFANA_HINT,
    ),
    # grafana/otel-lgtm: Grafana with a collector, Prometheus, Tempo and Loki in one container,
    # made for development and demos (its data is thrown away by design): Grafana for lint and
    # discover, plus its OTLP receivers as a collector in discover.
    "grafana-lgtm": ImageProfile(
        "Grafana LGTM (all-in-one development image)", "grafana", (), (3000, 9090, 3100, 3200), 3000, True,
        frozenset({"sh", "curl"}),
        healthcheck_hint='test: ["CMD", "curl", "-fs", "http://127.0.0.1:3000/api/health"]',
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

# image repository (registry host and tag removed) -> profile; a repository under another
# namespace or mirror is matched by its last parts (`registry.local:5000/team/redis` → redis,
# `public.ecr.aws/bitnami/redis` → bitnami/redis)
_REPOS = {
    "consul": "consul",
    "hashicorp/consul": "consul",
    "bitnami/consul": "consul-bitnami",
    "redis": "redis",
    "redis/redis-stack": "redis-stack",
    "redis/redis-stack-server": "redis",
    "redislabs/redismod": "redis",
    "redislabs/redisearch": "redis",
    "redislabs/rejson": "redis",
    "bitnami/redis": "redis-bitnami",
    "valkey": "valkey",
    "valkey/valkey": "valkey",
    "valkey-io/valkey": "valkey",
    "bitnami/valkey": "valkey-bitnami",
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
    "prometheus": "prometheus",
    "bitnami/prometheus": "prometheus-bitnami",
    "grafana/grafana": "grafana",
    "grafana/grafana-oss": "grafana",
    "grafana/grafana-enterprise": "grafana",
    "grafana": "grafana",
    "bitnami/grafana": "grafana-bitnami",
    "grafana/otel-lgtm": "grafana-lgtm",
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
        parts = [p for p in repo.split("/") if p]
        for start in range(len(parts)):
            known = _REPOS.get("/".join(parts[start:]))
            if known is not None:
                return known
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


# --- how the server is started --------------------------------------------------------------

STATELESS_TEMPO_TARGETS = frozenset({"distributor", "querier", "query-frontend"})
_EXTRA_ARGS = ("REDIS_ARGS", "REDIS_EXTRA_FLAGS", "VALKEY_EXTRA_FLAGS")  # redis-stack, Bitnami
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "/bin/sh", "/bin/bash", "/bin/ash"})
MAX_CONFIG_BYTES = 256 * 1024


def split_words(value: str | tuple[str, ...] | None) -> list[str]:
    """A command as words (shell-split when written as one string)."""
    if value is None:
        return []
    if not isinstance(value, str):
        return list(value)
    try:
        return shlex.split(value)
    except ValueError:  # an unbalanced quote: what the shell would fail on anyway
        return value.split()


def words(service: Service) -> list[str]:
    """Entrypoint and command words, with `sh -c SCRIPT` scripts and extra-args variables
    (REDIS_ARGS, REDIS_EXTRA_FLAGS, VALKEY_EXTRA_FLAGS) split in."""
    found = split_words(service.entrypoint) + split_words(service.command)
    expanded: list[str] = []
    for i, word in enumerate(found):
        expanded.append(word)
        if word == "-c" and i > 0 and found[i - 1] in _SHELLS and i + 1 < len(found):
            expanded += split_words(found[i + 1])
    for key in _EXTRA_ARGS:
        expanded += split_words(service.environment.get(key))
    return expanded


def flag(found: list[str], *names: str) -> str | None:
    """The value of the last `--name value` / `--name=value` among the words."""
    value = None
    for i, word in enumerate(found):
        for name in names:
            if word == name:
                nxt = found[i + 1] if i + 1 < len(found) else ""
                value = "" if nxt.startswith("-") and nxt != "-" else nxt
            elif word.startswith(name + "="):
                value = word[len(name) + 1 :]
    return value


def _absolute(path: str, workdir: str | None) -> str:
    joined = path if path.startswith("/") else posixpath.join(workdir or "/", path)
    return posixpath.normpath(joined)


def mounted_file(service: Service, container_path: str, base_dir: Path) -> str | None:
    """The text of a host file bind-mounted at container_path (or in a mounted directory)."""
    container_path = posixpath.normpath(container_path)
    for mount in service.volumes:
        if mount.type != "bind" or not mount.source:
            continue
        target = posixpath.normpath(mount.target)
        if container_path == target:
            host = host_path(base_dir, mount.source)
        elif container_path.startswith(target.rstrip("/") + "/"):
            host = host_path(base_dir, mount.source) / container_path[len(target) :].lstrip("/")
        else:
            continue
        try:
            if host.is_file() and host.stat().st_size <= MAX_CONFIG_BYTES:
                return host.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    return None


def redis_config(service: Service, found: list[str], base_dir: Path) -> dict[str, str]:
    """Settings of a mounted redis.conf named on the command line (`dir`, `save`, ...)."""
    conf = next((w for w in found if w.endswith(".conf") and not w.startswith("-")), None)
    text = mounted_file(service, conf, base_dir) if conf else None
    settings: dict[str, str] = {}
    for line in (text or "").splitlines():
        parts = [] if line.lstrip().startswith("#") else split_words(line)  # full-line comments
        if parts:
            settings[parts[0].lower()] = parts[1] if len(parts) > 1 else ""
    return settings


def _redis_persists(service: Service, name: str, found: list[str], conf: dict[str, str]) -> bool:
    save = flag(found, "--save")
    save = conf.get("save") if save is None else save
    appendonly = flag(found, "--appendonly") or conf.get("appendonly")
    if name.endswith("-bitnami"):  # Bitnami turns AOF on and keeps RDB snapshots by default
        env = service.environment
        aof = (appendonly or env.get("REDIS_AOF_ENABLED") or "yes").lower() == "yes"
        rdb = save != "" and (env.get("REDIS_RDB_POLICY_DISABLED") or "no").lower() != "yes"
        return aof or rdb
    return save != "" or (appendonly or "no").lower() == "yes"


def data_dirs(service: Service, base_dir: Path) -> tuple[str, ...]:
    """Where this service keeps data that must outlive its container; () when it keeps none
    (a pure cache, an in-memory dev agent, a stateless role, not a stateful image)."""
    name = profile_name(service)
    prof = PROFILES.get(name) if name else None
    if name is None or prof is None or prof.kind not in STATEFUL_KINDS:
        return ()
    found = words(service)
    workdir = service.working_dir or prof.workdir
    moved: str | None = None
    if prof.kind == "redis":
        conf = redis_config(service, found, base_dir)
        if not _redis_persists(service, name, found, conf):
            return ()
        moved = flag(found, "--dir") or conf.get("dir")
    elif prof.kind == "prometheus":
        if "--agent" in found:
            moved = flag(found, "--storage.agent.path") or "data-agent/"
        else:
            moved = flag(found, "--storage.tsdb.path")
            if moved is None and service.command is not None:
                moved = "data/"  # Prometheus's own default, once the image's CMD is replaced
    elif prof.kind == "grafana":
        moved = service.environment.get("GF_PATHS_DATA") or flag(found, "cfg:default.paths.data")
    elif prof.kind == "consul":
        dev_default = name == "consul" and service.command is None  # CMD: agent -dev
        if "-dev" in found or "--dev" in found or dev_default:
            return ()
        moved = flag(found, "-data-dir", "--data-dir")
    elif prof.kind == "tempo":
        if flag(found, "-target", "--target") in STATELESS_TEMPO_TARGETS:
            return ()
    elif prof.kind == "arangodb":
        moved = flag(found, "--database.directory")
    if moved:
        return (_absolute(moved, workdir),)
    return prof.data_dirs


@dataclass(frozen=True)
class Listener:
    """A port a server listens on inside its network namespace."""

    port: int
    address: str | None  # None: every interface
    admin: bool


def _split_address(text: str, default_port: int) -> tuple[str | None, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    address = None if host in ("", "0.0.0.0", "::", "*") else host  # noqa: S104 - reading a flag
    return address, int(port) if port.isdigit() else default_port


def listeners(service: Service, base_dir: Path) -> list[Listener] | None:
    """Where a known server listens, from its flags and variables; None when it is not known
    (an unknown image, or an address that only a config file stackprobe does not read sets)."""
    name = profile_name(service)
    prof = PROFILES.get(name) if name else None
    if prof is None or prof.main_port is None:
        return None
    found = words(service)
    env = service.environment
    port, address = prof.main_port, None
    if prof.kind == "redis":
        conf = redis_config(service, found, base_dir)
        port_text = flag(found, "--port") or conf.get("port") or ""
        port = int(port_text) if port_text.isdigit() else port
        bind = flag(found, "--bind") or conf.get("bind")
        address = _loopback_or_none(bind.split() if bind else [])
    elif prof.kind == "prometheus":
        listen = flag(found, "--web.listen-address")
        if listen:
            address, port = _split_address(listen, port)
    elif prof.kind == "grafana":
        port_text = env.get("GF_SERVER_HTTP_PORT") or ""
        port = int(port_text) if port_text.isdigit() else port
        address = _loopback_or_none([env.get("GF_SERVER_HTTP_ADDR") or ""])
    elif prof.kind == "consul":
        client = flag(found, "-client", "--client")
        if client is None:
            client = "0.0.0.0" if service.command is None else "127.0.0.1"  # noqa: S104
        address = _loopback_or_none(client.split())
        port_text = flag(found, "-http-port", "--http-port") or ""
        port = int(port_text) if port_text.isdigit() else port
    elif prof.kind == "arangodb":
        endpoint = flag(found, "--server.endpoint")
        if endpoint:
            address, port = _split_address(endpoint.split("://")[-1], port)
    elif name == "toxiproxy":
        host = flag(found, "-host", "--host")
        address = _loopback_or_none([host or "localhost"])
        port_text = flag(found, "-port", "--port") or ""
        port = int(port_text) if port_text.isdigit() else port
    else:
        return None  # Tempo, Jaeger, the collector: their addresses live in their config
    admin = prof.main_port in prof.admin_ports  # the main API, wherever its flags moved it
    found_listeners = [Listener(port, address, admin)]
    if prof.kind == "redis" or name == "grafana-lgtm":  # RedisInsight; LGTM's other servers
        extra = [p for p in prof.admin_ports if p not in (prof.main_port, port)]
        found_listeners += [Listener(p, address, True) for p in extra]
    return found_listeners


def _loopback_or_none(addresses: list[str]) -> str | None:
    """The address when every one given is a loopback address; None (all interfaces) else."""
    cleaned = [a.strip().lstrip("-") for a in addresses if a.strip()]
    if cleaned and all(
        a in ("127.0.0.1", "::1", "localhost") or a.startswith("127.") for a in cleaned
    ):
        return cleaned[0]
    return None


def main_port(service: Service, base_dir: Path) -> int | None:
    """The container port of the service's main API, after its own flags."""
    found = listeners(service, base_dir)
    if found:
        return found[0].port
    prof = profile(service)
    return prof.main_port if prof else None
