"""The rules of `stackprobe compose lint` and of the compose kind's static checks.

Each rule has a stable id, a severity and, for the four compose capabilities (healthchecks,
startup-order, networking, volumes), the capability it proves. The other rules (unpinned
images, secrets in plain environment, privileged containers, admin ports on all interfaces)
are findings outside coverage. Every finding names the file, the service and the key, and
says how to fix it. A service can acknowledge a finding with
`x-stackprobe: {ignore: [rule-id, ...]}`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stackprobe.compose.images import (
    STATEFUL_KINDS,
    ImageProfile,
    data_dirs,
    kind_of,
    listeners,
    profile,
    split_image,
)
from stackprobe.compose.lifecycle import lifecycle, one_shot
from stackprobe.compose.model import ComposeFile, Service, host_path, is_reference

ERROR = "error"
WARNING = "warning"
CAPABILITIES = ("healthchecks", "startup-order", "networking", "volumes")


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    capability: str | None  # None: a finding outside coverage
    summary: str
    fix: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("healthcheck-missing", ERROR, "healthchecks",
             "a long-running service has no healthcheck (or it is disabled)",
             "add a healthcheck using a tool the image contains, or mark the service "
             "x-stackprobe: {healthcheck: external, reason: ...} when the image has none"),
        Rule("healthcheck-external-reason", ERROR, "healthchecks",
             "x-stackprobe healthcheck: external without a reason",
             "say why, e.g. reason: \"distroless image: no shell\""),
        Rule("healthcheck-tool", ERROR, "healthchecks",
             "the healthcheck runs a shell or tool the image does not contain",
             "use a CMD form with a binary the image ships, or mark it external"),
        Rule("healthcheck-timing", WARNING, "healthchecks",
             "healthcheck interval, timeout or retries are not sane",
             "interval 1s-5m, timeout at most the interval, retries 1-20, start_period at most 10m"),
        Rule("depends-on-unknown", ERROR, "startup-order",
             "depends_on names a service that does not exist",
             "fix the name or remove the dependency"),
        Rule("depends-on-cycle", ERROR, "startup-order",
             "depends_on forms a cycle: Compose cannot start the stack",
             "remove one dependency of the cycle"),
        Rule("depends-on-no-healthcheck", ERROR, "startup-order",
             "condition: service_healthy on a service that has no healthcheck (it never becomes healthy)",
             "give the dependency a healthcheck, or wait with condition: service_started"),
        Rule("depends-on-start-only", ERROR, "startup-order",
             "a dependency on a stateful service waits only until it started, not until it is healthy",
             "use depends_on: {<service>: {condition: service_healthy}}"),
        Rule("network-mode-conflict", ERROR, "networking",
             "network_mode and networks are both set (Compose refuses this)",
             "keep one of them"),
        Rule("network-undefined", ERROR, "networking",
             "a service joins a network that is not declared under the top-level networks:",
             "declare the network under networks:, or fix its name"),
        Rule("network-unshared", ERROR, "networking",
             "a service and its dependency share no network: it cannot reach it by name",
             "attach both services to a common network"),
        Rule("port-conflict", ERROR, "networking",
             "the same host port is published twice",
             "publish each host port once (change one of the published ports)"),
        Rule("data-volume", ERROR, "volumes",
             "a stateful service keeps its data directory off a named volume or bind mount (lost when the container is recreated)",
             "mount a named volume on the data directory and declare it under volumes:"),
        Rule("volume-undefined", ERROR, "volumes",
             "a service mounts a named volume that is not declared under the top-level volumes:",
             "declare the volume under volumes:"),
        Rule("bind-source-missing", ERROR, "volumes",
             "a bind mount's source path does not exist (Docker would create an empty directory)",
             "create the file or directory, or fix the path (relative to the Compose file)"),
        Rule("env-file-missing", ERROR, None,
             "an env_file does not exist: Compose refuses to start the file",
             "create the file, fix the path (relative to the Compose file), or mark it "
             "{path: ..., required: false}"),
        Rule("host-network-ports", WARNING, "networking",
             "ports: on a service with network_mode: host (Compose discards them)",
             "remove ports: (the service listens on the host directly), or leave host networking"),
        Rule("build-context-missing", ERROR, None,
             "a build context directory does not exist",
             "fix the build path (relative to the Compose file)"),
        Rule("image-unpinned", WARNING, None,
             "the image has no tag or uses latest: every pull may bring another version",
             "pin a version tag (or a digest), e.g. redis:7.2.5"),
        Rule("plain-secret", ERROR, None,
             "a secret is written in plain text in environment:",
             "reference it from the environment (${VAR}) or use a *_FILE variable with Compose secrets"),
        Rule("privileged", ERROR, None,
             "the container runs privileged (full access to the host)",
             "remove privileged: true and grant only the capabilities needed (cap_add)"),
        Rule("admin-port-exposed", ERROR, None,
             "an administrative port is published on all interfaces (or listens on them with network_mode: host)",
             "publish it on loopback only, e.g. \"127.0.0.1:8500:8500\""),
    )
}  # fmt: skip

_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?)",
    re.IGNORECASE,
)
_NOT_SECRET_NAME = re.compile(r"(_FILE|_PATH|_DIR|RANDOM|NO_AUTH|_LENGTH|_MIN|_MAX)", re.IGNORECASE)
_FLAG = {"0", "1", "true", "false", "yes", "no", "on", "off", ""}
_ONE_SHOT_FIX = (
    '; a one-shot job is recognised by restart: "no" with a command that finishes, or by '
    "dependents waiting with condition: service_completed_successfully"
)


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    capability: str | None
    file: str
    service: str | None
    key: str
    message: str
    fix: str

    @property
    def where(self) -> str:
        if self.service is None:
            return self.key
        return f"services.{self.service}" + (f".{self.key}" if self.key else "")

    def line(self) -> str:
        return (
            f"{self.file}: {self.where}: {self.severity} [{self.rule}] {self.message} "
            f"(fix: {self.fix})"
        )


@dataclass
class LintReport:
    file: str
    project: str
    services: int
    findings: list[Finding] = field(default_factory=list)
    ignored: int = 0
    startup_order: list[list[str]] | None = None  # waves; None when there is a cycle

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def shutdown_order(self) -> list[list[str]] | None:
        return None if self.startup_order is None else list(reversed(self.startup_order))

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def for_capability(self, capability: str) -> list[Finding]:
        return [f for f in self.findings if f.capability == capability]

    def to_json(self) -> str:
        doc = {
            "file": self.file,
            "project": self.project,
            "services": self.services,
            "summary": {
                "errors": len(self.errors),
                "warnings": len(self.warnings),
                "ignored": self.ignored,
            },
            "findings": [asdict(f) for f in self.findings],
            "startup_order": self.startup_order,
            "shutdown_order": self.shutdown_order,
        }
        return json.dumps(doc, indent=2) + "\n"

    def to_text(self) -> str:
        lines = [f.line() for f in self.findings]
        if self.startup_order is None:
            lines.append("startup order: none (depends_on has a cycle)")
        else:
            lines.append("startup order: " + format_order(self.startup_order))
            lines.append("shutdown order: " + format_order(self.shutdown_order or []))
        ignored = f", {self.ignored} ignored" if self.ignored else ""
        lines.append(
            f"{self.file}: {self.services} services, {len(self.errors)} error(s), "
            f"{len(self.warnings)} warning(s){ignored}"
        )
        return "\n".join(lines) + "\n"


def format_order(waves: list[list[str]]) -> str:
    """`a, b -> c -> d`: services of one wave can start together."""
    return " -> ".join(", ".join(wave) for wave in waves)


def startup_waves(compose: ComposeFile) -> list[list[str]] | None:
    """Services grouped by the order Compose starts them; None when depends_on has a cycle."""
    remaining = {
        name: {d for d in svc.depends_on if d in compose.services}
        for name, svc in compose.services.items()
    }
    waves: list[list[str]] = []
    while remaining:
        ready = sorted(n for n, deps in remaining.items() if not deps)
        if not ready:
            return None
        waves.append(ready)
        for name in ready:
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return waves


def cycle_in(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of a dependency graph (`a -> b -> a`), or None; unknown nodes are ignored."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph[node]:
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if not state.get(dep) and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for name in graph:
        if not state.get(name) and (found := visit(name)):
            return found
    return None


def find_cycle(compose: ComposeFile) -> list[str] | None:
    return cycle_in({name: list(svc.depends_on) for name, svc in compose.services.items()})


class _Linter:
    def __init__(self, compose: ComposeFile, file: str) -> None:
        self.compose = compose
        self.file = file
        self.findings: list[Finding] = []
        self.ignored = 0

    def add(
        self, rule_id: str, service: Service | None, key: str, message: str, fix: str = ""
    ) -> None:
        rule = RULES[rule_id]
        if service is not None and rule_id in service.x_stackprobe.get("ignore", []):
            self.ignored += 1
            return
        self.findings.append(
            Finding(
                rule=rule.id,
                severity=rule.severity,
                capability=rule.capability,
                file=self.file,
                service=service.name if service else None,
                key=key,
                message=message,
                fix=fix or rule.fix,
            )
        )

    # --- helpers ---------------------------------------------------------------------------

    def one_shot(self, name: str) -> bool:
        """A job that runs to completion (lifecycle.py) is not long-running."""
        return one_shot(self.compose, name)

    def label(self, svc: Service) -> str:
        prof = profile(svc)
        return f"{svc.name} ({prof.label})" if prof else svc.name

    # --- healthchecks ----------------------------------------------------------------------

    def healthchecks(self, svc: Service) -> None:
        external = svc.x_stackprobe.get("healthcheck") == "external"
        prof = profile(svc)
        if external:
            if not str(svc.x_stackprobe.get("reason") or "").strip():
                self.add(
                    "healthcheck-external-reason",
                    svc,
                    "x-stackprobe.reason",
                    "healthcheck: external has no reason",
                )
            return
        life = lifecycle(self.compose, svc)
        if life.one_shot:
            return
        hc = svc.healthcheck
        hint = (
            f"; for {prof.label}: {prof.healthcheck_hint}" if prof and prof.healthcheck_hint else ""
        )
        fix = RULES["healthcheck-missing"].fix + hint + _ONE_SHOT_FIX
        if hc is None or hc.test is None:
            self.add(
                "healthcheck-missing",
                svc,
                "healthcheck",
                f"{self.label(svc)} has no healthcheck and was judged long-running "
                f"({life.why}): nothing can wait for it to be ready, and a hung process "
                "looks alive",
                fix,
            )
            return
        if hc.disabled:
            self.add(
                "healthcheck-missing",
                svc,
                "healthcheck.test" if not hc.disable else "healthcheck.disable",
                f"{self.label(svc)} has its healthcheck disabled and was judged long-running "
                f"({life.why})",
                fix,
            )
            return
        self.healthcheck_tool(svc, prof, hint)
        self.healthcheck_timing(svc)

    def healthcheck_tool(self, svc: Service, prof: ImageProfile | None, hint: str) -> None:
        hc = svc.healthcheck
        if prof is None or hc is None or hc.test is None:
            return
        if hc.form == "CMD-SHELL" and prof.shell is False:
            self.add(
                "healthcheck-tool",
                svc,
                "healthcheck.test",
                f"CMD-SHELL needs /bin/sh, but the {prof.label} image has no shell: "
                f"the check always fails ({hc.command!r})",
                RULES["healthcheck-tool"].fix + hint,
            )
            return
        tools = _tools(hc.test)
        for tool in tools:
            base = tool.rsplit("/", 1)[-1]
            missing = base in prof.absent or (
                prof.only_tools and tool not in prof.tools and f"/{base}" not in prof.tools
            )
            if missing:
                self.add(
                    "healthcheck-tool",
                    svc,
                    "healthcheck.test",
                    f"{tool!r} is not in the {prof.label} image: the check always fails",
                    RULES["healthcheck-tool"].fix + hint,
                )
                return

    def healthcheck_timing(self, svc: Service) -> None:
        hc = svc.healthcheck
        assert hc is not None
        interval = hc.interval_s if hc.interval_s is not None else 30.0
        timeout = hc.timeout_s if hc.timeout_s is not None else 30.0
        problems: list[tuple[str, str]] = []
        if hc.interval_s is not None and not 1.0 <= interval <= 300.0:
            problems.append(("interval", f"interval {interval:g}s is outside 1s-5m"))
        if hc.timeout_s is not None and timeout > interval:  # the 30s default is not a choice
            problems.append(
                ("timeout", f"timeout {timeout:g}s is longer than the interval {interval:g}s")
            )
        if hc.retries is not None and not 1 <= hc.retries <= 20:
            problems.append(("retries", f"retries {hc.retries} is outside 1-20"))
        if hc.start_period_s is not None and hc.start_period_s > 600:
            problems.append(
                ("start_period", f"start_period {hc.start_period_s:g}s is longer than 10m")
            )
        for key, message in problems:
            self.add("healthcheck-timing", svc, f"healthcheck.{key}", message)

    # --- startup order ---------------------------------------------------------------------

    def startup_order(self, svc: Service) -> None:
        for name, dep in svc.depends_on.items():
            key = f"depends_on.{name}"
            target = self.compose.services.get(name)
            if target is None:
                known = ", ".join(sorted(self.compose.services))
                self.add(
                    "depends-on-unknown", svc, key, f"no service named {name!r} (services: {known})"
                )
                continue
            external = target.x_stackprobe.get("healthcheck") == "external"
            has_check = (
                target.healthcheck is not None
                and target.healthcheck.test is not None
                and not target.healthcheck.disabled
            )
            if dep.condition == "service_healthy" and not has_check:
                why = (
                    "is marked healthcheck: external (Docker never sees it healthy)"
                    if external
                    else "has no healthcheck"
                )
                self.add(
                    "depends-on-no-healthcheck",
                    svc,
                    f"{key}.condition",
                    f"waits for {name} to be healthy, but {name} {why}: {svc.name} never starts",
                    "wait with condition: service_started"
                    if external
                    else RULES["depends-on-no-healthcheck"].fix,
                )
            elif (
                dep.condition == "service_started"
                and has_check
                and kind_of(target) in STATEFUL_KINDS
                and not self.one_shot(name)
            ):
                self.add(
                    "depends-on-start-only",
                    svc,
                    f"{key}.condition" if dep.condition else key,
                    f"waits only for {self.label(target)} to start; it may not accept "
                    "connections yet",
                    f"depends_on: {{{name}: {{condition: service_healthy}}}}",
                )

    # --- networking ------------------------------------------------------------------------

    def networking(self, svc: Service) -> None:
        if svc.network_mode is not None and svc.networks is not None:
            self.add(
                "network-mode-conflict",
                svc,
                "network_mode",
                f"network_mode {svc.network_mode!r} together with networks {svc.networks}",
            )
        for net in svc.networks or []:
            if net != "default" and net not in self.compose.networks:
                declared = ", ".join(sorted(self.compose.networks)) or "none"
                self.add(
                    "network-undefined",
                    svc,
                    f"networks.{net}",
                    f"network {net!r} is not declared (declared: {declared})",
                )
        for name in svc.depends_on:
            target = self.compose.services.get(name)
            if target is None or self._share_network(svc, target):
                continue
            self.add(
                "network-unshared",
                svc,
                f"depends_on.{name}",
                f"{svc.name} ({_nets(svc)}) and {name} ({_nets(target)}) share no network",
            )

    def _namespace(self, svc: Service, seen: tuple[str, ...] = ()) -> tuple[str, set[str]]:
        mode = svc.network_mode or ""
        if mode.startswith(("service:", "container:")):
            other = self.compose.services.get(mode.split(":", 1)[1])
            if other is not None and other.name not in seen:
                return self._namespace(other, (*seen, svc.name))
            return mode, set()
        if mode:
            return mode, set()
        return "", set(svc.joined_networks)

    def _share_network(self, a: Service, b: Service) -> bool:
        mode_a, nets_a = self._namespace(a)
        mode_b, nets_b = self._namespace(b)
        if mode_a == "host" and mode_b == "host":
            return True
        if mode_a.startswith("service:") or mode_b.startswith("service:"):
            return mode_a == mode_b
        if mode_a == "none" or mode_b == "none":
            return False
        return bool(nets_a & nets_b)

    def ports(self) -> None:
        """One host port per interface and protocol; all interfaces (*) overlap every address."""
        seen: list[tuple[str, int, str, Service, int]] = []
        for svc in self.compose.services.values():
            if svc.host_network:
                for listener in listeners(svc, self.compose.base_dir) or []:
                    ip = listener.address or "*"
                    seen.append((ip, listener.port, "tcp", svc, -1))
                continue
            for port in svc.ports:
                ip = "*" if port.all_interfaces else str(port.host_ip)
                for _, host in port.pairs():
                    if host is None:
                        continue
                    clash = next(
                        (
                            (other, index)
                            for other_ip, other_host, proto, other, index in seen
                            if other_host == host
                            and proto == port.protocol
                            and (ip == other_ip or "*" in (ip, other_ip))
                        ),
                        None,
                    )
                    if clash is not None:
                        other, index = clash
                        by = f"ports[{index}]" if index >= 0 else "network_mode: host"
                        self.add(
                            "port-conflict",
                            svc,
                            f"ports[{port.index}]",
                            f"host port {host}/{port.protocol} is already taken by "
                            f"{other.name} ({by})",
                        )
                        break
                    seen.append((ip, host, port.protocol, svc, port.index))

    # --- volumes ---------------------------------------------------------------------------

    def volumes(self, svc: Service) -> None:
        for mount in svc.volumes:
            key = f"volumes[{mount.index}]"
            if mount.type == "volume" and mount.source and mount.source not in self.compose.volumes:
                declared = ", ".join(sorted(self.compose.volumes)) or "none"
                self.add(
                    "volume-undefined",
                    svc,
                    key,
                    f"named volume {mount.source!r} is not declared under volumes: "
                    f"(declared: {declared})",
                )
            if mount.type == "bind" and mount.source:
                source = self._host_path(mount.source)
                if not source.exists():
                    self.add(
                        "bind-source-missing",
                        svc,
                        key,
                        f"bind source {mount.source} does not exist ({source})",
                    )
        for env_file in svc.env_files:
            path = self._host_path(env_file.path)
            if env_file.required and not path.is_file():
                self.add(
                    "env-file-missing",
                    svc,
                    f"env_file[{env_file.index}]",
                    f"env_file {env_file.path} does not exist ({path}): Compose refuses to "
                    "start this file",
                )
        prof = profile(svc)
        if prof is None or self.one_shot(svc.name):
            return
        for data_dir in data_dirs(svc, self.compose.base_dir):
            mount = _mount_for(svc, data_dir)
            if mount is not None and mount.type in ("volume", "bind") and mount.source:
                continue  # a named volume or a host directory: both outlive the container
            if mount is None:
                seen = (
                    "not mounted: it lives in the container (its writable layer, or an "
                    "anonymous volume the image declares) and is left behind when the "
                    "container is recreated"
                )
                key = "volumes"
            elif mount.type == "volume":
                seen = f"on an anonymous volume ({mount.target})"
                key = f"volumes[{mount.index}]"
            else:
                seen = f"on a {mount.type} mount ({mount.source or mount.target})"
                key = f"volumes[{mount.index}]"
            self.add(
                "data-volume",
                svc,
                key,
                f"{prof.label} keeps its data in {data_dir}, which is {seen}",
                f'mount a named volume: volumes: ["{svc.name}-data:{data_dir}"] and declare '
                f"{svc.name}-data under the top-level volumes:",
            )

    def _host_path(self, source: str) -> Path:
        return host_path(self.compose.base_dir, source)

    def build_context(self, svc: Service) -> None:
        if svc.build is None or "://" in svc.build or svc.build.startswith("git@"):
            return
        path = self._host_path(svc.build)
        if not path.is_dir():
            self.add(
                "build-context-missing",
                svc,
                "build",
                f"build context {svc.build} does not exist ({path})",
            )

    # --- outside coverage ------------------------------------------------------------------

    def image(self, svc: Service) -> None:
        if svc.image is None:
            return
        _, tag, digest = split_image(svc.image)
        if digest:
            return
        if tag is None or tag == "latest":
            what = "no tag (means latest)" if tag is None else "the latest tag"
            self.add("image-unpinned", svc, "image", f"image {svc.image!r} has {what}")

    def secrets(self, svc: Service) -> None:
        for key, raw in svc.environment_raw.items():
            if raw is None or not _SECRET_NAME.search(key) or _NOT_SECRET_NAME.search(key):
                continue
            value = raw.strip()
            if value.lower() in _FLAG or is_reference(value):
                continue
            shown = "a default in ${...:-...}" if "${" in value else "a literal value"
            self.add(
                "plain-secret",
                svc,
                f"environment.{key}",
                f"{key} is set to {shown} in the Compose file (value not shown)",
                f"write {key}: ${{{key}}} and export {key} in the environment "
                "(or use Compose secrets with a *_FILE variable)",
            )

    def privileged(self, svc: Service) -> None:
        if svc.privileged:
            self.add("privileged", svc, "privileged", f"{svc.name} runs privileged")

    def admin_ports(self, svc: Service) -> None:
        prof = profile(svc)
        if prof is None:
            return
        if svc.host_network:
            self.host_admin_ports(svc, prof)
            return
        for port in svc.ports:
            for target, host in port.pairs():
                if host is None and port.published is None:
                    host_text = "an ephemeral host port"
                else:
                    host_text = f"host port {host}"
                if target in prof.admin_ports and port.all_interfaces:
                    self.add(
                        "admin-port-exposed",
                        svc,
                        f"ports[{port.index}]",
                        f"{prof.label} admin port {target} is published on all interfaces "
                        f"({host_text}): anyone who reaches this machine reaches it",
                        f'publish it on loopback: "127.0.0.1:{host or target}:{target}"',
                    )
                    break

    def host_admin_ports(self, svc: Service, prof: ImageProfile) -> None:
        """network_mode: host puts the server's own ports on every interface of the host."""
        if svc.ports:
            self.add(
                "host-network-ports",
                svc,
                "ports",
                f"network_mode: host: Compose discards ports: ({len(svc.ports)} mapping(s)); "
                "the service listens on the host's interfaces on its own ports",
            )
        for listener in listeners(svc, self.compose.base_dir) or []:
            if listener.admin and listener.address is None:
                self.add(
                    "admin-port-exposed",
                    svc,
                    "network_mode",
                    f"{prof.label} admin port {listener.port} listens on every interface of "
                    "the host (network_mode: host): anyone who reaches this machine reaches it",
                    "bind it to loopback with the server's own setting (e.g. --bind 127.0.0.1, "
                    "--web.listen-address=127.0.0.1:9090, GF_SERVER_HTTP_ADDR=127.0.0.1), "
                    'or leave host networking and publish "127.0.0.1:PORT:PORT"',
                )


def _tools(test: tuple[str, ...]) -> list[str]:
    """The binaries a healthcheck runs: argv[0] of CMD, each command word of CMD-SHELL."""
    if test[0] == "CMD":
        return [test[1]]
    try:
        words = shlex.split(" ".join(test[1:]))
    except ValueError:
        return []
    tools, expect_command = [], True
    for word in words:
        if word in ("|", "||", "&&", ";", "|&", "!") or word.endswith(";"):
            expect_command = True
            continue
        if expect_command and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
            if word not in ("exit", "test", "[", "true", "false", "echo", "exec"):
                tools.append(word)
            expect_command = False
    return tools


def _nets(svc: Service) -> str:
    if svc.network_mode:
        return f"network_mode {svc.network_mode}"
    return "networks " + ", ".join(svc.joined_networks)


def _mount_for(svc: Service, data_dir: str) -> Any:
    """The mount holding data_dir: the one on it or on its nearest parent."""
    best = None
    for mount in svc.volumes:
        target = mount.target.rstrip("/") or "/"
        if (data_dir == target or data_dir.startswith(target.rstrip("/") + "/")) and (
            best is None or len(target) > len(best.target)
        ):
            best = mount
    return best


def lint(compose: ComposeFile, file: str | None = None) -> LintReport:
    """Every finding for a parsed Compose file, in file order, plus the startup order."""
    linter = _Linter(compose, file or str(compose.path))
    for svc in compose.services.values():
        linter.healthchecks(svc)
        linter.startup_order(svc)
        linter.networking(svc)
        linter.volumes(svc)
        linter.build_context(svc)
        linter.image(svc)
        linter.secrets(svc)
        linter.privileged(svc)
        linter.admin_ports(svc)
    linter.ports()
    cycle = find_cycle(compose)
    if cycle:
        first = compose.services[cycle[0]]
        linter.add(
            "depends-on-cycle",
            first,
            f"depends_on.{cycle[1]}",
            "depends_on forms a cycle: " + " -> ".join(cycle),
        )
    return LintReport(
        file=linter.file,
        project=compose.project,
        services=len(compose.services),
        findings=linter.findings,
        ignored=linter.ignored,
        startup_order=startup_waves(compose),
    )
