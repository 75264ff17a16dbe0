"""Monitor benchmark: time from kill -9 to `down`, held connections beside probes only; CPU;
and an idle run that must see no false `down`.

    python bench/monitor_detection.py [--kills 10] [--idle-seconds 60]

1. Starts a sandbox of its own (Redis, a Celery worker on it, a Consul agent) in a temporary
   directory and two `stackprobe serve` on it side by side, both at --interval 1,
   --down-after 2, --grace 0: one with held connections (the default), one with --no-held
   (probes only, the monitor before held connections).
2. Kills Redis (`cache`), then Consul (`discovery`), `--kills` times each with SIGKILL; for
   each kill, the time until each monitor's /api/status shows the service `down` (both polled
   every 10 ms, in a thread each), then restarts it and waits until both see it alive.
3. Idle: `--idle-seconds` with nothing killed; both monitors' /api/status are polled every
   second and any service not alive (down, or no verdict) counts as a false `down`; the CPU each serve
   process used over that time (user+system, from /proc), and the closes of held connections
   the server made by itself (recycled, not confirmed by the re-probe).

Only 127.0.0.1 services this script started are touched; everything stops by itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import httpx

from stackprobe.sandbox.components.consul import CONSUL
from stackprobe.sandbox.components.redis import CELERY_WORKER, REDIS
from stackprobe.sandbox.manager import Sandbox

TICKS = os.sysconf("SC_CLK_TCK")
KILLED = {"cache": "redis", "discovery": "consul"}  # service -> sandbox component
MODES = ("held", "probes only")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS  # utime, stime, and reaped children's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if cond():
            return time.monotonic() - started
        time.sleep(poll)
    raise SystemExit(f"{what} not seen within {timeout} s")


class Monitor:
    def __init__(self, mode: str, stack: Path, state: Path, *extra: str) -> None:
        self.mode = mode
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(timeout=1)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stackprobe", "serve", "-c", str(stack), "--port", str(port),
             "--interval", "1", "--down-after", "2", "--grace", "0", "--full-interval", "3600",
             "--flow-interval", "0", *extra],
            env={**os.environ, "STACKPROBE_STATE_DIR": str(state)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def status(self) -> dict[str, object]:
        try:
            return dict(self.http.get(self.url + "/api/status").json())
        except (httpx.HTTPError, ValueError):
            return {}

    def state(self, service: str) -> str:
        services = self.status().get("services")
        return str(services[service]["state"]) if isinstance(services, dict) else ""

    def holds(self, service: str) -> bool:
        held = self.status().get("held")
        return isinstance(held, list) and service in held

    def alive(self, service: str) -> bool:
        services = self.status().get("services")
        return isinstance(services, dict) and services[service]["alive"] is True

    def time_to_down(self, service: str, killed: float, out: dict[str, float]) -> None:
        while time.monotonic() - killed < 15:
            if self.state(service) == "down":
                out[self.url] = time.monotonic() - killed
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.http.close()


def all_alive(monitors: Iterable[Monitor], services: tuple[str, ...]) -> bool:
    """Alive in every monitor, and held by the one that holds connections: a kill before
    the held connection is open again would measure the probes."""
    return all(m.alive(s) and (m.holds(s) or m.mode != "held") for m in monitors for s in services)


def line(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<12} no figure"
    return (
        f"  {label:<12} median {statistics.median(values):.3f} s  max {max(values):.3f} s"
        f"  min {min(values):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=10, help="kills per service (10)")
    parser.add_argument(
        "--idle-seconds", type=float, default=60.0, help="idle run: CPU and false downs (60)"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="stackprobe-bench-"))
    box = Sandbox(root=root / "sandbox", components=(REDIS, CELERY_WORKER, CONSUL))
    box.up()
    monitors = {
        "held": Monitor("held", box.stack_file, root / "state-held"),
        "probes only": Monitor("probes only", box.stack_file, root / "state-probes", "--no-held"),
    }
    try:
        wait(lambda: all_alive(monitors.values(), tuple(KILLED)), 60, "every service up")
        figures: dict[str, dict[str, list[float]]] = {s: {k: [] for k in MODES} for s in KILLED}
        for service, component in KILLED.items():
            proc = box.process(component)
            for i in range(args.kills):
                pid = proc.pid
                assert pid is not None
                seen: dict[str, float] = {}
                killed = time.monotonic()
                os.killpg(pid, signal.SIGKILL)
                pollers = [
                    threading.Thread(target=m.time_to_down, args=(service, killed, seen))
                    for m in monitors.values()
                ]
                for t in pollers:
                    t.start()
                for t in pollers:
                    t.join()
                for mode, m in monitors.items():
                    if m.url in seen:
                        figures[service][mode].append(seen[m.url])
                took = "  ".join(f"{mode} {seen.get(m.url, float('nan')):.3f} s"
                                 for mode, m in monitors.items())  # fmt: skip
                print(f"kill -9 {component} {i + 1}: {took}", flush=True)
                proc.start()
                wait(partial(all_alive, monitors.values(), (service,)), 30, f"{service} alive")
        print(f"\ntime from kill -9 to `down` in /api/status ({args.kills} kills each;"
              " interval 1 s, down after 2):")  # fmt: skip
        for service, component in KILLED.items():
            print(f" {component} ({service}):")
            for mode in MODES:
                print(line(mode, figures[service][mode]))

        before = {mode: cpu_seconds(m.proc.pid) for mode, m in monitors.items()}
        closes = {mode: int(str(m.status().get("held_closes", 0))) for mode, m in monitors.items()}
        started = time.monotonic()
        false_downs = {mode: 0 for mode in MODES}
        while time.monotonic() - started < args.idle_seconds:
            for mode, m in monitors.items():
                services = m.status().get("services")
                if isinstance(services, dict):
                    false_downs[mode] += sum(s["alive"] is not True for s in services.values())
            time.sleep(1)
        wall = time.monotonic() - started
        print(f"\nidle {wall:.0f} s ({len(box.components)} sandbox services, interval 1 s):")
        for mode, m in monitors.items():
            pct = 100 * (cpu_seconds(m.proc.pid) - before[mode]) / wall
            recycled = int(str(m.status().get("held_closes", 0))) - closes[mode]
            print(f"  {mode:<12} CPU {pct:.2f} % of one core, not-alive states seen "
                  f"{false_downs[mode]}, held connections closed by the server {recycled}")  # fmt: skip
    finally:
        for m in monitors.values():
            m.stop()
        box.down()


if __name__ == "__main__":
    main()
