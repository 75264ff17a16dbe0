"""`--workers N`: the load on Locust's distributed runner, driven from the check.

The check starts the master (`python -m stackprobe.load.locust.master`) and, on this machine,
`local_workers` workers (`python -m stackprobe.load.locust.worker`, default all N); the rest
join from other machines with `stackprobe load-worker --master HOST:PORT -c stack.yaml`. The
master's JSON lines become live ticks and, at the end, the merged timeline. Both processes
start in their own session (the terminal's Ctrl-C reaches only the CLI, whose cleanups then
send them SIGTERM: workers stop, remove what they created, and exit). Locust is never
imported here: this module runs in the CLI's asyncio process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from stackprobe.check import CheckContext
from stackprobe.errors import ConfigError, ServiceError
from stackprobe.load.engine import DRAIN_S, Tick
from stackprobe.load.timeline import Timeline
from stackprobe.load.workload import Workload


class LoadRequest(Protocol):
    """What the distributed run needs of `stackprobe load`'s request (services/stack_load)."""

    @property
    def service(self) -> str: ...
    @property
    def rate(self) -> float | None: ...
    @property
    def duration(self) -> float: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def workers(self) -> int: ...
    @property
    def local_workers(self) -> int | None: ...
    @property
    def master_bind(self) -> str: ...


JOIN_TIMEOUT = 60.0
SETUP_GRACE = 90.0
STOP_TIMEOUT = 35.0  # a worker's cleanups (30 s) and exit
LOG_TAIL = 6


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--master-bind: {text!r} is not HOST:PORT (e.g. 0.0.0.0:5557)")
    return host or "127.0.0.1", int(port)


ALL_INTERFACES = ("*", "0.0.0.0", "")  # noqa: S104 - names to recognise, nothing binds here


def _local(host: str) -> str:
    """The address a worker on this machine connects to."""
    return "127.0.0.1" if host in ALL_INTERFACES else host


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((_local(host), 0))
        return int(sock.getsockname()[1])


def _log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="stackprobe-load-"))


def _remove(logs: Path) -> None:
    for log in logs.iterdir():
        log.unlink()
    logs.rmdir()


def _worker_tails(logs: Path) -> str:
    return "; ".join(t for p in sorted(logs.glob("worker-*.log")) if (t := _tail(p)))


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines if line.strip())


def _open_log(path: Path) -> BinaryIO:
    return path.open("wb")


def _absolute(path: Path) -> Path:
    return Path(path).resolve()


async def _spawn(
    log: Path, module: str, args: list[str], stdout: int
) -> asyncio.subprocess.Process:
    """`python -m module args` in its own session (the terminal's Ctrl-C stays with the CLI,
    whose cleanups stop it), stderr to `log`."""
    err = _open_log(log)
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args,
            stdout=stdout, stderr=err, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    finally:
        err.close()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def run_distributed(
    ctx: CheckContext[Any],
    request: LoadRequest,
    chosen: Workload,
    on_tick: Callable[[Tick], None],
) -> Timeline:
    host, port = parse_bind(request.master_bind)
    port = port or _free_port(host)
    local = request.workers if request.local_workers is None else request.local_workers
    logs = _log_dir()
    profile = {
        "service": request.service,
        "workload": chosen.name,
        "rate": request.rate,
        "duration": request.duration,
        "concurrency": request.concurrency,
        "run_id": ctx.run_id,
    }
    procs: list[asyncio.subprocess.Process] = []

    async def stop_all() -> None:
        for proc in reversed(procs):  # workers first: they clean up, then the master
            await _stop(proc)
        _remove(logs)

    ctx.cleanup(stop_all, "stop the Locust master and workers")
    master_log = logs / "master.log"
    master = await _spawn(
        master_log,
        "stackprobe.load.locust.master",
        [
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(request.workers),
            "--profile",
            json.dumps(profile),
        ],
        stdout=asyncio.subprocess.PIPE,
    )
    procs.append(master)
    assert master.stdout is not None
    stack_file = str(_absolute(ctx.stack.path))
    for i in range(local):
        procs.append(
            await _spawn(
                logs / f"worker-{i}.log",
                "stackprobe.load.locust.worker",
                ["--master", f"{_local(host)}:{port}", "-c", stack_file],
                stdout=asyncio.subprocess.DEVNULL,
            )
        )
    ctx.evidence["locust"] = {"master": f"{host}:{port}", "local_workers": local}
    budget = JOIN_TIMEOUT + request.duration + DRAIN_S + SETUP_GRACE + 10
    result: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(budget):
            while line := await master.stdout.readline():
                message = json.loads(line)
                if "tick" in message:
                    t = message["tick"]
                    on_tick(
                        Tick(
                            second=int(t["elapsed_s"]),
                            elapsed_s=float(t["elapsed_s"]),
                            ops=int(t["ops"]),
                            errors=int(t["errors"]),
                            p50_ms=float(t["p50_ms"]),
                            p99_ms=float(t["p99_ms"]),
                            total_ops=int(t["total_ops"]),
                            total_errors=int(t["total_errors"]),
                            target_rate=request.rate,
                        )
                    )
                elif "result" in message:
                    result = message["result"]
                elif "error" in message:
                    raise ServiceError(f"Locust master: {message['error']}")
    except TimeoutError:
        raise ServiceError(f"the distributed load did not finish within {budget:g} s") from None
    except ValueError:
        raise ServiceError(f"Locust master: unreadable output; {_tail(master_log)}") from None
    if result is None:
        worker_logs = _worker_tails(logs)
        raise ServiceError(
            f"Locust master ended without a result: {_tail(master_log) or 'no output'}"
            + (f"; workers: {worker_logs}" if worker_logs else "")
        )
    ctx.evidence["lost_workers"] = result.get("lost", {})
    if result.get("cleanup_problems"):
        ctx.evidence["worker_cleanup_problems"] = result["cleanup_problems"]
    timeline = Timeline.from_json(result["timeline"])
    if not timeline.seconds:
        lost = "; ".join(f"{k}: {v}" for k, v in result.get("lost", {}).items())
        raise ServiceError(f"no worker reported any second of load ({lost or 'none joined'})")
    return timeline
