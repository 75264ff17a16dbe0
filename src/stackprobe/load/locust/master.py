"""The Locust master of a distributed load (started by `stackprobe load --workers N`).

It listens for workers, waits until N have joined (at most JOIN_TIMEOUT), sends each its
share of the profile (rate / N, lanes / N rounded up, its name w0, w1, ...), and starts one
Locust user per worker. Workers send every second's counts and encoded HdrHistogram; the
master adds them, second by second, into one timeline: the same exact merge as two histograms
added bucket by bucket, so a distributed run's percentiles are those of every sample. A worker
that stops answering (Locust marks it missing) or never says it is done is reported lost, and
what it sent before is kept. Output: JSON lines on stdout, `{"listening": port}`, then one
`{"tick": ...}` per second, then `{"result": {...}}`.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from typing import Any

import gevent
from locust.env import Environment  # this package's __init__ ran first: no monkey patch

from stackprobe.load.engine import DRAIN_S
from stackprobe.load.histogram import merged
from stackprobe.load.locust import MSG_DONE, MSG_FAILED, MSG_PROFILE, MSG_SECOND
from stackprobe.load.locust.absences import Absences
from stackprobe.load.locust.user import StackprobeLoad
from stackprobe.load.locust.worker import parse_address
from stackprobe.load.timeline import Generator, Second, Timeline

JOIN_TIMEOUT = 60.0
SETUP_GRACE = 90.0  # workers prepare (seed keys...) and clean up within this


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Master:
    def __init__(self, workers: int, profile: dict[str, Any]) -> None:
        self.expected = workers
        self.profile = profile
        self.timeline = Timeline()
        self.names: dict[str, str] = {}  # client id -> w0, w1...
        self.seconds: dict[str, int] = {}  # client id -> seconds received
        self.done: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        self.recent: list[Second] = []
        self.stopping = False

    def on_second(self, environment: Any, msg: Any, **_: Any) -> None:
        record = Second.from_json(msg.data["record"])
        self.timeline.add_second(int(msg.data["second"]), record)
        self.seconds[msg.node_id] = self.seconds.get(msg.node_id, 0) + 1
        self.recent.append(record)

    def on_done(self, environment: Any, msg: Any, **_: Any) -> None:
        self.done[msg.node_id] = dict(msg.data)

    def on_failed(self, environment: Any, msg: Any, **_: Any) -> None:
        self.failed[msg.node_id] = str(msg.data.get("error"))

    def share(self, index: int) -> dict[str, Any]:
        rate = self.profile.get("rate")
        return {
            **self.profile,
            "name": f"w{index}",
            "rate": rate / self.expected if rate else None,
            "concurrency": max(1, math.ceil(int(self.profile["concurrency"]) / self.expected)),
        }

    def tick(self, started: float, totals: list[int]) -> None:
        recent, self.recent = self.recent, []
        ops = sum(s.ops for s in recent)
        errors = sum(s.errors for s in recent)
        totals[0] += ops
        totals[1] += errors
        p50, p99 = merged([s.latency for s in recent]).percentiles_ms([50.0, 99.0])
        emit(
            {
                "tick": {
                    "elapsed_s": round(time.monotonic() - started, 3),
                    "ops": ops,
                    "errors": errors,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "total_ops": totals[0],
                    "total_errors": totals[1],
                    "workers": len(self.names) - len(self.done) - len(self.failed),
                }
            }
        )

    def result(self, missing: set[str]) -> dict[str, Any]:
        for client_id, name in sorted(self.names.items(), key=lambda kv: kv[1]):
            if client_id in self.done:
                gen = Generator.from_json(self.done[client_id]["generator"])
            else:
                gen = Generator(
                    name=name, wall_s=float(self.seconds.get(client_id, 0)), complete=False
                )
            self.timeline.generators.append(gen)
        lost = {
            self.names[c]: (
                self.failed.get(c)
                or ("missing (no heartbeat)" if c in missing else "never said it was done")
            )
            for c in self.names
            if c not in self.done
        }
        cleanup = {
            self.names[c]: d.get("cleanup_problems")
            for c, d in self.done.items()
            if d.get("cleanup_problems")
        }
        return {"timeline": self.timeline.to_json(), "lost": lost, "cleanup_problems": cleanup}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stackprobe.load.locust.master")
    parser.add_argument("--bind", required=True, help="HOST:PORT to listen on for workers")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--profile", required=True, help="the whole profile, JSON")
    args = parser.parse_args(argv)
    host, port = parse_address(args.bind)
    master = Master(args.workers, json.loads(args.profile))
    environment = Environment(user_classes=[StackprobeLoad])
    runner = environment.create_master_runner(host, port)
    runner.register_message(MSG_SECOND, master.on_second)
    runner.register_message(MSG_DONE, master.on_done)
    runner.register_message(MSG_FAILED, master.on_failed)

    def stop(*_: Any) -> None:
        master.stopping = True

    gevent.signal_handler(signal.SIGTERM, stop)  # gevent's watchers, as in worker.py
    gevent.signal_handler(signal.SIGINT, stop)
    emit({"listening": port})
    joined_by = time.monotonic() + JOIN_TIMEOUT
    while len(runner.clients.ready) < args.workers and not master.stopping:
        if time.monotonic() > joined_by:
            emit(
                {
                    "error": f"only {len(runner.clients.ready)} of {args.workers} worker(s) joined within {JOIN_TIMEOUT:g} s"
                }
            )
            runner.quit()
            return 1
        gevent.sleep(0.1)
    for index, node in enumerate(sorted(runner.clients.ready, key=lambda n: n.id)):
        master.names[node.id] = f"w{index}"
        runner.send_message(MSG_PROFILE, master.share(index), client_id=node.id)
    gevent.sleep(0.2)  # the profiles arrive before the spawn message
    runner.start(args.workers, spawn_rate=args.workers)
    started = time.monotonic()
    deadline = started + float(master.profile["duration"]) + DRAIN_S + SETUP_GRACE
    totals = [0, 0]
    next_tick = started + 1
    absences = Absences()
    while not master.stopping and time.monotonic() < deadline:
        gevent.sleep(0.05)
        if time.monotonic() >= next_tick:
            master.tick(started, totals)
            next_tick += 1
        finished = set(master.done) | set(master.failed)
        gone = absences.update({n.id for n in runner.clients.missing}, time.monotonic())
        if set(master.names) <= finished | gone:
            break
    master.tick(started, totals)
    emit({"result": master.result({n.id for n in runner.clients.missing})})
    runner.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
