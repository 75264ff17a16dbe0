"""A Locust worker of a distributed load: `stackprobe load-worker --master HOST:PORT -c FILE`.

It connects to the master, receives its share of the profile (service, workload, rate,
duration, lanes, the run id and its own name), opens the service from *its own* stack file
with stackprobe.connect (credentials never travel), and runs the share on stackprobe's engine
in a thread. Each second it sends the master that second's counts and encoded histogram;
after the run it removes what it created, by name, and sends its generator view. SIGTERM
(or the master quitting) stops the run; cleanups still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment  # this package's __init__ ran first: no monkey patch

from stackprobe.connect import open_service
from stackprobe.explain import explain
from stackprobe.load.engine import Profile, Tick, new_event_loop, run_load
from stackprobe.load.locust import MSG_DONE, MSG_FAILED, MSG_PROFILE, MSG_SECOND
from stackprobe.load.locust.user import RUN_SHARE, StackprobeLoad
from stackprobe.load.workload import find_workload, service_context
from stackprobe.loader import load_stack

PROFILE_TIMEOUT = 60.0
SETUP_TIMEOUT = 60.0
CLEANUP_TIMEOUT = 30.0


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


class Worker:
    def __init__(self, stack_file: Path) -> None:
        self.stack_file = stack_file
        self.profile: dict[str, Any] | None = None
        self.outbox: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.runner: Any = None

    def on_profile(self, environment: Any, msg: Any, **_: Any) -> None:
        self.profile = dict(msg.data)

    def stop(self) -> None:
        """Stop the engine (its cleanups still run)."""
        self.stopping = True
        if self.loop is not None and self.task is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.task.cancel)

    def run_share(self) -> None:
        """The Locust user's task: run the engine thread, forward its messages, wait for it."""
        waited = 0.0
        while self.profile is None and waited < PROFILE_TIMEOUT and not self.stopping:
            gevent.sleep(0.05)
            waited += 0.05
        if self.profile is None:
            self.runner.send_message(MSG_FAILED, {"error": "no profile from the master"})
            return
        thread = self.thread = threading.Thread(
            target=self._thread, args=(self.profile,), daemon=True
        )
        thread.start()
        while thread.is_alive() or not self.outbox.empty():
            self._flush()
            gevent.sleep(0.05)
        self._flush()

    def _flush(self) -> None:
        while True:
            try:
                kind, data = self.outbox.get_nowait()
            except queue.Empty:
                return
            self.runner.send_message(kind, data)

    def _thread(self, profile: dict[str, Any]) -> None:
        self.loop = new_event_loop()
        try:
            self.task = self.loop.create_task(self._run(profile))
            with contextlib.suppress(asyncio.CancelledError):
                self.loop.run_until_complete(self.task)
        finally:
            self.loop.close()

    async def _run(self, profile: dict[str, Any]) -> None:
        name = str(profile["name"])
        try:
            stack = load_stack(self.stack_file)
            service = str(profile["service"])
            if service not in stack.services:
                raise ValueError(f"{self.stack_file}: no service {service!r}")
            kind = stack.service(service).kind
            chosen = find_workload(service, kind, str(profile["workload"]))
            async with open_service(stack, service) as opened:
                ctx = service_context(
                    stack, service, opened.client, str(profile["run_id"]), worker=name
                )
                try:
                    lanes = await asyncio.wait_for(
                        chosen.prepare(ctx, int(profile["concurrency"])), SETUP_TIMEOUT
                    )
                    rate = profile.get("rate")
                    shape = Profile(
                        float(rate) if rate else None,
                        float(profile["duration"]),
                        int(profile["concurrency"]),
                    )
                    timeline = await run_load(lanes, shape, on_tick=self._second, name=name)
                finally:
                    problems = await ctx.run_cleanups(CLEANUP_TIMEOUT)
            self.outbox.put(
                (
                    MSG_DONE,
                    {"generator": timeline.generators[0].to_json(), "cleanup_problems": problems},
                )
            )
        except asyncio.CancelledError:
            self.outbox.put((MSG_FAILED, {"error": f"{name} stopped before the end"}))
        except Exception as exc:  # noqa: BLE001 - the master reports it in one line
            self.outbox.put((MSG_FAILED, {"error": f"{name}: {explain(exc)}"}))

    def _second(self, tick: Tick) -> None:
        if tick.record is not None:
            self.outbox.put((MSG_SECOND, {"second": tick.second, "record": tick.record.to_json()}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stackprobe load-worker")
    parser.add_argument("--master", required=True, help="HOST:PORT of the master")
    parser.add_argument("-c", "--config", required=True, help="this machine's stack file")
    args = parser.parse_args(argv)
    try:
        host, port = parse_address(args.master)
    except ValueError as exc:
        sys.stderr.write(f"stackprobe load-worker: --master: {exc}\n")
        return 2
    worker = Worker(Path(args.config))
    RUN_SHARE.append(worker.run_share)
    environment = Environment(user_classes=[StackprobeLoad])
    runner = environment.create_worker_runner(host, port)
    worker.runner = runner
    runner.register_message(MSG_PROFILE, worker.on_profile)
    # gevent's own watchers: a Python-level handler waits for the main thread to run Python
    # code again, which the hub's C loop may not do soon (one SIGTERM was seen lost that way)
    gevent.signal_handler(signal.SIGTERM, worker.stop)
    gevent.signal_handler(signal.SIGINT, worker.stop)
    while len(runner.greenlet):  # a gevent Group: empty once the master said quit
        runner.greenlet.join(timeout=0.1)
        if worker.stopping and (worker.thread is None or not worker.thread.is_alive()):
            worker._flush()
            gevent.sleep(0.2)  # the last messages leave
            break
    return 0


def run(argv: list[str] | None = None) -> None:
    """main(), then a hard exit: the load and its cleanups are done and the messages sent,
    and tearing down ZeroMQ's context may block on a master that is gone (seen here)."""
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
