"""`stackprobe scenario restore`: repair what a scenario run left behind when it could not run
its rollbacks (kill -9, a machine that went down). It reads the journals without an end and
undoes only what stackprobe did:

- the sandbox: processes left frozen (SIGSTOP) get SIGCONT, stopped ones are started again
  (`sandbox up`, same ports and data);
- Toxiproxy: toxics named with a stackprobe run prefix are removed from every proxy the stack
  file names, and a proxy a journal disabled is enabled again;
- Docker: containers a journal stopped, killed or paused are started or unpaused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from stackprobe.config import Stack
from stackprobe.connect import open_service
from stackprobe.explain import explain
from stackprobe.ids import PREFIX
from stackprobe.resilience.faults.toxiproxy import Toxiproxy
from stackprobe.resilience.journal import close, unfinished
from stackprobe.sandbox.manager import Sandbox
from stackprobe.services.compose import container_id, container_of


async def restore(
    stack: Stack, state: Path, sandbox: bool, say: Callable[[str], None]
) -> list[str]:
    """Repair, say what was done; the problems that remain, one line each."""
    runs = list(unfinished(state))
    problems: list[str] = []
    faults = [f for run in runs for f in run.faults]
    for run in runs:
        say(
            f"journal {run.path.name}: {run.scenario} ended without its rollbacks; {len(run.faults)} fault(s) open"
        )
    if sandbox:
        box = Sandbox(root=stack.path.parent)
        for service, proc in box.processes().items():
            if proc.frozen():
                proc.thaw()
                say(f"{proc.name} ({service}): was frozen; sent SIGCONT")
        try:
            await asyncio.to_thread(box.up, say)
        except Exception as exc:  # noqa: BLE001 - reported, the other repairs still run
            problems.append(f"sandbox up: {explain(exc)}")
    disabled = {f["service"] for f in faults if f.get("action") == "down"}
    for name, svc in stack.services.items():
        if svc.toxiproxy is None:
            continue
        proxy = Toxiproxy(svc.toxiproxy)
        try:
            removed = await proxy.remove_toxics(PREFIX)
            if removed:
                say(
                    f"{name}: removed toxic(s) {', '.join(removed)} from proxy {svc.toxiproxy.proxy}"
                )
            if name in disabled:
                await proxy.enable(True)
                say(f"{name}: proxy {svc.toxiproxy.proxy} enabled again")
        except Exception as exc:  # noqa: BLE001 - reported, the other repairs still run
            problems.append(f"{name}: toxiproxy {svc.toxiproxy.api}: {explain(exc)}")
    problems += await _containers(stack, [f for f in faults if f.get("injector") == "docker"], say)
    if not problems:
        for run in runs:
            close(run.path, "stackprobe scenario restore")
    return problems


async def _containers(
    stack: Stack, faults: list[dict[str, str]], say: Callable[[str], None]
) -> list[str]:
    problems: list[str] = []
    for fault in faults:
        service = fault.get("service", "")
        ref = container_of(stack, service) if service in stack.services else None
        if ref is None:
            continue
        name, compose_service = ref
        try:
            async with open_service(stack, name) as opened:
                engine = opened.client.engine
                if engine is None:
                    problems.append(
                        f"{service}: no Docker engine reachable to repair {compose_service}"
                    )
                    continue
                found = await container_id(opened.client, compose_service)
                if found is None:
                    continue
                if fault.get("action") == "freeze":
                    await engine.unpause(found)
                    say(f"{service}: container {compose_service} unpaused")
                else:
                    await engine.start(found)
                    say(f"{service}: container {compose_service} started")
        except Exception as exc:  # noqa: BLE001 - reported, the other repairs still run
            problems.append(f"{service}: {explain(exc)}")
    return problems
