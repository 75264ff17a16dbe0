"""A Compose file as typed data: both the short and the long syntax of every key lint reads.

Reading follows Compose: YAML 1.2 with merge keys (`loader.py`), `include` and `extends`
resolved (`resolve.py`), and Compose's interpolation (`env.py`) from the shell environment,
which wins over the `.env` in the project directory (an unset variable becomes empty, as
Compose does after its warning). Environment values are also kept as written
(`environment_raw`), so lint and discover can tell a `${VAR}` reference from a literal
secret; variables from `env_file` join `environment` (explicit entries win).

A file Compose itself would refuse (bad YAML, an unknown service key, a port that is not a
port, a duration that is not a duration, a missing include) raises `ComposeError`: one line
naming the file and the key, exit 2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackprobe.compose.env import interpolate, is_reference, references
from stackprobe.compose.resolve import (
    ComposeError,
    Project,
    RawService,
    dotenv_file,
    load_project,
    required,
    unknown,
)

__all__ = [
    "ComposeError",
    "ComposeFile",
    "Service",
    "interpolate",
    "is_reference",
    "load_compose",
    "references",
]

CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
PROTOCOLS = ("tcp", "udp", "sctp")
MOUNT_TYPES = ("volume", "bind", "tmpfs", "npipe", "cluster", "image")

SERVICE_KEYS = frozenset(
    """annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
    container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime
    cpu_shares cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices
    dns dns_opt dns_search domainname driver_opts entrypoint env_file environment expose extends
    external_links extra_hosts gpus group_add healthcheck hostname image init ipc isolation
    label_file labels links logging mac_address mem_limit mem_reservation mem_swappiness
    memswap_limit models network_mode networks oom_kill_disable oom_score_adj pid pids_limit
    platform ports post_start pre_stop privileged profiles provider pull_policy
    pull_refresh_after read_only restart runtime scale secrets security_opt shm_size stdin_open
    stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits use_api_socket user
    userns_mode uts volumes volumes_from working_dir""".split()  # noqa: SIM905 - a word list reads best
)
HEALTHCHECK_KEYS = frozenset(
    {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
)
X_STACKPROBE_KEYS = frozenset({"healthcheck", "reason", "ignore", "kind"})

_TRUE = frozenset({"true", "yes", "y", "on"})
_FALSE = frozenset({"false", "no", "n", "off"})
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Port:
    """One published or exposed port mapping."""

    target: tuple[int, int]  # container port range (first, last)
    published: tuple[int, int] | None  # host port range; None = an ephemeral port
    host_ip: str | None  # None = all interfaces
    protocol: str
    index: int

    @property
    def all_interfaces(self) -> bool:
        return self.host_ip in (None, "", "0.0.0.0", "::", "[::]")  # noqa: S104 - we detect it, not bind

    def pairs(self) -> list[tuple[int, int | None]]:
        """(container port, host port) for each port of the range."""
        targets = range(self.target[0], self.target[1] + 1)
        if self.published is None:
            return [(t, None) for t in targets]
        hosts = list(range(self.published[0], self.published[1] + 1))
        if len(hosts) == 1:
            return [(t, hosts[0]) for t in targets]
        return list(zip(targets, hosts, strict=False))

    def host_port(self, container_port: int) -> int | None:
        return next((h for t, h in self.pairs() if t == container_port), None)


@dataclass(frozen=True)
class Mount:
    """One entry of a service's `volumes:`."""

    type: str  # volume, bind, tmpfs, ...
    source: str | None  # volume name or host path; None = an anonymous volume
    target: str
    read_only: bool
    index: int


@dataclass(frozen=True)
class Dependency:
    service: str
    condition: str = "service_started"
    required: bool = True
    restart: bool = False


@dataclass(frozen=True)
class Healthcheck:
    """A service's healthcheck; `test` is argv-like, its first item CMD, CMD-SHELL or NONE."""

    test: tuple[str, ...] | None
    interval_s: float | None = None
    timeout_s: float | None = None
    retries: int | None = None
    start_period_s: float | None = None
    start_interval_s: float | None = None
    disable: bool = False

    @property
    def disabled(self) -> bool:
        return self.disable or (self.test is not None and self.test[0] == "NONE")

    @property
    def form(self) -> str | None:
        return self.test[0] if self.test else None

    @property
    def command(self) -> str:
        """The command as one line, for messages."""
        if not self.test:
            return ""
        return " ".join(self.test[1:])


@dataclass(frozen=True)
class EnvFile:
    """One entry of a service's `env_file:`."""

    path: str  # as written (after interpolation), relative to the project directory
    required: bool
    index: int


@dataclass
class Service:
    """One service of the Compose file, after interpolation, includes and extends."""

    name: str
    image: str | None = None
    build: str | None = None  # build context
    command: str | tuple[str, ...] | None = None
    entrypoint: str | tuple[str, ...] | None = None
    environment: dict[str, str | None] = field(default_factory=dict)
    environment_raw: dict[str, str | None] = field(default_factory=dict)
    env_files: list[EnvFile] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    expose: list[int] = field(default_factory=list)
    volumes: list[Mount] = field(default_factory=list)
    depends_on: dict[str, Dependency] = field(default_factory=dict)
    healthcheck: Healthcheck | None = None
    networks: list[str] | None = None  # None: joins `default` (unless network_mode)
    network_mode: str | None = None
    aliases: tuple[str, ...] = ()  # other names it answers to: container_name, hostname, ...
    working_dir: str | None = None
    privileged: bool = False
    restart: str | None = None
    profiles: tuple[str, ...] = ()
    x_stackprobe: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None  # the file that defines it (another one for an include)

    @property
    def joined_networks(self) -> list[str]:
        """The networks this service is attached to, `default` when none is named."""
        if self.network_mode is not None:
            return []
        return self.networks if self.networks is not None else ["default"]

    @property
    def host_network(self) -> bool:
        """`network_mode: host`: it listens on the host's interfaces; `ports:` are ignored."""
        return self.network_mode == "host"

    def command_line(self) -> str:
        parts = []
        for value in (self.entrypoint, self.command):
            if isinstance(value, str):
                parts.append(value)
            elif value:
                parts.append(" ".join(value))
        return " ".join(parts)


@dataclass
class ComposeFile:
    path: Path
    project: str
    services: dict[str, Service]
    volumes: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    env: Mapping[str, str] = field(default_factory=dict)  # the project's variables
    unset_required: list[str] = field(default_factory=list)  # `${VAR:?err}` Compose refuses

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_compose(path: Path, env: Mapping[str, str] | None = None) -> ComposeFile:
    """Load and parse a Compose file; raise ComposeError on anything Compose would refuse.

    `env` stands for the shell environment (default: os.environ); the `.env` in the
    file's directory fills in what it does not set.
    """
    return parse_project(load_project(path, env))


def parse_duration(value: Any, where: str) -> float:
    """A Compose duration (`1m30s`, `500ms`) in seconds."""
    text = str(value).strip() if isinstance(value, str) else None
    if text:
        pos, total = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match[1]) * _UNIT_S[match[2]]
            pos = match.end()
        else:
            if pos == len(text):
                return total
    raise ComposeError(f"{where}: {value!r} is not a duration (write it like 10s, 1m30s or 500ms)")


class _Parser:
    def __init__(
        self, path: Path, env: Mapping[str, str], missing: list[str] | None = None
    ) -> None:
        self.path = path
        self.env = env
        self.missing = required([] if missing is None else missing, path)

    def fail(self, where: str, what: str) -> ComposeError:
        return ComposeError(f"{self.path}: {where}: {what}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return {str(k): v for k, v in value.items()}

    def strings(self, value: Any, where: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            raise self.fail(where, "expected a list of strings")
        return [str(v) for v in value]


def parse_project(project: Project) -> ComposeFile:
    path, env = project.path, project.env
    p = _Parser(path, env)
    if not project.services:
        raise p.fail("services", "no services defined")
    name = project.name
    project_name = (
        str(name) if name else env.get("COMPOSE_PROJECT_NAME") or path.resolve().parent.name
    )
    project_name = re.sub(r"[^a-z0-9_-]", "", project_name.lower()) or "default"
    volumes = {k: p.mapping(v, f"volumes.{k}") for k, v in project.volumes.items()}
    networks = {k: p.mapping(v, f"networks.{k}") for k, v in project.networks.items()}
    services = {
        svc_name: _service(
            _Parser(raw.source.file, raw.source.env, project.missing), svc_name, raw, path.parent
        )
        for svc_name, raw in project.services.items()
    }
    return ComposeFile(path, project_name, services, volumes, networks, env, project.missing)


def _service(p: _Parser, name: str, raw_service: RawService, project_dir: Path) -> Service:
    where = f"services.{name}"
    data = raw_service.body
    for key in data:
        if key.startswith("x-"):
            continue
        if key not in SERVICE_KEYS:
            raise p.fail(f"{where}.{key}", unknown(key, SERVICE_KEYS, "service key"))
    env_raw = _environment(p, data.get("environment"), f"{where}.environment")
    image = data.get("image")
    build = data.get("build")
    if image is None and build is None:
        raise p.fail(where, "neither `image` nor `build` is set")
    if image is not None and not isinstance(image, str):
        raise p.fail(f"{where}.image", "expected a string")
    if isinstance(build, dict):
        build = build.get("context", ".")
    env_files = _env_files(p, data.get("env_file"), f"{where}.env_file")
    environment: dict[str, str | None] = {}
    for env_file in env_files:
        environment.update(dotenv_file(host_path(project_dir, env_file.path), p.env) or {})
    environment.update(
        {
            k: (interpolate(v, p.env, p.missing) if v is not None else p.env.get(k))
            for k, v in env_raw.items()
        }
    )
    networks_raw = data.get("networks")
    aliases = [str(data[k]) for k in ("container_name", "hostname") if data.get(k)]
    if isinstance(networks_raw, dict):
        for net in networks_raw.values():
            if isinstance(net, dict):
                aliases += p.strings(net.get("aliases"), f"{where}.networks.aliases")
    svc = Service(
        name=name,
        image=image,
        build=str(build) if build is not None else None,
        command=_command(p, data.get("command"), f"{where}.command"),
        entrypoint=_command(p, data.get("entrypoint"), f"{where}.entrypoint"),
        environment=environment,
        environment_raw=env_raw,
        env_files=env_files,
        ports=[_port(p, v, f"{where}.ports[{i}]", i) for i, v in enumerate(_list(p, data.get("ports"), f"{where}.ports"))],
        expose=[_expose(p, v, f"{where}.expose[{i}]") for i, v in enumerate(_list(p, data.get("expose"), f"{where}.expose"))],
        volumes=[_mount(p, v, f"{where}.volumes[{i}]", i) for i, v in enumerate(_list(p, data.get("volumes"), f"{where}.volumes"))],
        depends_on=_depends_on(p, data.get("depends_on"), f"{where}.depends_on"),
        healthcheck=_healthcheck(p, data.get("healthcheck"), f"{where}.healthcheck"),
        networks=_networks(p, networks_raw, f"{where}.networks"),
        network_mode=str(data["network_mode"]) if data.get("network_mode") else None,
        aliases=tuple(aliases),
        working_dir=str(data["working_dir"]) if data.get("working_dir") else None,
        privileged=_bool(p, data.get("privileged", False), f"{where}.privileged"),
        restart=_restart(data.get("restart")),
        profiles=tuple(p.strings(data.get("profiles"), f"{where}.profiles")),
        x_stackprobe=_x_stackprobe(p, data.get("x-stackprobe"), f"{where}.x-stackprobe"),
        file=raw_service.source.file,
    )  # fmt: skip
    return svc


def host_path(base: Path, source: str) -> Path:
    """A path from the Compose file on the host: `~` expanded, relative to `base`."""
    path = Path(source).expanduser()
    return path if path.is_absolute() else base / path


def _list(p: _Parser, value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise p.fail(where, f"expected a list, got {type(value).__name__}")
    return value


def _restart(value: Any) -> str | None:
    if value is None:
        return None
    if value is False:
        return "no"
    return str(value)


def _env_files(p: _Parser, value: Any, where: str) -> list[EnvFile]:
    """`env_file: path`, `[path, ...]` or `[{path, required, format}, ...]`."""
    items = value if isinstance(value, list) else ([] if value is None else [value])
    found = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            found.append(EnvFile(item, True, i))
        elif isinstance(item, dict) and isinstance(item.get("path"), str):
            required = _bool(p, item.get("required", True), f"{where}[{i}].required")
            found.append(EnvFile(item["path"], required, i))
        else:
            raise p.fail(f"{where}[{i}]", "expected a path or {path: ..., required: ...}")
    return found


def _bool(p: _Parser, value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE  # Compose's casts accept yes/no, on/off, y/n
    raise p.fail(where, f"expected true or false, got {value!r}")


def _command(p: _Parser, value: Any, where: str) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    raise p.fail(where, "expected a string or a list of strings")


def _environment(p: _Parser, value: Any, where: str) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    if value is None:
        return env
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, dict | list):
                raise p.fail(f"{where}.{key}", "expected a string, number or boolean")
            env[str(key)] = (
                None if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
            )
        return env
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise p.fail(f"{where}[{i}]", f"expected KEY=VALUE, got {item!r}")
            key, sep, v = item.partition("=")
            if not key:
                raise p.fail(f"{where}[{i}]", f"expected KEY=VALUE, got {item!r}")
            env[key] = v if sep else None
        return env
    raise p.fail(where, "expected a mapping or a list of KEY=VALUE")


def _port_number(p: _Parser, text: str, where: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last) if sep else int(first)
    except ValueError:
        raise p.fail(where, f"{text!r} is not a port or a port range") from None
    if not (0 <= lo <= hi <= 65535):
        raise p.fail(where, f"{text!r} is out of the port range 0-65535")
    return lo, hi


def _port(p: _Parser, value: Any, where: str, index: int) -> Port:
    if isinstance(value, int) and not isinstance(value, bool):
        return Port((value, value), None, None, "tcp", index)
    if isinstance(value, dict):
        return _long_port(p, value, where, index)
    if not isinstance(value, str):
        raise p.fail(where, f"expected a port mapping like 127.0.0.1:8080:80, got {value!r}")
    text, _, protocol = value.strip().partition("/")
    protocol = protocol or "tcp"
    if protocol not in PROTOCOLS:
        raise p.fail(where, f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    host_ip: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise p.fail(where, f"{value!r} is not a port mapping ([ip]:published:target)")
        host_ip, text = text[1:end], text[end + 2 :]
        parts = text.split(":")
        if len(parts) != 2:
            raise p.fail(where, f"{value!r} is not a port mapping ([ip]:published:target)")
        published, target = parts
    else:
        parts = text.split(":")
        if len(parts) == 1:
            published, target = "", parts[0]
        elif len(parts) == 2:
            published, target = parts
        else:
            host_ip, published, target = ":".join(parts[:-2]), parts[-2], parts[-1]
    if not target:
        raise p.fail(where, f"{value!r} has no container port")
    pub = _port_number(p, published, where) if published else None
    return Port(_port_number(p, target, where), pub, host_ip or None, protocol, index)


def _long_port(p: _Parser, value: dict[str, Any], where: str, index: int) -> Port:
    if "target" not in value:
        raise p.fail(where, "long syntax needs `target`")
    target = _port_number(p, str(value["target"]), f"{where}.target")
    published = value.get("published")
    protocol = str(value.get("protocol", "tcp"))
    if protocol not in PROTOCOLS:
        raise p.fail(f"{where}.protocol", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
    pub = None
    if published not in (None, ""):
        pub = _port_number(p, str(published), f"{where}.published")
    host_ip = value.get("host_ip")
    return Port(target, pub, str(host_ip) if host_ip else None, protocol, index)


def _expose(p: _Parser, value: Any, where: str) -> int:
    text = str(value).partition("/")[0]
    return _port_number(p, text, where)[0]


def _mount(p: _Parser, value: Any, where: str, index: int) -> Mount:
    if isinstance(value, dict):
        kind = str(value.get("type", "volume"))
        if kind not in MOUNT_TYPES:
            raise p.fail(f"{where}.type", f"{kind!r} is not one of {', '.join(MOUNT_TYPES)}")
        target = value.get("target")
        if not target:
            raise p.fail(where, "long syntax needs `target`")
        source = value.get("source")
        read_only = _bool(p, value.get("read_only", False), f"{where}.read_only")
        return Mount(kind, str(source) if source else None, str(target), read_only, index)
    if not isinstance(value, str) or not value:
        raise p.fail(where, f"expected SOURCE:TARGET[:MODE] or a mapping, got {value!r}")
    parts = value.split(":")
    if len(parts) == 1:
        return Mount("volume", None, parts[0], False, index)
    if len(parts) > 3:
        raise p.fail(where, f"{value!r} is not SOURCE:TARGET[:MODE]")
    source, target = parts[0], parts[1]
    modes = parts[2].split(",") if len(parts) == 3 else []
    if not target.startswith("/"):
        raise p.fail(where, f"container path {target!r} must be absolute")
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    return Mount(kind, source, target, "ro" in modes, index)


def _depends_on(p: _Parser, value: Any, where: str) -> dict[str, Dependency]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(v): Dependency(str(v)) for v in p.strings(value, where)}
    deps = {}
    for name, spec in p.mapping(value, where).items():
        body = p.mapping(spec, f"{where}.{name}")
        condition = str(body.get("condition", "service_started"))
        if condition not in CONDITIONS:
            raise p.fail(
                f"{where}.{name}.condition",
                f"{condition!r} is not one of {', '.join(CONDITIONS)}",
            )
        deps[name] = Dependency(
            name,
            condition,
            _bool(p, body.get("required", True), f"{where}.{name}.required"),
            _bool(p, body.get("restart", False), f"{where}.{name}.restart"),
        )
    return deps


def _healthcheck(p: _Parser, value: Any, where: str) -> Healthcheck | None:
    if value is None:
        return None
    body = p.mapping(value, where)
    for key in body:
        if key not in HEALTHCHECK_KEYS:
            raise p.fail(f"{where}.{key}", unknown(key, HEALTHCHECK_KEYS, "healthcheck key"))
    test = body.get("test")
    parsed: tuple[str, ...] | None
    if test is None:
        parsed = None
    elif isinstance(test, str):
        parsed = ("CMD-SHELL", test)
    elif isinstance(test, list) and test and all(isinstance(t, str) for t in test):
        if test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise p.fail(
                f"{where}.test",
                f"a list must start with CMD, CMD-SHELL or NONE, got {test[0]!r}",
            )
        if test[0] != "NONE" and len(test) < 2:
            raise p.fail(f"{where}.test", f"{test[0]} needs a command")
        parsed = tuple(test)
    else:
        raise p.fail(f"{where}.test", "expected a string or a list like [CMD, ...]")

    def duration(key: str) -> float | None:
        return parse_duration(body[key], f"{p.path}: {where}.{key}") if key in body else None

    retries = body.get("retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)):
        raise p.fail(f"{where}.retries", f"expected a whole number, got {retries!r}")
    return Healthcheck(
        test=parsed,
        interval_s=duration("interval"),
        timeout_s=duration("timeout"),
        retries=retries,
        start_period_s=duration("start_period"),
        start_interval_s=duration("start_interval"),
        disable=_bool(p, body.get("disable", False), f"{where}.disable"),
    )


def _networks(p: _Parser, value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return p.strings(value, where)
    return list(p.mapping(value, where))


def _x_stackprobe(p: _Parser, value: Any, where: str) -> dict[str, Any]:
    body = p.mapping(value, where)
    for key in body:
        if key not in X_STACKPROBE_KEYS:
            raise p.fail(f"{where}.{key}", unknown(key, X_STACKPROBE_KEYS, "x-stackprobe key"))
    if "healthcheck" in body and body["healthcheck"] != "external":
        raise p.fail(
            f"{where}.healthcheck",
            f"the only value is 'external' (stackprobe's own checks watch the service), got {body['healthcheck']!r}",
        )
    if "ignore" in body:
        body["ignore"] = p.strings(body["ignore"], f"{where}.ignore")
    if "kind" in body and not isinstance(body["kind"], str):
        raise p.fail(f"{where}.kind", "expected a stackprobe kind name")
    return body
