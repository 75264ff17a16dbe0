"""Redis load accuracy: stackprobe's figures beside redis-benchmark's, on one Redis, in one run.

    python bench/redis_accuracy.py [--duration 5] [--concurrency 16] [--json FILE]

Starts a Redis of its own (the sandbox's redis component, RDB + AOF as the sandbox runs it) in
a temporary directory, then, each time as a user runs it (`python -m stackprobe load ...`,
JSON report, no telemetry):

(a) maximum throughput: `stackprobe load --max --concurrency C` (get_set: 90 % GET, 10 % SET)
    in-process, on 1 Locust worker and on 2, beside `redis-benchmark -c C -t get,set` without
    pipelining (-P 1); the ratio is stackprobe's ops/s over redis-benchmark's GET rps.
(b) latency at 2,000 ops/s: `stackprobe load --rate 2000` with one lane (--concurrency 1) and
    with C lanes, p50/p99 from each operation's intended start and its service time, beside
    `redis-benchmark -c 1 -t get` (closed loop, one connection) p50/p99.
(c) a deliberately overloaded rate (--rate 100000): stackprobe must flag itself
    generator-bound.

Prints a table and the JSON of every figure. Only the Redis this script started is loaded, on
127.0.0.1, and it stops at the end.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from stackprobe.sandbox.components.redis import REDIS
from stackprobe.sandbox.manager import Sandbox


def stackprobe_load(stack: Path, *args: str) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "stackprobe", "load", "cache", "-c", str(stack), "--format", "json",
         "--no-telemetry", "--allow-disruption", *args],
        env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    wall = time.perf_counter() - started
    try:
        (result,) = json.loads(proc.stdout)["results"]
    except (ValueError, KeyError) as exc:
        raise SystemExit(
            f"stackprobe load {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}"
        ) from exc
    e = result["evidence"]
    return {
        "args": " ".join(args),
        "exit": proc.returncode,
        "outcome": result["outcome"],
        "wall_s": round(wall, 2),
        "rate": e["overall"]["rate"],
        "p50_ms": e["overall"]["p50_ms"],
        "p99_ms": e["overall"]["p99_ms"],
        "service_p50_ms": e["service_time"]["p50_ms"],
        "service_p99_ms": e["service_time"]["p99_ms"],
        "errors": e["overall"]["errors"],
        "generator_bound": e["generator"]["bound"],
        "generator_reason": e["generator"]["reason"],
        "busy_share": [p["busy_share"] for p in e["generator"]["processes"]],
        "message": result["message"],
    }


def redis_benchmark(
    port: int, clients: int, requests: int, tests: str
) -> dict[str, dict[str, float]]:
    proc = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n", str(requests),
         "-t", tests, "-P", "1", "--csv"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    return {
        row["test"]: {
            "rps": float(row["rps"]),
            "p50_ms": float(row["p50_latency_ms"]),
            "p99_ms": float(row["p99_latency_ms"]),
        }
        for row in rows
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    c, d = args.concurrency, f"{args.duration:g}"
    with tempfile.TemporaryDirectory(prefix="stackprobe-bench-") as tmp:
        box = Sandbox(root=Path(tmp) / "sandbox", components=(REDIS,))
        box.up()
        try:
            port = box.layout(REDIS).port("redis")
            stack = Path(tmp) / "stackprobe.yaml"
            stack.write_text(yaml.safe_dump({"version": 1, "stack": "bench", "services": {
                "cache": {"kind": "redis", "url": f"redis://127.0.0.1:{port}/0", "disruption": "allowed"}}}))  # fmt: skip
            figures: dict[str, Any] = {"concurrency": c, "duration_s": args.duration}
            bench_max = redis_benchmark(port, c, 200_000, "get,set")
            figures["max"] = {
                "redis_benchmark": bench_max,
                "in_process": stackprobe_load(stack, "--max", "--duration", d, "--concurrency", str(c)),
                "workers_1": stackprobe_load(stack, "--max", "--duration", d, "--concurrency", str(c), "--workers", "1"),
                "workers_2": stackprobe_load(stack, "--max", "--duration", d, "--concurrency", str(c), "--workers", "2"),
            }  # fmt: skip
            bench_c1 = redis_benchmark(port, 1, 20_000, "get")
            figures["at_2000"] = {
                "redis_benchmark_c1": bench_c1["GET"],
                "one_lane": stackprobe_load(
                    stack, "--rate", "2000", "--duration", d, "--concurrency", "1"
                ),
                "lanes": stackprobe_load(
                    stack, "--rate", "2000", "--duration", d, "--concurrency", str(c)
                ),
            }
            figures["overloaded"] = stackprobe_load(
                stack, "--rate", "100000", "--duration", "3", "--concurrency", str(c)
            )
        finally:
            box.down()
    get = figures["max"]["redis_benchmark"]["GET"]["rps"]
    print(
        f"(a) maximum throughput, concurrency {c}, no pipelining (redis-benchmark GET {get:,.0f} rps, SET {figures['max']['redis_benchmark']['SET']['rps']:,.0f} rps)"
    )
    print(
        f"    {'generator':<22} {'ops/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'bound':>6}  busy"
    )
    for key, label in (
        ("in_process", "stackprobe in-process"),
        ("workers_1", "stackprobe 1 worker"),
        ("workers_2", "stackprobe 2 workers"),
    ):
        r = figures["max"][key]
        r["ratio"] = round(r["rate"] / get, 3)
        print(
            f"    {label:<22} {r['rate']:>9,.0f} {r['ratio']:>6.2f} {r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} {r['generator_bound']!s:>6}  {r['busy_share']}"
        )
    b = figures["at_2000"]["redis_benchmark_c1"]
    print(
        "(b) latency at 2,000 ops/s (stackprobe: from each operation's intended start; service time in brackets)"
    )
    print(
        f"    redis-benchmark -c 1 (closed loop, {b['rps']:,.0f} rps)  p50 {b['p50_ms']:.3f} ms  p99 {b['p99_ms']:.3f} ms"
    )
    for key, label in (
        ("one_lane", "stackprobe --concurrency 1"),
        ("lanes", f"stackprobe --concurrency {c}"),
    ):
        r = figures["at_2000"][key]
        r["p50_ratio"] = round(r["p50_ms"] / b["p50_ms"], 2) if b["p50_ms"] else None
        print(
            f"    {label:<27} {r['rate']:>7,.0f} ops/s  p50 {r['p50_ms']:.3f} ({r['service_p50_ms']:.3f}) ms  p99 {r['p99_ms']:.3f} ({r['service_p99_ms']:.3f}) ms  p50 ×{r['p50_ratio']} of redis-benchmark's  bound {r['generator_bound']}"
        )
    o = figures["overloaded"]
    print(
        f"(c) --rate 100000: achieved {o['rate']:,.0f} ops/s, generator-bound {o['generator_bound']} (exit {o['exit']}, {o['outcome']}): {o['generator_reason']}"
    )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if o["generator_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
