"""Start, inspect and stop the sandbox: real services in a state dir, on ports picked once.

A process is ours when its pid file names it and its start time still matches: `down` never
signals a process that merely reuses an old pid, and `up` never starts a second copy.

`Sandbox.process(service)` is the public process API fault injectors use: the component that
runs a stack service, its pid, and stop / kill -9 / SIGSTOP / SIGCONT / start / restart, each
waiting (by polling) until the process is gone or ready again. Stopping and starting keeps the
component's ports, data dir and the sandbox's stack file.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stackprobe.errors import ConfigError, MissingBinaryError, SandboxError
from stackprobe.sandbox.component import Component, Layout
from stackprobe.sandbox.components import Profile, components_for
from stackprobe.sandbox.components.toxiproxy import through_proxy
from stackprobe.state import state_dir

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 8
# Popen objects of services started by this process: kept so that they are not collected
# (and warned about) while the service runs on after us.
_CHILDREN: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class Status:
    component: str
    pid: int | None
    running: bool
    ready: bool
    ports: dict[str, int]
    log: Path


class Sandbox:
    """The sandbox rooted at `<state dir>/sandbox`."""

    def __init__(
        self, root: Path | None = None, components: tuple[Component, ...] | None = None
    ) -> None:
        self.root = (root or state_dir() / "sandbox").absolute()
        self._fixed = components is not None
        self.profile = self._load_profile()
        self.components = components if components is not None else components_for(self.profile)

    # --- profile -----------------------------------------------------------------------------

    def _load_profile(self) -> Profile:
        path = self.root / "profile.json"
        try:
            doc = json.loads(path.read_text()) if path.is_file() else {}
            return Profile(
                ha=bool(doc.get("ha")), proxies=tuple(str(p) for p in doc.get("proxies") or ())
            )
        except (ValueError, OSError, TypeError, AttributeError) as exc:
            raise SandboxError(
                f"{path}: unreadable ({exc}); remove it and run `stackprobe sandbox up`"
            ) from None

    def set_profile(
        self, ha: bool | None = None, proxies: tuple[str, ...] | None = None
    ) -> Profile:
        """Change what `up` runs: `ha` on or off, the services behind Toxiproxy (kept in
        `<root>/profile.json`, so later commands see the same sandbox)."""
        profile = Profile(
            ha=self.profile.ha if ha is None else ha,
            proxies=self.profile.proxies if proxies is None else tuple(dict.fromkeys(proxies)),
        )
        known = {s for c in components_for(Profile(ha=profile.ha)) for s in self.services_of(c)}
        unknown = [p for p in profile.proxies if p not in known]
        if unknown:
            raise ConfigError(
                f"--proxy: no sandbox service {unknown[0]!r} (services: {', '.join(sorted(known))})"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "profile.json").write_text(
            json.dumps({"ha": profile.ha, "proxies": list(profile.proxies)}) + "\n"
        )
        self.profile = profile
        if not self._fixed:
            self.components = components_for(profile)
        return profile

    @property
    def stack_file(self) -> Path:
        return self.root / "stackprobe.yaml"

    # --- ports -------------------------------------------------------------------------------

    def _ports(self) -> dict[str, int]:
        """Ports picked on the first `up` and reused afterwards."""
        path = self.root / "ports.json"
        try:
            ports: dict[str, int] = json.loads(path.read_text()) if path.is_file() else {}
            if not isinstance(ports, dict) or not all(isinstance(p, int) for p in ports.values()):
                raise ValueError("not a mapping of names to port numbers")
        except (ValueError, OSError) as exc:
            raise SandboxError(
                f"{path}: unreadable ({exc}); remove it and run `stackprobe sandbox up`"
            ) from None
        changed = False
        for comp in self.components:
            for name in comp.port_names:
                key = f"{comp.name}.{name}"
                if key not in ports or (not self._running(comp) and not _port_free(ports[key])):
                    ports[key] = _free_port(set(ports.values()))
                    changed = True
        if changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ports, indent=2, sort_keys=True) + "\n")
        return ports

    def layout(self, comp: Component, ports: dict[str, int] | None = None) -> Layout:
        return Layout(
            dir=self.root / comp.name, ports=ports if ports is not None else self._ports()
        )

    # --- processes ---------------------------------------------------------------------------

    def _pid_file(self, comp: Component) -> Path:
        return self.root / comp.name / "pid"

    def pid_of(self, comp: Component) -> int | None:
        """The pid of our running process for `comp`, or None."""
        try:
            pid_s, start_s = self._pid_file(comp).read_text().split()
            pid = int(pid_s)
        except (OSError, ValueError):
            return None
        return pid if start_time(pid) == start_s else None

    def _running(self, comp: Component) -> bool:
        return self.pid_of(comp) is not None

    def up(self, on_event: Callable[[str], None] = lambda _: None) -> Path:
        """Start what is not running, wait until every component is ready, write the stack file."""
        missing = [c for c in self.components if c.find_binary() is None]
        if missing:
            first = missing[0]
            raise MissingBinaryError(f"{first.binary} is not installed: run {first.install}")
        ports = self._ports()
        self._write_stack(ports)  # now: a `run --sandbox --wait` started with `up` waits on it
        started: set[str] = set()
        for comp in self.components:
            layout = self.layout(comp, ports)
            pid = self.pid_of(comp)
            if pid is not None and process_state(pid) == "T":
                os.killpg(pid, signal.SIGCONT)  # a frozen process left by a killed scenario
                on_event(f"{comp.name}: was stopped with SIGSTOP (pid {pid}); sent SIGCONT")
            if pid is not None and self._command_changed(comp, layout):
                stop_group(pid)
                on_event(f"{comp.name}: stopped (pid {pid}) because its command line changed")
                pid = None
            restarted_deps = (
                started.intersection(comp.requires) if comp.restart_with_requires else set()
            )
            if pid is not None and restarted_deps:
                # a client of a restarted service may sit in a long reconnect back-off
                stop_group(pid)
                on_event(
                    f"{comp.name}: stopped (pid {pid}) because {', '.join(sorted(restarted_deps))} restarted"
                )
                pid = None
            if pid is not None:
                on_event(f"{comp.name}: already running (pid {pid})")
            else:
                self.start_process(comp, layout)
                started.add(comp.name)
                on_event(f"{comp.name}: started (pid {self.pid_of(comp)}), waiting until ready")
            waited = self.wait_ready(comp, layout)
            on_event(f"{comp.name}: ready after {waited:.1f} s")
        self._stop_extras(on_event)
        self._write_stack(ports)
        return self.stack_file

    def _everything(self) -> tuple[Component, ...]:
        """Every component any profile runs: what `down` stops and `up` may leave behind."""
        if self._fixed:
            return self.components
        return components_for(Profile(ha=True, proxies=self.profile.proxies or ("any",)))

    def _command_changed(self, comp: Component, layout: Layout) -> bool:
        recorded = self.root / comp.name / "command.json"
        try:
            before = json.loads(recorded.read_text())
        except (OSError, ValueError):
            return False
        return bool(before != comp.command(layout))

    def _stop_extras(self, on_event: Callable[[str], None]) -> None:
        """Stop what an earlier profile started that this one does not run (pid files kept by
        name in the sandbox root)."""
        names = {c.name for c in self.components}
        for extra in self._everything():
            if extra.name in names:
                continue
            pid = self.pid_of(extra)
            if pid is not None and stop_group(pid):
                self._pid_file(extra).unlink(missing_ok=True)
                on_event(f"{extra.name}: stopped (pid {pid}): not in this profile")

    def start_process(self, comp: Component, layout: Layout | None = None) -> None:
        """Start `comp` (not waiting for readiness) and record its pid and start time."""
        layout = layout or self.layout(comp)
        layout.dir.mkdir(parents=True, exist_ok=True)
        log = (layout.dir / "log").open("ab")
        try:
            command = comp.command(layout)
            proc = subprocess.Popen(
                command,
                cwd=layout.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal does not kill the sandbox
            )
        except OSError as exc:
            raise SandboxError(
                f"{comp.name}: cannot start {comp.binary}: {exc.strerror or exc}"
            ) from None
        finally:
            log.close()
        _CHILDREN.append(proc)
        started = start_time(proc.pid)
        self._pid_file(comp).write_text(f"{proc.pid} {started}\n")
        (layout.dir / "command.json").write_text(json.dumps(command))

    def wait_ready(self, comp: Component, layout: Layout | None = None) -> float:
        """Poll until `comp` is ready; seconds waited (SandboxError when it exits or times out)."""
        layout = layout or self.layout(comp)
        started = time.monotonic()
        delay = 0.05
        while time.monotonic() - started < READY_TIMEOUT:
            if comp.ready(layout):
                return time.monotonic() - started
            if not self._running(comp):
                raise SandboxError(f"{comp.name} exited during start-up; {self._log_tail(comp)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise SandboxError(
            f"{comp.name} not ready after {READY_TIMEOUT:g} s; {self._log_tail(comp)}"
        )

    def log_file(self, comp: Component) -> Path:
        return self.root / comp.name / "log"

    def _log_tail(self, comp: Component) -> str:
        log = self.root / comp.name / "log"
        try:
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            return f"no log at {log}"
        return f"last lines of {log}: " + " | ".join(line.strip() for line in lines)

    def down(self, on_event: Callable[[str], None] = lambda _: None) -> list[str]:
        """Stop exactly the processes we started, dependents first (of every profile)."""
        stopped = []
        everything = (
            self.components
            if self._fixed
            else components_for(Profile(ha=True, proxies=self.profile.proxies or ("-",)))
        )
        for comp in reversed(everything):
            pid = self.pid_of(comp)
            if pid is None:
                self._pid_file(comp).unlink(missing_ok=True)
                continue
            if not stop_group(pid):  # keep the pid file: `up` must not start a second copy
                on_event(f"{comp.name}: pid {pid} did not stop after SIGKILL")
                continue
            self._pid_file(comp).unlink(missing_ok=True)
            stopped.append(comp.name)
            on_event(f"{comp.name}: stopped (pid {pid})")
        return stopped

    def status(self) -> list[Status]:
        ports = self._ports() if self.root.exists() else {}
        result = []
        for comp in self.components:
            pid = self.pid_of(comp)
            layout = Layout(dir=self.root / comp.name, ports=ports)
            result.append(
                Status(
                    component=comp.name,
                    pid=pid,
                    running=pid is not None,
                    ready=pid is not None and comp.ready(layout),
                    ports={
                        n: ports[f"{comp.name}.{n}"]
                        for n in comp.port_names
                        if f"{comp.name}.{n}" in ports
                    },
                    log=layout.dir / "log",
                )
            )
        return result

    def _write_stack(self, ports: dict[str, int]) -> None:
        services: dict[str, Any] = {}
        for comp in self.components:
            services.update(comp.services(self.layout(comp, ports)))
        for name in self.profile.proxies:
            if name in services:
                proxy = next(c for c in self.components if c.name == "toxiproxy")
                services[name] = through_proxy(services[name], name, self.layout(proxy, ports))
        services["stack"] = {"kind": "stack"}  # the stack-level checks (on for the sandbox)
        doc = {"version": 1, "stack": "sandbox", "services": services}
        header = "# written by `stackprobe sandbox up`; use it with `stackprobe run --sandbox`\n"
        self.stack_file.write_text(header + yaml.safe_dump(doc, sort_keys=False))

    # --- the public process API --------------------------------------------------------------

    def component(self, name: str) -> Component:
        """A component by its own name (`redis`) or by a stack service it runs (`cache`)."""
        for comp in self.components:
            if comp.name == name:
                return comp
        for comp in self.components:
            if name in self.services_of(comp):
                return comp
        known = ", ".join(f"{c.name} ({', '.join(self.services_of(c))})" for c in self.components)
        raise ConfigError(f"no sandbox component runs {name!r} (components: {known})")

    def services_of(self, comp: Component) -> tuple[str, ...]:
        """The stack services a component adds to the sandbox's stack file."""
        return tuple(comp.services(Layout(dir=self.root / comp.name, ports=_AnyPort())))

    def process(self, name: str) -> SandboxProcess:
        """The process API of the component that runs `name` (a component or stack service)."""
        return SandboxProcess(self, self.component(name))

    def processes(self) -> dict[str, SandboxProcess]:
        """Every stack service of the sandbox -> the process that runs it."""
        return {
            service: SandboxProcess(self, comp)
            for comp in self.components
            for service in self.services_of(comp)
        }

    def require_running(self) -> Path:
        """The sandbox stack file, or a ConfigError saying how to start the sandbox."""
        if not self.stack_file.is_file() or not any(self._running(c) for c in self.components):
            raise ConfigError(
                f"no sandbox is running in {self.root}: run `stackprobe sandbox up` first"
            )
        return self.stack_file


class _AnyPort(dict[str, int]):
    """Ports for reading a component's service names without picking real ports."""

    def __missing__(self, key: str) -> int:
        return 0


EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000


def _free_port(taken: set[int]) -> int:
    """A free port below the kernel's ephemeral range. Outgoing connections take their local
    port from that range, and one holding a service's port when the service starts makes its
    bind fail (seen: a Consul server's RPC port, on a machine running other tests). Only when
    nothing below the range is free does the kernel pick one (bind to port 0)."""
    try:
        low = int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    pick = random.SystemRandom()
    for _ in range(200 if low > LOWEST_PORT + 1000 else 0):
        port = pick.randrange(LOWEST_PORT, low)
        if port not in taken and _bindable(port):
            return port
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_free(port: int) -> bool:
    """Nobody listens on the port. (A bind test would also fail on TIME_WAIT connections
    left by clients of a service that just died, and move the service to a new port.)"""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":  # a zombie is not running
        return None
    return fields[19]


def process_state(pid: int) -> str | None:
    """The process's state letter (R, S, D, T when stopped by a signal, Z), None when gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def stop_group(pid: int, signals: tuple[tuple[signal.Signals, float], ...] | None = None) -> bool:
    """Signal the process group (SIGTERM, then SIGKILL if it is still there after
    STOP_TIMEOUT), waiting until it is gone; whether it is gone."""
    started = start_time(pid)
    if process_state(pid) == "T":  # a frozen process cannot act on SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)
    for sig, wait in signals or ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if start_time(pid) != started:
                return True
            with contextlib.suppress(ChildProcessError):  # reap it if it is our own child
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.02)
    return start_time(pid) != started


@dataclass(frozen=True)
class SandboxProcess:
    """One sandbox component as a fault injector drives it. Every action waits until it has
    taken effect (gone, frozen, thawed, ready) and raises SandboxError when it cannot."""

    sandbox: Sandbox
    comp: Component

    @property
    def name(self) -> str:
        return self.comp.name

    @property
    def services(self) -> tuple[str, ...]:
        return self.sandbox.services_of(self.comp)

    @property
    def pid(self) -> int | None:
        return self.sandbox.pid_of(self.comp)

    @property
    def log(self) -> Path:
        return self.sandbox.log_file(self.comp)

    def running(self) -> bool:
        return self.pid is not None

    def frozen(self) -> bool:
        pid = self.pid
        return pid is not None and process_state(pid) == "T"

    def ready(self) -> bool:
        return (
            self.running() and not self.frozen() and self.comp.ready(self.sandbox.layout(self.comp))
        )

    def _require_pid(self, action: str) -> int:
        pid = self.pid
        if pid is None:
            raise SandboxError(f"{self.name}: cannot {action}: it is not running")
        return pid

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after the stop timeout); returns once it is gone."""
        grace = ((signal.SIGTERM, self.comp.stop_timeout), (signal.SIGKILL, 2.0))
        if (pid := self.pid) is not None and not stop_group(pid, grace):
            raise SandboxError(f"{self.name}: pid {pid} did not stop after SIGKILL")

    def kill(self) -> None:
        """kill -9 of its process group; returns once it is gone."""
        pid = self._require_pid("kill it")
        if not stop_group(pid, ((signal.SIGKILL, 5.0),)):
            raise SandboxError(f"{self.name}: pid {pid} survived SIGKILL")

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets and answers nothing (a hung server)."""
        pid = self._require_pid("freeze it")
        os.killpg(pid, signal.SIGSTOP)
        self._until(lambda: process_state(pid) == "T", "stopped by SIGSTOP")

    def thaw(self) -> None:
        """SIGCONT after freeze()."""
        pid = self._require_pid("thaw it")
        os.killpg(pid, signal.SIGCONT)
        self._until(lambda: process_state(pid) != "T", "running after SIGCONT")

    def start(self) -> float:
        """Start it if it is not running (same ports, data dir and stack file) and wait until
        it is ready; seconds until ready."""
        if self.frozen():
            self.thaw()
        if not self.running():
            self.sandbox.start_process(self.comp)
        return self.sandbox.wait_ready(self.comp)

    def restart(self) -> float:
        """stop() then start(); seconds from the new start until ready."""
        self.stop()
        return self.start()

    def _until(self, condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise SandboxError(f"{self.name}: not {what} after {timeout:g} s")
            time.sleep(0.01)
