"""Process faults on the sandbox's own services, through its public process API: kill -9,
stop (SIGTERM), freeze (SIGSTOP), thaw (SIGCONT), start, restart. Each waits, by polling,
until it took effect (gone, frozen, ready again)."""

from __future__ import annotations

from collections.abc import Callable

from stackprobe.check import CheckContext, CheckSkipped, ProcessHandle
from stackprobe.resilience.model import Fault
from stackprobe.threads import in_thread


class ProcessInjector:
    name: str = "process"
    actions: tuple[str, ...] = ("kill", "stop", "freeze", "thaw", "start", "restart")

    async def apply(self, ctx: CheckContext[object], fault: Fault) -> str:
        if ctx.processes is None:
            raise CheckSkipped(
                f"{fault.action} {fault.service}: process faults act on the sandbox's own "
                "processes (run with --sandbox); elsewhere give the service `container:` "
                "(docker) or `toxiproxy:`"
            )
        proc = ctx.processes.process(fault.service)
        actions: dict[str, Callable[[], object]] = {
            "kill": proc.kill,
            "stop": proc.stop,
            "freeze": proc.freeze,
            "thaw": proc.thaw,
            "start": proc.start,
            "restart": proc.restart,
        }
        pid = _pid(proc)
        took = await in_thread(actions[fault.action])
        what = {"kill": "kill -9", "freeze": "SIGSTOP", "thaw": "SIGCONT"}.get(
            fault.action, fault.action
        )
        ready = f", ready after {took:.1f} s" if isinstance(took, float) else ""
        return f"{what} {proc.name} ({fault.service}, pid {pid}){ready}"


def _pid(proc: ProcessHandle) -> int | None:
    return getattr(proc, "pid", None)
