"""Named verifications a scenario's method can use (`{action: verify, verifier: NAME, ...}`),
each polling until it holds or its `within` budget ends, saying what it saw:

    check            a catalog check on the service has the `expect`ed outcome (default passed)
    redis-role       the Redis node's replication role is `expect` (master or slave)
    consul-leader    the cluster the service is in has a leader; expect `new`: another one
                     than at the steady state (recorded automatically)
    consul-peers     the cluster's raft peers number `expect`
    series-kept      Prometheus still has the samples of `expect` (a series selector) it had
                     at the steady state, and the scrape gap across the fault is measured

Adding one: a function `async (ctx, step, state) -> str` in VERIFIERS.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from stackprobe.check import CheckContext, CheckFailed
from stackprobe.durations import parse_duration
from stackprobe.errors import Outcome
from stackprobe.resilience.model import Verify

Verifier = Callable[[CheckContext[object], Verify, dict[str, Any]], Awaitable[str]]


async def _check(ctx: CheckContext[object], step: Verify, state: dict[str, Any]) -> str:
    assert ctx.services is not None
    if not step.expect or step.expect.count(".") != 2:
        raise CheckFailed(f"verify check: expect must name a check id, saw {step.expect!r}")
    outcome, message, _ = await ctx.services.check(step.service, step.expect)
    state.setdefault("checks", []).append(
        {"check": step.expect, "outcome": outcome.value, "message": message}
    )
    if outcome is not Outcome.PASSED:
        raise CheckFailed(
            f"{step.expect} on {step.service}: expected passed, saw {outcome.value}: {message}"
        )
    return f"{step.expect} passed: {message}"


async def _redis_role(ctx: CheckContext[object], step: Verify, state: dict[str, Any]) -> str:
    client = await ctx.open(step.service)
    role = str((await client.info("replication")).get("role"))
    if role != step.expect:
        raise CheckFailed(f"{step.service} is {role}, expected {step.expect}")
    return f"{step.service} is {role}"


async def _consul_leader(ctx: CheckContext[object], step: Verify, state: dict[str, Any]) -> str:
    leader = await current_leader(ctx, step.service)
    if not leader:
        raise CheckFailed(f"no leader in the cluster of {step.service}")
    before = state.get(f"leader:{step.service}")
    if step.expect == "new" and leader == before:
        raise CheckFailed(f"the leader is still {leader}")
    return f"leader {leader}" + (f" (was {before})" if before and before != leader else "")


async def _consul_peers(ctx: CheckContext[object], step: Verify, state: dict[str, Any]) -> str:
    client = await ctx.open(step.service)
    peers = list(await client.get("/v1/status/peers"))
    if str(len(peers)) != str(step.expect):
        raise CheckFailed(f"{len(peers)} raft peer(s), expected {step.expect}: {peers}")
    return f"{len(peers)} raft peers"


async def resolve_leader(ctx: CheckContext[object], members: list[str]) -> str:
    """The member that leads: the Redis node whose replication role is master, or the Consul
    server whose raft address is the cluster's leader."""
    clients = {name: await ctx.open(name) for name in members}
    if all(hasattr(c, "info") for c in clients.values()):  # Redis nodes
        for name, client in clients.items():
            try:
                if (await client.info("replication")).get("role") == "master":
                    return name
            except Exception:  # noqa: BLE001, S112 - a node that does not answer is not it
                continue
        raise CheckFailed(f"no master among {', '.join(members)}")
    leader = ""
    for name in members:
        try:
            leader = await current_leader(ctx, name)
        except Exception:  # noqa: BLE001, S112 - ask the next member
            continue
        if leader:
            break
    for name, client in clients.items():
        try:
            member = (await client.get("/v1/agent/self")).get("Member") or {}
        except Exception:  # noqa: BLE001, S112 - a member that does not answer is not the leader
            continue
        if f"{member.get('Addr')}:{(member.get('Tags') or {}).get('port')}" == leader:
            return name
    raise CheckFailed(f"no member of {', '.join(members)} is the leader ({leader or 'none'})")


async def current_leader(ctx: CheckContext[object], service: str) -> str:
    client = await ctx.open(service)
    return str(await client.get("/v1/status/leader") or "")


async def _series_kept(ctx: CheckContext[object], step: Verify, state: dict[str, Any]) -> str:
    api = await ctx.open(step.service)
    before: list[float] = state.get(f"series:{step.service}", [])
    samples = await series_samples(api, str(step.expect), since=min(before, default=None))
    missing = [t for t in before if t not in samples]
    gap = max((b - a for a, b in itertools.pairwise(samples)), default=0.0)
    state["scrape_gap_s"] = round(gap, 3)
    state["samples_before"] = len(before)
    if not before:
        raise CheckFailed(f"no samples of {step.expect} were recorded before the fault")
    if missing:
        raise CheckFailed(
            f"{len(missing)} of {len(before)} samples of {step.expect} from before the fault are gone"
        )
    return f"all {len(before)} samples of {step.expect} from before the fault kept; largest scrape gap {gap:.1f} s"


async def series_samples(api: Any, selector: str, since: float | None = None) -> list[float]:
    """The timestamps of every raw sample of `selector` since `since` (else the last minute)."""
    now = time.time()
    window = int(now - since) + 5 if since is not None else 60
    data = await api.get("/api/v1/query", query=f"{selector}[{window}s]", time=now)
    return sorted(
        float(t) for series in data.get("result", []) for t, _ in series.get("values", [])
    )


VERIFIERS: dict[str, Verifier] = {
    "check": _check,
    "redis-role": _redis_role,
    "consul-leader": _consul_leader,
    "consul-peers": _consul_peers,
    "series-kept": _series_kept,
}


async def before_fault(
    ctx: CheckContext[object], steps: list[Verify], state: dict[str, Any]
) -> None:
    """What verifiers compare against, recorded at the steady state."""
    for step in steps:
        if step.verifier == "consul-leader":
            state[f"leader:{step.service}"] = await current_leader(ctx, step.service)
        if step.verifier == "series-kept":
            state[f"series:{step.service}"] = await series_samples(
                await ctx.open(step.service), str(step.expect)
            )


def within_s(step: Verify) -> float:
    return parse_duration(step.within)
