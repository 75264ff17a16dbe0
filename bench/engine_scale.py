"""Engine scale: a run over many unreachable Redis services (connection refused), where the
cost is the engine's own: wall time, peak memory and the overhead per check, per size.

    python bench/engine_scale.py [--sizes 100,400,1000,2000] [--json FILE] [--profile FILE]

For each size N, a child process builds a stack of N Redis services on 127.0.0.1 ports that
refuse connections (checked before the run: nothing listens there), plans every Redis check
(14 per service) and runs them with the runner's defaults (concurrency 16, liveness gate).
The child reports the run's wall time, its peak RSS (`resource.getrusage`, `ru_maxrss`) and
wall time / checks. A child per size keeps each peak its own. With `--profile FILE` the
largest size runs under cProfile and its stats are written to FILE.

Targets (issue 16): 2,000 services (28,000 checks) in under 20 s and 200 MB, cost linear in
checks. Nothing listens on the ports, so nothing outside this process is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PORT_BASE = 20000  # below the kernel's ephemeral range: no outgoing connection holds them


def refused_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that refuse a connection now."""
    ports: list[int] = []
    port = PORT_BASE
    while len(ports) < count and port < 65535:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                ports.append(port)
        port += 1
    if len(ports) < count:
        raise SystemExit(f"only {len(ports)} refusing ports found from {PORT_BASE}")
    return ports


def write_stack(directory: Path, size: int) -> Path:
    lines = ["version: 1", f"stack: scale-{size}", "services:"]
    for i, port in enumerate(refused_ports(size)):
        lines.append(f"  cache-{i}: {{kind: redis, url: 'redis://127.0.0.1:{port}/0'}}")
    path = directory / "stackprobe.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def child(stack_file: Path, profile: str | None) -> dict[str, Any]:
    """One size, in this process: plan, run, measure."""
    from stackprobe.loader import load_stack
    from stackprobe.runner import Runner, Selection, make_plan

    stack = load_stack(stack_file)
    plan = make_plan(stack, Selection())
    started = time.perf_counter()
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, Runner(plan).run())
        profiler.dump_stats(profile)
    else:
        result = asyncio.run(Runner(plan).run())
    wall = time.perf_counter() - started
    checks = len(result.results)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    errors = sum(1 for r in result.results if r.outcome.value == "error")
    causes = sorted({r.message for r in result.results})
    return {
        "services": len(stack.services),
        "checks": checks,
        "errors": errors,
        "causes": causes[:3],
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "per_check_ms": round(wall / max(1, checks) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,400,1000,2000")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--profile", default=None, help="cProfile stats of the largest size")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.profile)))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows = []
    print(f"{'services':>8} {'checks':>7} {'wall s':>8} {'peak MB':>8} {'ms/check':>9}  outcome")
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="sp-scale-") as tmp:
            stack_file = write_stack(Path(tmp), size)
            cmd = [sys.executable, __file__, "--child", str(stack_file)]
            if args.profile and size == max(sizes):
                cmd += ["--profile", args.profile]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"size {size}: child failed:\n{proc.stderr[-2000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        outcome = f"{row['errors']} error: {'; '.join(row['causes'])}"
        print(
            f"{row['services']:>8} {row['checks']:>7} {row['wall_s']:>8.2f} "
            f"{row['peak_rss_mb']:>8.1f} {row['per_check_ms']:>9.3f}  {outcome[:70]}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
