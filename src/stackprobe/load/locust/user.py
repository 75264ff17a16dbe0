"""The Locust user of a distributed load: one per worker; its task runs that worker's share
of the profile on stackprobe's engine (see worker.py) and then stops."""

from __future__ import annotations

from collections.abc import Callable

from locust import User, constant, task  # this package's __init__ ran first: no monkey patch
from locust.exception import StopUser

# set by the worker process before its runner starts; the master never runs the task
RUN_SHARE: list[Callable[[], None]] = []


class StackprobeLoad(User):
    """Runs this worker's share of a stackprobe load profile (the engine, not Locust's
    request loop, paces the operations: an open-loop schedule with its own lanes)."""

    wait_time = constant(0)

    @task
    def run_share(self) -> None:
        for run in RUN_SHARE:
            run()
        raise StopUser()
