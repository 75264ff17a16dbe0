"""`include` and `extends`, resolved the way Compose resolves them, into one set of services.

- Each file is interpolated with its own environment when it is read (services' `environment`
  stays as written, so lint can tell a reference from a literal; the parser interpolates it).
- `include: [path]` or `{path, project_directory, env_file}`: each entry is a Compose project of
  its own; relative paths in it resolve against its project directory (default: its file's
  directory); its variables come from the including project's environment, then its env_file
  (default: `.env` in its project directory). A `path` list is merged like `-f a -f b`. An
  included service, volume or network that another definition already uses is an error
  (unless the two are identical).
- `extends: name` or `{service, file}`: the base (itself resolved first) is merged with the
  service (merge rules below); `depends_on`, `links` and `volumes_from` are not inherited.
  A `file:` is relative to the file that names it, and the base's relative paths stay
  relative to its own file.

Merge rules (the Compose specification's merge rules, as compose-go applies them): mappings
merge key by key; `command`, `entrypoint` and `healthcheck.test` are replaced; environment,
labels, annotations, sysctls, extra_hosts and build args merge by key (list or mapping);
volumes (and devices) merge by container path, secrets and configs by target, env_file by
path; ports, expose, dns, dns_search, dns_opt, cap_add, cap_drop, profiles, tmpfs and links
are appended without repeats; other sequences are appended; scalars are replaced; `!reset`
removes what is inherited and `!override` replaces it whole.

A missing file or a cycle is one `ComposeError` line naming where it was referenced.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackprobe.compose.env import interpolate, parse_dotenv
from stackprobe.compose.loader import Override, Reset, load_compose_yaml
from stackprobe.errors import ConfigError

TOP_KEYS = frozenset(
    {"version", "name", "services", "networks", "volumes", "secrets", "configs", "include"}
)
INCLUDE_KEYS = frozenset({"path", "project_directory", "env_file"})
NOT_INHERITED = ("depends_on", "links", "volumes_from")
_REPLACED = frozenset({("command",), ("entrypoint",), ("healthcheck", "test")})
_BY_KEY = frozenset(
    {
        ("environment",),
        ("labels",),
        ("annotations",),
        ("sysctls",),
        ("extra_hosts",),
        ("build", "args"),
        ("build", "labels"),
        ("build", "extra_hosts"),
        ("deploy", "labels"),
    }
)
_UNIQUE = frozenset(
    {
        ("ports",),
        ("expose",),
        ("dns",),
        ("dns_search",),
        ("dns_opt",),
        ("cap_add",),
        ("cap_drop",),
        ("profiles",),
        ("tmpfs",),
        ("links",),
    }
)


class ComposeError(ConfigError):
    """The Compose file is malformed: one line naming file and key, exit 2."""


@dataclass(frozen=True)
class Source:
    """Where a service was defined, and what its strings were interpolated with."""

    file: Path
    env: Mapping[str, str]


@dataclass
class RawService:
    body: dict[str, Any]  # interpolated, but for `environment` (as written)
    source: Source


@dataclass
class Project:
    path: Path
    env: Mapping[str, str]
    name: Any
    services: dict[str, RawService] = field(default_factory=dict)
    volumes: dict[str, Any] = field(default_factory=dict)
    networks: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # `${VAR:?message}` left unset


def required(found: list[str], path: Path) -> Callable[[str, str], None]:
    """An interpolation callback noting each `${VAR:?message}` left unset, once."""

    def missing(name: str, message: str) -> None:
        text = f"${{{name}}} is required ({message or 'not set'}): Compose refuses {path.name} until it is set"
        if text not in found:
            found.append(text)

    return missing


def unknown(key: str, known: frozenset[str], what: str) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"unknown {what}" + (f" (did you mean {close[0]!r}?)" if close else "")


def dotenv_file(path: Path, lookup: Mapping[str, str]) -> dict[str, str] | None:
    """The variables of a `.env`-format file, or None when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return parse_dotenv(text, lookup)


def project_env(project_dir: Path, shell: Mapping[str, str]) -> dict[str, str]:
    """`.env` in the project directory, overridden by the shell environment."""
    environ = dict(dotenv_file(project_dir / ".env", shell) or {})
    environ.update(shell)
    return environ


def load_project(path: Path, env: Mapping[str, str] | None = None) -> Project:
    """Every service of a Compose file with its includes and extends resolved."""
    shell = os.environ if env is None else env
    environ = project_env(path.parent, shell)
    resolver = _Resolver(path.parent)
    doc = resolver.file(path, Source(path, environ), project_dir=path.parent, chain=())
    return Project(
        path=path,
        env=environ,
        name=doc.name,
        services=doc.services,
        volumes=doc.volumes,
        networks=doc.networks,
        missing=resolver.missing,
    )


@dataclass
class _File:
    name: Any
    services: dict[str, RawService]
    volumes: dict[str, Any]
    networks: dict[str, Any]


class _Resolver:
    def __init__(self, main_dir: Path) -> None:
        self.main_dir = main_dir
        self.missing: list[str] = []
        self._docs: dict[tuple[Path, int], dict[str, Any]] = {}

    # --- reading one file ------------------------------------------------------------------

    def document(self, path: Path, source: Source) -> dict[str, Any]:
        """A file's top level, interpolated (services' environment kept as written)."""
        key = (path.resolve(), id(source.env))
        if key in self._docs:
            return self._docs[key]
        try:
            raw = load_compose_yaml(path)
        except ConfigError as exc:
            raise ComposeError(str(exc)) from None
        if not isinstance(raw, dict):
            raise ComposeError(f"{path}: (top level): expected a mapping with `services:`")
        for top in raw:
            if not str(top).startswith("x-") and top not in TOP_KEYS:
                raise ComposeError(f"{path}: {top}: {unknown(str(top), TOP_KEYS, 'top-level key')}")
        services = raw.get("services")
        if services is not None and not isinstance(services, dict):
            raise ComposeError(
                f"{path}: services: expected a mapping, got {type(services).__name__}"
            )

        missing = required(self.missing, path)

        def sub(value: Any, where: tuple[str, ...]) -> Any:
            if isinstance(value, str):
                return interpolate(value, source.env, missing)
            if isinstance(value, list):
                return [sub(v, where) for v in value]
            if isinstance(value, dict):
                if len(where) == 2 and where[0] == "services":
                    return {
                        str(k): (v if k == "environment" else sub(v, (*where, str(k))))
                        for k, v in value.items()
                    }
                return {str(k): sub(v, (*where, str(k))) for k, v in value.items()}
            if isinstance(value, Override):
                return Override(sub(value.value, where))
            return value

        doc: dict[str, Any] = sub(raw, ())
        self._docs[key] = doc
        return doc

    def file(self, path: Path, source: Source, project_dir: Path, chain: tuple[Path, ...]) -> _File:
        """One file with its includes and extends resolved; relative paths made absolute
        when the file's project directory is not the main file's."""
        doc = self.document(path, source)
        services_raw = doc.get("services") or {}
        services: dict[str, RawService] = {}
        for name, body in services_raw.items():
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise ComposeError(
                    f"{path}: services.{name}: expected a mapping, got {type(body).__name__}"
                )
            resolved = self.extended(path, source, name, ())
            if project_dir.resolve() != self.main_dir.resolve():
                resolved = rebase(resolved, project_dir)
            services[name] = RawService(finish(resolved), source)
        result = _File(
            name=doc.get("name"),
            services=services,
            volumes=_mapping(doc.get("volumes"), f"{path}: volumes"),
            networks=_mapping(doc.get("networks"), f"{path}: networks"),
        )
        for index, entry in enumerate(_entries(doc.get("include"), f"{path}: include")):
            included = self.include(path, source, entry, f"include[{index}]", (*chain, path))
            _import(result, included, path, f"include[{index}]")
        return result

    # --- include ---------------------------------------------------------------------------

    def include(
        self, path: Path, source: Source, entry: Any, where: str, chain: tuple[Path, ...]
    ) -> _File:
        here = path.parent
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise ComposeError(f"{path}: {where}: expected a path or a mapping with `path:`")
        for key in entry:
            if key not in INCLUDE_KEYS:
                raise ComposeError(
                    f"{path}: {where}.{key}: {unknown(str(key), INCLUDE_KEYS, 'include key')}"
                )
        paths = _strings(entry.get("path"), f"{path}: {where}.path")
        if not paths:
            raise ComposeError(f"{path}: {where}: `path` is required")
        files = [_relative(here, p) for p in paths]
        for number, target in enumerate(files):
            label = f"{where}.path" + (f"[{number}]" if len(files) > 1 else "")
            if not target.is_file():
                raise ComposeError(f"{path}: {label}: included file {target} does not exist")
            if any(target.resolve() == seen.resolve() for seen in chain):
                cycle = " -> ".join(str(p) for p in (*chain, target))
                raise ComposeError(f"{path}: {label}: include cycle: {cycle}")
        project_dir = (
            _relative(here, str(entry["project_directory"]))
            if entry.get("project_directory")
            else files[0].parent
        )
        env_files = [
            _relative(here, p) for p in _strings(entry.get("env_file"), f"{path}: {where}.env_file")
        ] or ([project_dir / ".env"] if (project_dir / ".env").is_file() else [])
        environ = dict(source.env)  # the including project's variables win
        for env_file in env_files:
            values = dotenv_file(env_file, source.env)
            if values is None:
                raise ComposeError(f"{path}: {where}.env_file: cannot read {env_file}")
            for key, value in values.items():
                environ.setdefault(key, value)
        merged: _File | None = None
        for target in files:
            loaded = self.file(target, Source(target, environ), project_dir, chain)
            merged = loaded if merged is None else _override(merged, loaded)
        assert merged is not None
        return merged

    # --- extends ---------------------------------------------------------------------------

    def extended(
        self, path: Path, source: Source, name: str, chain: tuple[tuple[Path, str], ...]
    ) -> dict[str, Any]:
        """services.<name> of `path` with its extends chain merged in."""
        services = self.document(path, source).get("services") or {}
        where = f"{path}: services.{name}"
        body = services.get(name)
        if not isinstance(body, dict):
            body = {}
        spec = body.get("extends")
        if spec is None:
            return body
        if any(p.resolve() == path.resolve() and n == name for p, n in chain):
            cycle = " -> ".join(f"{p.name}:{n}" for p, n in (*chain, (path, name)))
            raise ComposeError(f"{where}.extends: extends cycle: {cycle}")
        if isinstance(spec, str):
            spec = {"service": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("service"), str):
            raise ComposeError(f"{where}.extends: expected a service name or {{service, file}}")
        for key in spec:
            if key not in ("service", "file"):
                raise ComposeError(
                    f"{where}.extends.{key}: unknown extends key (known: service, file)"
                )
        base_name = spec["service"]
        base_path = path
        if spec.get("file"):
            base_path = _relative(path.parent, str(spec["file"]))
            if not base_path.is_file():
                raise ComposeError(f"{where}.extends.file: {base_path} does not exist")
        base_services = self.document(base_path, source).get("services") or {}
        if base_name not in base_services:
            known = ", ".join(sorted(base_services)) or "none"
            raise ComposeError(
                f"{where}.extends.service: no service {base_name!r} in {base_path} (services: {known})"
            )
        base = self.extended(base_path, source, base_name, (*chain, (path, name)))
        if base_path.parent.resolve() != path.parent.resolve():
            base = rebase(base, base_path.parent)
        base = {k: v for k, v in base.items() if k not in NOT_INHERITED and k != "extends"}
        own = {k: v for k, v in body.items() if k != "extends"}
        return merge(base, own)


# --- merging ---------------------------------------------------------------------------------


def merge(base: dict[str, Any], over: dict[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    """One service (or a mapping inside it) merged with an override, by Compose's rules."""
    out = dict(base)
    for key, value in over.items():
        here = (*path, key)
        if isinstance(value, Reset):
            out.pop(key, None)
        elif isinstance(value, Override) or key not in out or out[key] is None:
            out[key] = value
        else:
            out[key] = _merge_value(here, out[key], value)
    return out


def _merge_value(path: tuple[str, ...], base: Any, over: Any) -> Any:
    if path in _REPLACED or over is None:
        return over
    if path in _BY_KEY:
        return merge(_as_map(base), _as_map(over), path)
    if path in _UNIQUE:
        return _unique([*_as_list(base), *_as_list(over)], repr)
    if path == ("volumes",) or path == ("devices",):
        return _unique([*_as_list(base), *_as_list(over)], _mount_target)
    if path in (("secrets",), ("configs",)):
        return _unique([*_as_list(base), *_as_list(over)], _resource_target)
    if path == ("env_file",):
        return _unique([*_as_list(base), *_as_list(over)], _env_file_path)
    if path == ("build",):
        return merge(_build(base), _build(over), path)
    if path in (("networks",), ("depends_on",)):
        return merge(_names(base), _names(over), path)
    if (
        path == ("logging",)
        and isinstance(base, dict)
        and isinstance(over, dict)
        and over.get("driver") not in (None, base.get("driver"))
    ):
        return over
    if path[:1] == ("ulimits",) and len(path) == 2:
        return over
    if isinstance(base, dict) and isinstance(over, dict):
        return merge(base, over, path)
    if isinstance(base, list) and isinstance(over, list):
        return [*base, *over]
    return over


def _unique(items: list[Any], key: Callable[[Any], Any]) -> list[Any]:
    """Later items replace earlier ones with the same key, in the earlier one's place."""
    out: list[Any] = []
    index: dict[Any, int] = {}
    for item in items:
        k = key(item)
        if k in index:
            out[index[k]] = item
        else:
            index[k] = len(out)
            out.append(item)
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _as_map(value: Any) -> dict[str, Any]:
    """environment/labels/extra_hosts as a mapping, from either form."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    out: dict[str, Any] = {}
    for item in _as_list(value):
        text = str(item)
        sep = "=" if "=" in text else (":" if ":" in text else "")
        if sep:
            key, _, val = text.partition(sep)
            out[key] = val
        else:
            out[text] = None
    return out


def _names(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    return {str(v): None for v in _as_list(value)}


def _build(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {"context": value}


def _mount_target(item: Any) -> Any:
    if isinstance(item, dict):
        return str(item.get("target"))
    parts = str(item).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _resource_target(item: Any) -> Any:
    if isinstance(item, dict):
        return str(item.get("target") or item.get("source"))
    return str(item)


def _env_file_path(item: Any) -> Any:
    return str(item.get("path")) if isinstance(item, dict) else str(item)


def finish(value: Any) -> Any:
    """Drop what `!reset` removed and unwrap `!override`, once every merge is done."""
    if isinstance(value, Override):
        return finish(value.value)
    if isinstance(value, dict):
        return {k: finish(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [finish(v) for v in value if not isinstance(v, Reset)]
    return None if isinstance(value, Reset) else value


# --- paths -----------------------------------------------------------------------------------


def _relative(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base.absolute() / path))


def _is_relative(text: Any) -> bool:
    return isinstance(text, str) and text.startswith(".")


def rebase(body: dict[str, Any], base: Path) -> dict[str, Any]:
    """A service's relative paths (build context, env_file, bind sources) made absolute."""
    out = dict(body)

    def fix(text: str) -> str:
        return str(_relative(base, text))

    build = out.get("build")
    if isinstance(build, str) and _is_relative(build):
        out["build"] = fix(build)
    elif isinstance(build, dict) and _is_relative(build.get("context", ".")):
        out["build"] = {**build, "context": fix(str(build.get("context", ".")))}
    env_file = out.get("env_file")
    if env_file is not None:
        out["env_file"] = [
            {**item, "path": fix(str(item["path"]))}
            if isinstance(item, dict) and _is_relative(item.get("path"))
            else (fix(item) if _is_relative(item) else item)
            for item in _as_list(env_file)
        ]
    if isinstance(out.get("volumes"), list):
        volumes = []
        for item in out["volumes"]:
            if (
                isinstance(item, dict)
                and item.get("type") == "bind"
                and _is_relative(item.get("source"))
            ):
                item = {**item, "source": fix(str(item["source"]))}
            elif isinstance(item, str) and ":" in item and _is_relative(item):
                source, _, rest = item.partition(":")
                item = f"{fix(source)}:{rest}"
            volumes.append(item)
        out["volumes"] = volumes
    label_file = out.get("label_file")
    if isinstance(label_file, str) and _is_relative(label_file):
        out["label_file"] = fix(label_file)
    return out


# --- combining files -------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ComposeError(f"{where}: expected a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ComposeError(f"{where}: expected a path or a list of paths")


def _entries(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ComposeError(f"{where}: expected a list of paths or {{path: ...}} entries")
    return value


def _import(into: _File, included: _File, path: Path, where: str) -> None:
    """Included resources join the including file's; the same name twice is an error."""
    for what, mine, theirs in (
        ("service", into.services, included.services),
        ("volume", into.volumes, included.volumes),
        ("network", into.networks, included.networks),
    ):
        for name, value in theirs.items():
            if name in mine:
                same = (
                    mine[name].body == value.body
                    if isinstance(value, RawService) and isinstance(mine[name], RawService)
                    else mine[name] == value
                )
                if not same:
                    raise ComposeError(
                        f"{path}: {where}: the included file defines {what} {name!r}, "
                        f"which is already defined: rename one of them"
                    )
                continue
            mine[name] = value


def _override(first: _File, second: _File) -> _File:
    """`include: {path: [a, b]}`: b overrides a, like `docker compose -f a -f b`."""
    services = dict(first.services)
    for name, svc in second.services.items():
        if name in services:
            body = finish(merge(services[name].body, svc.body))
            services[name] = RawService(body, svc.source)
        else:
            services[name] = svc
    return _File(
        name=first.name,
        services=services,
        volumes=merge(first.volumes, second.volumes),
        networks=merge(first.networks, second.networks),
    )
