"""The stack file's shape: load it safely, interpolate `${VAR}`, validate its structure.

This module knows no kind: what each kind accepts (url schemes, endpoints, options,
expectations, links) is checked by `stackprobe.loader.load_stack`, which every front end
calls. Every problem reads `<file>: <field path>: <what is wrong>` so a person can fix all of
them in one pass (`stackprobe config check` prints them all and exits 2).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stackprobe.durations import DurationText, parse_duration
from stackprobe.errors import ConfigError
from stackprobe.redact import Redactor

MAX_FILE_BYTES = 1024 * 1024
MAX_ALIASES = 100
MAX_NODES = 100_000
SECRET_FIELDS = ("password", "token")
SECRET_FILE_FIELDS = {"password_file": "password", "token_file": "token"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class ToxiproxyRef(BaseModel):
    """The Toxiproxy proxy in front of a service: network faults go through it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api: str  # Toxiproxy's HTTP API, e.g. http://127.0.0.1:8474
    proxy: str  # the proxy's name


class LogsRef(BaseModel):
    """Where a service's log is read when one of its checks fails: a file (relative to the
    stack file) or a command whose output is the log (`journalctl -u redis -n 200`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str | None = None
    command: list[str] | None = None


class SloTargets(BaseModel):
    """What a service must do under load (`stackprobe load`): each bound is checked per
    `window` of the run and over the whole run; a breach in any window fails the verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p50_ms: float | None = Field(default=None, gt=0)
    p90_ms: float | None = Field(default=None, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)
    p999_ms: float | None = Field(default=None, gt=0)
    max_ms: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)  # errors / operations
    min_rate: float | None = Field(default=None, gt=0)  # completed operations per second
    window: DurationText | None = None  # default 10s; whole seconds

    @field_validator("window")
    @classmethod
    def _whole_seconds(cls, window: str | None) -> str | None:
        if window is not None:
            seconds = parse_duration(window)
            if seconds < 1 or seconds != int(seconds):
                raise ValueError(f"{window!r} must be a whole number of seconds, at least 1s")
        return window


class Slo(SloTargets):
    """`slo:` of a service: bounds for every workload, and per workload (`workloads:
    {get_set: {p99_ms: 2}}`), whose fields replace the service-wide ones."""

    workloads: dict[str, SloTargets] = Field(default_factory=dict)

    def for_workload(self, workload: str) -> SloTargets:
        """The bounds that apply to one workload: its own fields over the service-wide ones."""
        base = self.model_dump(exclude={"workloads"})
        own = self.workloads.get(workload)
        if own is not None:
            base.update(own.model_dump(exclude_none=True))
        return SloTargets.model_validate(base)


class ServiceConfig(BaseModel):
    """One service of the stack, as written in the stack file (after interpolation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    url: str | None = None
    endpoints: dict[str, str] = Field(default_factory=dict)
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    disruption: Literal["allowed", "forbidden"] = "forbidden"
    links: dict[str, str] = Field(default_factory=dict)
    expectations: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    # where faults reach this service: its Compose service (`redis`, or `<compose service of
    # the stack>/<compose service>` when the stack has several Compose files) and its proxy
    container: str | None = None
    toxiproxy: ToxiproxyRef | None = None
    logs: LogsRef | None = None  # where its log is, when it is neither the sandbox's nor Docker's
    slo: Slo | None = None  # bounds under load (`stackprobe load`), validated at load


class StackConfig(BaseModel):
    """The whole stack file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    stack: str = "stack"
    services: dict[str, ServiceConfig] = Field(default_factory=dict)

    @field_validator("services")
    @classmethod
    def _names(cls, services: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        for name in services:
            if not _NAME.match(name):
                raise ValueError(f"service name {name!r} must match [a-z0-9][a-z0-9-]*")
        return services


@dataclass(frozen=True)
class Typed:
    """A service's `options:` and `expectations:` parsed by its kind's models."""

    options: Any
    expectations: Any


@dataclass(frozen=True)
class Stack:
    """A validated stack file with its secrets resolved, its links settled and its options
    and expectations typed (by `stackprobe.loader.load_stack`)."""

    path: Path
    config: StackConfig
    links: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    missing_secrets: dict[str, list[str]] = field(default_factory=dict)
    typed: dict[str, Typed] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.stack

    @property
    def services(self) -> dict[str, ServiceConfig]:
        return self.config.services

    def service(self, name: str) -> ServiceConfig:
        return self.config.services[name]

    def link(self, service: str, role: str) -> str | None:
        """The service that plays `role` for `service`, or None when the stack has none."""
        return self.links.get(service, {}).get(role)

    def secrets(self) -> list[str]:
        """Every secret value of the stack, for redaction."""
        values: list[str] = []
        for svc in self.config.services.values():
            values += [v for v in (svc.password, svc.token) if v]
            for url in [svc.url, *svc.endpoints.values()]:
                if url and (match := re.search(r"://[^/\s:@]*:([^@\s/]+)@", url)):
                    values.append(match.group(1))
        return values

    def require_secrets(self, services: list[str]) -> None:
        """Fail for a command that needs secrets that came from unset variables."""
        problems = [
            f"{self.path}: {path}: variable ${{{var}}} is not set"
            for name in services
            for path, var in (
                (p.split("=", 1)[0], p.split("=", 1)[1]) for p in self.missing_secrets.get(name, [])
            )
        ]
        if problems:
            raise ConfigError(problems[0], problems)


def find_stack_file(explicit: str | None) -> Path:
    """-c/--config, then $STACKPROBE_CONFIG, then ./stackprobe.yaml."""
    for candidate in (explicit, os.environ.get("STACKPROBE_CONFIG")):
        if candidate:
            path = Path(candidate)
            if not path.is_file():
                raise ConfigError(f"{path}: stack file not found")
            return path
    default = Path("stackprobe.yaml")
    if default.is_file():
        return default
    raise ConfigError(
        "no stack file: pass -c FILE, set STACKPROBE_CONFIG, create ./stackprobe.yaml, "
        "or use --sandbox after `stackprobe sandbox up`"
    )


def parse_stack(
    path: Path, env: Mapping[str, str] | None = None, problems: list[str] | None = None
) -> Stack:
    """Load, interpolate and validate the structure of a stack file (no kind knowledge).

    Problems go to `problems` when it is given (the loader adds the kinds' own and raises once,
    so one pass shows every mistake), else they raise ConfigError. Services whose structure is
    wrong are left out of the returned stack. Use `stackprobe.loader.load_stack`.
    """
    env = os.environ if env is None else env
    collect = problems is not None
    problems = problems if problems is not None else []
    raw = load_yaml(path)
    missing: dict[str, list[str]] = {}
    warnings: list[str] = []
    _check_size(raw, path)
    data = _interpolate(raw, (), env, problems, missing, path)
    if problems:  # later errors would only be consequences of the unset variables
        raise ConfigError(problems[0], problems)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (top level): expected a mapping with `services:`")
    config = _validate(data, path, problems)
    config = _resolve_secret_files(config, path, problems)
    for items in missing.values():
        warnings += [
            f"{path}: {p.split('=', 1)[0]}: variable ${{{p.split('=', 1)[1]}}} is not set "
            "(needed when the service is checked)"
            for p in items
        ]
    if problems and not collect:
        raise ConfigError(problems[0], problems)
    return Stack(path=path, config=config, warnings=warnings, missing_secrets=missing)


def _check_size(raw: Any, path: Path) -> None:
    """Refuse documents that expand too far: nested aliases multiply, a flat count does not
    see it (ten lines can expand to 10^8 nodes)."""
    budget = MAX_NODES
    pending = [raw]
    while pending:
        node = pending.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(
                f"{path}: the document expands to more than {MAX_NODES} values (nested YAML aliases?)"
            )
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def _validate(data: dict[str, Any], path: Path, problems: list[str]) -> StackConfig:
    """Validate the top level and each service on its own, so every problem is reported."""
    raw_services = data.get("services") or {}
    if not isinstance(raw_services, dict):
        problems.append(f"{path}: services: expected a mapping of service name to service")
        raw_services = {}
    services: dict[str, ServiceConfig] = {}
    for name, raw in raw_services.items():
        try:
            services[str(name)] = ServiceConfig.model_validate(raw)
        except ValidationError as exc:
            problems += [
                f"{path}: services.{name}{'.' if err['loc'] else ''}{_loc(err['loc'])}: {_pydantic_msg(err)}"
                for err in exc.errors()
            ]
    # top-level `x-` keys hold YAML anchors for reuse, as in Compose files: not validated
    top = {k: v for k, v in data.items() if not str(k).startswith("x-")}
    try:
        return StackConfig.model_validate({**top, "services": services})
    except ValidationError as exc:
        problems += [f"{path}: {_loc(err['loc'])}: {_pydantic_msg(err)}" for err in exc.errors()]
        raise ConfigError(problems[0], problems) from None


def load_yaml(path: Path) -> Any:
    """Safe YAML with a size limit, an alias limit and duplicate keys refused."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{path}: file is {size} bytes, more than the {MAX_FILE_BYTES} allowed"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except _TooManyAliases:
        raise ConfigError(f"{path}: more than the {MAX_ALIASES} YAML aliases allowed") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(f"{path}: {where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None


class _TooManyAliases(yaml.YAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping instead of silently keeping
    the last one. Keys brought in by a merge key (`<<: *defaults`) may be overridden by the
    mapping's own keys, as YAML and Compose mean them to be. Aliases are counted as the
    document is composed, so it is parsed once (a 2,000-service file took a second more)."""

    aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _TooManyAliases()
        return super().compose_node(parent, index)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    written: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in written:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        written.add(key)
    # merged pairs come first, the mapping's own last: the last one of a key wins
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        result[loader.construct_object(key_node, deep=True)] = loader.construct_object(
            value_node, deep=True
        )
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _interpolate(
    value: Any,
    path: tuple[str, ...],
    env: Mapping[str, str],
    problems: list[str],
    missing: dict[str, list[str]],
    file: Path,
) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, (*path, str(k)), env, problems, missing, file)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(v, (*path, str(i)), env, problems, missing, file)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, str):
        return value
    unset: list[str] = []

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match["name"], match["default"]
        current = env.get(name)
        if default is not None and not current:
            return default
        if current is None:
            unset.append(name)
            return ""
        return current

    result = _VAR.sub(repl, value)
    if not unset:
        return result
    dotted = ".".join(path)
    if len(path) == 3 and path[0] == "services" and path[2] in SECRET_FIELDS:
        missing.setdefault(path[1], []).extend(f"{dotted}={v}" for v in unset)
        return None
    if _is_url_field(path) and (in_password := _variables_in_url_password(value)):
        # a password written inside a URL follows the rule of `password:` fields
        secret = [v for v in unset if v in in_password]
        missing.setdefault(path[1], []).extend(f"{dotted}={v}" for v in secret)
        unset = [v for v in unset if v not in in_password]
        if not unset:
            return result
    problems += [
        f"{file}: {dotted}: variable ${{{v}}} is not set and has no default" for v in unset
    ]
    return result


_URL_PASSWORD = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@]*?:(?P<pw>[^/@]*)@")


def _is_url_field(path: tuple[str, ...]) -> bool:
    return (
        len(path) >= 3
        and path[0] == "services"
        and (path[2] == "url" or (path[2] == "endpoints" and len(path) == 4))
    )


def _variables_in_url_password(raw: str) -> set[str]:
    """Names of the variables written in the password part of a URL (`redis://:${PW}@h`)."""
    match = _URL_PASSWORD.match(raw)
    if match is None:
        return set()
    return {m["name"] for m in _VAR.finditer(match["pw"]) if m["name"]}


def _resolve_secret_files(config: StackConfig, file: Path, problems: list[str]) -> StackConfig:
    services = {}
    for name, svc in config.services.items():
        updates: dict[str, Any] = {}
        for file_field, target in SECRET_FILE_FIELDS.items():
            rel = getattr(svc, file_field)
            if rel is None:
                continue
            if getattr(svc, target) is not None:
                problems.append(
                    f"{file}: services.{name}.{file_field}: set either {target} or {file_field}, not both"
                )
                continue
            secret_path = (file.parent / rel).resolve()
            try:
                updates[target] = secret_path.read_text(encoding="utf-8").removesuffix("\n")
            except OSError as exc:
                problems.append(
                    f"{file}: services.{name}.{file_field}: cannot read {secret_path}: "
                    f"{exc.strerror or exc}"
                )
        services[name] = svc.model_copy(update=updates) if updates else svc
    return config.model_copy(update={"services": services})


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _pydantic_msg(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        known = [*ServiceConfig.model_fields, *StackConfig.model_fields, *Slo.model_fields]
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        return f"unknown field (did you mean {close[0]!r}?)" if close else "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{err['msg'].lower()}, got {err['input']!r}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{msg} (got {err['input']!r})"
    if not kind.endswith("_type"):
        return msg
    field = str(err["loc"][-1]) if err["loc"] else ""
    if field in {"password", "token", "username"}:  # never echo what may be a secret
        return msg
    return f"{msg} (got {Redactor().text(repr(err['input']))})"
