"""Shared fixtures: the real sandbox (started once per session) and a CLI runner.

Rule 11: in CI (CI=true) a test that needs a real service fails when its binary is missing;
elsewhere it skips with the install command in the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackprobe.config import Stack
from stackprobe.loader import load_stack
from stackprobe.sandbox.manager import Sandbox


def need_binary(name: str, install: str) -> str:
    """The binary's path; fail in CI, skip elsewhere, when it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: run {install}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class RunningSandbox:
    sandbox: Sandbox
    state_dir: Path
    stack: Stack

    @property
    def redis_url(self) -> str:
        url = self.stack.service("cache").url
        assert url is not None
        return url


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    need_binary("redis-server", "scripts/install-services redis")
    need_binary("consul", "scripts/install-services consul")
    state = tmp_path_factory.mktemp("state")
    box = Sandbox(root=state / "sandbox")
    try:
        box.up()
        yield RunningSandbox(box, state, load_stack(box.stack_file))
    finally:
        box.down()


INTERRUPT_GRACE = 120.0  # a timed-out CLI run gets this long to roll back after Ctrl-C


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(tmp_path: Path) -> CliRunner:
    return CliRunner(state_dir=tmp_path / "state", cwd=tmp_path)


@dataclass
class CliRunner:
    """Runs `stackprobe` as a user does: a separate process, real argv, real exit code."""

    state_dir: Path
    cwd: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STACKPROBE_")}
        env.update(STACKPROBE_STATE_DIR=str(self.state_dir), NO_COLOR="1", COLUMNS="120")
        env.update(extra)
        return env

    def __call__(self, *args: str, timeout: float = 120, **env: str) -> CliResult:
        """A run past `timeout` is interrupted as a user would (Ctrl-C: its cleanups and
        rollbacks run) and the test fails with what it had printed, instead of dying
        silently at pytest's own timeout."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "stackprobe", *args],
            cwd=self.cwd,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                stdout, stderr = proc.communicate(timeout=INTERRUPT_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            pytest.fail(
                f"stackprobe {' '.join(args)} still running after {timeout:g} s; interrupted "
                f"(exit {proc.returncode}). stderr:\n{stderr[-4000:]}\nstdout:\n{stdout[-4000:]}"
            )
        return CliResult(proc.returncode, stdout, stderr)

    def use_sandbox(self, running: RunningSandbox) -> None:
        """Point this runner's state dir at the session sandbox (so --sandbox finds it)."""
        self.state_dir = running.state_dir


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(binary: str, workdir: Path, port: int | None = None) -> Iterator[int]:
    """A real Redis-protocol server (`binary`: redis-server or valkey-server) of the test's own
    that persists nothing (`--save "" --appendonly no`): its port, stopped on exit."""
    import time

    import redis

    port = port or free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"bare {binary} did not start")
            time.sleep(0.05)
    client.close()
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def bare_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server of the test's own that persists nothing (`--save "" --appendonly no`)."""
    binary = need_binary("redis-server", "scripts/install-services redis")
    with redis_server(binary, tmp_path_factory.mktemp("bare-redis")) as port:
        yield port
