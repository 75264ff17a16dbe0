"""Fault injectors behind one small interface, one file each (as testinfra keeps backends):

    process    the sandbox's own processes, through its public process API
    docker     containers of the stack's Compose project, through the Docker Engine API
    toxiproxy  network faults through a Toxiproxy proxy in front of a service

An injector applies one fault action (or remedy) to one stack service and says what it did;
`restore()` undoes whatever it can still see of its own faults (used by rollbacks' last line
and by `stackprobe scenario restore` after a killed run).
"""

from __future__ import annotations

from typing import Protocol

from stackprobe.check import CheckContext
from stackprobe.resilience.faults.docker import DockerInjector
from stackprobe.resilience.faults.process import ProcessInjector
from stackprobe.resilience.faults.toxiproxy import ToxiproxyInjector
from stackprobe.resilience.model import Fault


class Injector(Protocol):
    """One way of breaking and repairing a service."""

    name: str
    actions: tuple[str, ...]

    async def apply(self, ctx: CheckContext[object], fault: Fault) -> str:
        """Carry out `fault` on its service and return what was done, in one line; raise
        CheckSkipped when the service cannot be reached this way (and say how it could)."""
        ...


INJECTORS: dict[str, Injector] = {
    "process": ProcessInjector(),
    "docker": DockerInjector(),
    "toxiproxy": ToxiproxyInjector(),
}


def injector_for(ctx: CheckContext[object], fault: Fault) -> Injector:
    """The injector `fault.injector` names; else, by its action: network faults go to
    Toxiproxy, process faults to the sandbox's processes on the sandbox and to the Docker
    engine for a service that names its `container:`."""
    if fault.injector is not None:
        return INJECTORS[fault.injector]
    if fault.action in INJECTORS["toxiproxy"].actions:
        return INJECTORS["toxiproxy"]
    if ctx.processes is None and ctx.stack.service(fault.service).container is not None:
        return INJECTORS["docker"]
    return INJECTORS["process"]
