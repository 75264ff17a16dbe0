"""Suite speed: the full sandbox suite's wall time against its slowest check and the sum of
check durations, and the framework's overhead per check against the raw client call.

    python bench/suite_speed.py [--runs 3] [--checks 500] [--json FILE]

1. Starts a sandbox of its own (every component) in a temporary directory and runs
   `stackprobe run --sandbox --format json` `--runs` times: for each run, the command's wall
   time (process start to exit), the run's own `duration_s` (plan to result), the slowest
   check's duration and the sum of every check's duration; the ratios wall / slowest and
   duration / slowest (the target: at most 1.3).
2. Overhead per check: `--checks` copies of a check that sends one PING, run by the Runner
   one at a time (concurrency 1) against the sandbox's Redis, against the same number of raw
   `await client.ping()` calls on the same client: (runner time - raw time) / checks; and the
   runner alone: as many checks that do nothing, on a kind with no I/O.

Prints a table and, with --json, writes the figures. Only services this script started are
touched; the sandbox stops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from stackprobe.check import CheckContext, CheckSpec
from stackprobe.config import ServiceConfig, Stack, StackConfig
from stackprobe.kinds import Kind, Target
from stackprobe.loader import load_stack
from stackprobe.runner import Plan, PlanItem, Runner
from stackprobe.sandbox.manager import Sandbox
from stackprobe.services.redis import KIND as REDIS_KIND
from stackprobe.services.redis import connect_url


def run_suite(state: Path) -> dict[str, Any]:
    env = {**os.environ, "STACKPROBE_STATE_DIR": str(state), "NO_COLOR": "1"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "stackprobe", "run", "--sandbox", "--format", "json"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    doc = json.loads(proc.stdout)
    durations = {f"{r['check']}[{r['service']}]": r["duration_s"] for r in doc["results"]}
    slowest = max(durations, key=lambda k: durations[k])
    return {
        "exit": proc.returncode,
        "wall_s": round(wall, 3),
        "duration_s": doc["duration_s"],
        "checks": len(durations),
        "slowest": slowest,
        "slowest_s": durations[slowest],
        "sum_s": round(sum(durations.values()), 3),
        "wall_over_slowest": round(wall / durations[slowest], 3),
        "duration_over_slowest": round(doc["duration_s"] / durations[slowest], 3),
        "summary": doc["summary"],
        "not_passed": [
            f"{r['check']}[{r['service']}] {r['outcome']}: {r['message']}"
            for r in doc["results"]
            if r["outcome"] in ("failed", "error")
        ],
    }


async def overhead(stack_file: Path, checks: int) -> dict[str, float]:
    stack = load_stack(stack_file)
    url = stack.service("cache").url or ""

    async def ping(ctx: CheckContext[Any]) -> str:
        await ctx.client.ping()
        return "pong"

    spec = CheckSpec(
        kind="redis", capability="connectivity", name="bench_ping", title="one PING", fn=ping
    )
    plan = Plan(
        stack=stack,
        items=tuple(PlanItem(spec, "cache") for _ in range(checks)),
        services={"cache": ("redis", REDIS_KIND.capabilities)},
    )
    started = time.perf_counter()
    result = await Runner(plan, concurrency=1).run()
    runner_s = time.perf_counter() - started
    assert result.summary.passed == checks, result.summary
    client = connect_url(url)
    try:
        await client.ping()
        started = time.perf_counter()
        for _ in range(checks):
            await client.ping()
        raw_s = time.perf_counter() - started
    finally:
        await client.aclose()
    return {
        "checks": checks,
        "runner_s": round(runner_s, 4),
        "raw_s": round(raw_s, 4),
        "per_check_ms": round((runner_s - raw_s) / checks * 1000, 3),
        "raw_ping_ms": round(raw_s / checks * 1000, 3),
        "noop_check_ms": round(await noop_overhead(stack, checks) * 1000, 3),
    }


async def noop_overhead(stack: Stack, checks: int) -> float:
    """Seconds per check of the runner alone: a check that does nothing, on a kind whose
    client is a string (no I/O at all), `checks` of them one at a time."""

    @asynccontextmanager
    async def connect(target: Target) -> AsyncIterator[str]:
        yield "client"

    kind: Kind[str] = Kind(name="noop", description="", capabilities=("a",), connect=connect)

    async def nothing(ctx: CheckContext[Any]) -> str:
        return "ok"

    spec = CheckSpec(kind="noop", capability="a", name="nothing", title="nothing", fn=nothing)
    services = {"s": ServiceConfig(kind="noop", url="noop://h")}
    plan = Plan(
        stack=Stack(path=stack.path, config=StackConfig(services=services)),
        items=tuple(PlanItem(spec, "s") for _ in range(checks)),
        services={"s": ("noop", ("a",))},
    )
    started = time.perf_counter()
    await Runner(plan, kinds={"noop": kind}, concurrency=1).run()
    return (time.perf_counter() - started) / checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--checks", type=int, default=500)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stackprobe-bench-") as tmp:
        state = Path(tmp)
        box = Sandbox(root=state / "sandbox")
        box.up()
        try:
            runs = [run_suite(state) for _ in range(args.runs)]
            per_check = asyncio.run(overhead(box.stack_file, args.checks))
        finally:
            box.down()
    print(
        f"{'run':>3} {'exit':>4} {'checks':>6} {'wall s':>7} {'run s':>6} {'slowest s':>9} {'sum s':>7} {'wall/slowest':>12} {'run/slowest':>11}  slowest check"
    )
    for i, r in enumerate(runs, 1):
        print(
            f"{i:>3} {r['exit']:>4} {r['checks']:>6} {r['wall_s']:>7.2f} {r['duration_s']:>6.2f} {r['slowest_s']:>9.2f} {r['sum_s']:>7.2f} {r['wall_over_slowest']:>12.2f} {r['duration_over_slowest']:>11.2f}  {r['slowest']}"
        )
    for r in runs:
        for line in r["not_passed"]:
            print(f"  not passed: {line}")
    median = {
        k: statistics.median(r[k] for r in runs)
        for k in (
            "wall_s",
            "duration_s",
            "slowest_s",
            "sum_s",
            "wall_over_slowest",
            "duration_over_slowest",
        )
    }
    print(
        f"median: wall {median['wall_s']:.2f} s, run {median['duration_s']:.2f} s, slowest check {median['slowest_s']:.2f} s, "
        f"sum of checks {median['sum_s']:.2f} s; wall/slowest {median['wall_over_slowest']:.2f}, run/slowest {median['duration_over_slowest']:.2f}"
    )
    print(f"overhead per check (runner, concurrency 1, {per_check['checks']} checks): {per_check['per_check_ms']:.3f} ms "
          f"beside a raw PING of {per_check['raw_ping_ms']:.3f} ms; a check that does nothing costs {per_check['noop_check_ms']:.3f} ms")  # fmt: skip
    figures = {"runs": runs, "median": median, "overhead": per_check}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
