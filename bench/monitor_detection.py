"""Monitor benchmark: failure detection latency and CPU use, beside a native baseline.

    python bench/monitor_detection.py [--kills 5] [--cpu-seconds 30]

1. Starts a sandbox of its own (Redis + a Celery worker) in a temporary directory and
   `stackprobe serve` on it (--interval 1, --down-after 2, --grace 0). Kills Redis `--kills`
   times; for each kill, the time until /api/status shows `cache` down (polled every 20 ms).
   Baseline in the same run: a `redis-cli ping` loop at the same 1 s interval that declares
   down after 2 failed pings, the detector a shell script would be.
2. CPU: the serve process's user+system CPU over `--cpu-seconds` at a 1 s interval, against the
   same sandbox, measured from /proc, next to the baseline loop's.

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
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from stackprobe.sandbox.components.redis import CELERY_WORKER, REDIS
from stackprobe.sandbox.manager import Sandbox

TICKS = os.sysconf("SC_CLK_TCK")


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


BASELINE = """
port=$1; fails=0; state=up
while true; do
  if redis-cli -p "$port" ping >/dev/null 2>&1; then fails=0; state=up; else fails=$((fails+1)); fi
  if [ "$fails" -ge 2 ] && [ "$state" = up ]; then state=down; echo "down $(date +%s.%N)"; fi
  sleep 1
done
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--cpu-seconds", type=float, default=30.0)
    parser.add_argument(
        "--redis-only", action="store_true", help="only Redis + worker, not every sandbox service"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="stackprobe-bench-"))
    box = Sandbox(
        root=root / "sandbox", components=(REDIS, CELERY_WORKER) if args.redis_only else None
    )
    box.up()
    port = free_port()
    env = {**os.environ, "STACKPROBE_STATE_DIR": str(root / "state")}
    serve = subprocess.Popen(
        [sys.executable, "-m", "stackprobe", "serve", "-c", str(box.stack_file), "--port", str(port),
         "--interval", "1", "--down-after", "2", "--grace", "0", "--full-interval", "3600"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    redis_port = int(box.stack_file.read_text().split("redis://127.0.0.1:")[1].split("/")[0])
    baseline = subprocess.Popen(
        ["bash", "-c", BASELINE, "baseline", str(redis_port)], stdout=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"

    def cache_state() -> str:
        try:
            return str(
                httpx.get(url + "/api/status", timeout=1).json()["services"]["cache"]["state"]
            )
        except (httpx.HTTPError, KeyError, ValueError):
            return ""

    try:
        wait(lambda: cache_state() == "up", 30, "cache up")
        monitor_s, baseline_s = [], []
        for i in range(args.kills):
            pid = int((box.root / "redis" / "pid").read_text().split()[0])
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            monitor_s.append(wait(lambda: cache_state() == "down", 10, "cache down"))
            line = baseline.stdout.readline() if baseline.stdout else ""
            baseline_s.append(float(line.split()[1]) - killed)
            box.up()
            wait(
                lambda: cache_state() not in ("down", ""),
                30,
                f"cache alive (last state {cache_state()!r})",
            )
            print(
                f"kill {i + 1}: monitor {monitor_s[-1]:.2f} s, redis-cli loop {baseline_s[-1]:.2f} s",
                flush=True,
            )
        print(f"\nfailure detection (interval 1 s, down after 2 failures), {args.kills} kills:")
        print(
            f"  stackprobe serve  median {statistics.median(monitor_s):.2f} s  max {max(monitor_s):.2f} s"
        )
        print(
            f"  redis-cli loop    median {statistics.median(baseline_s):.2f} s  max {max(baseline_s):.2f} s"
        )
        serve_cpu, base_cpu, started = (
            cpu_seconds(serve.pid),
            cpu_seconds(baseline.pid),
            time.monotonic(),
        )
        time.sleep(args.cpu_seconds)
        wall = time.monotonic() - started
        serve_pct = 100 * (cpu_seconds(serve.pid) - serve_cpu) / wall
        base_pct = (
            100 * (cpu_seconds(baseline.pid) - base_cpu) / wall
        )  # the bash loop itself, not its children
        print(
            f"\nCPU over {wall:.0f} s at a 1 s interval ({len(box.components)} sandbox services):"
        )
        print(f"  stackprobe serve  {serve_pct:.2f} % of one core")
        print(f"  redis-cli loop    {base_pct:.2f} % of one core (bash and its redis-cli children)")
    finally:
        serve.send_signal(signal.SIGINT)
        baseline.kill()
        serve.wait(15)
        baseline.wait(5)
        box.down()


if __name__ == "__main__":
    main()
