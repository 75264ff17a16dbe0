"""Consul agents of a test's own, on free ports: never the session sandbox's agent.

Used where a test must stop the agent, turn ACLs on, or run a server that never elects a
leader. Each agent is started from the installed `consul` binary, polled until it answers
(never a fixed sleep), and killed by its own pid.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stackprobe.sandbox.component import Layout
from stackprobe.sandbox.components.consul import PORTS, consul_command, leader_elected
from tests.conftest import free_port, need_binary

START_TIMEOUT = 20.0


@dataclass
class ConsulAgent:
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def dns(self) -> str:
        return f"127.0.0.1:{self.ports['dns']}"

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"X-Consul-Token": token} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=5.0)

    def kill(self) -> None:
        """SIGKILL: the agent gets no chance to answer anything any more."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/status/leader", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def start_agent(
    workdir: Path,
    *extra: str,
    dev: bool = True,
    ready: Callable[[str], bool] = leader_elected,
) -> ConsulAgent:
    """A `consul agent -dev` (or, with dev=False, a server given `extra`) on free ports."""
    need_binary("consul", "scripts/install-services consul")
    workdir.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    ports: dict[str, int] = {}
    for name in PORTS:
        while (port := free_port()) in taken:
            pass
        taken.add(port)
        ports[name] = port
    layout = Layout(dir=workdir, ports={f"consul.{n}": p for n, p in ports.items()})
    command = consul_command(layout, node=f"stackprobe-test-{secrets.token_hex(3)}")
    if not dev:
        command.remove("-dev")
    log = workdir / "consul.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*command, *extra], cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    agent = ConsulAgent(proc, ports, log)
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.02
    while not ready(agent.url):
        if proc.poll() is not None or time.monotonic() > deadline:
            agent.stop()
            pytest.fail(f"consul agent did not start: {log.read_text()[-2000:]}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
    return agent


def start_leaderless_server(workdir: Path) -> ConsulAgent:
    """A real server that expects 3 servers and is alone: it answers but never elects a leader."""
    return start_agent(
        workdir,
        "-server",
        "-bootstrap-expect", "3",
        "-data-dir", str(workdir / "data"),
        dev=False,
        ready=_answers,
    )  # fmt: skip


def start_acl_agent(workdir: Path, master_token: str) -> ConsulAgent:
    """A dev agent with ACLs on and default deny; `master_token` may do everything."""
    hcl = (
        'acl { enabled = true, default_policy = "deny", '
        f'tokens {{ master = "{master_token}", agent = "{master_token}" }} }}'
    )
    return start_agent(workdir, "-hcl", hcl)
