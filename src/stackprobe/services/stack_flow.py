"""The stack's `e2e-flow` capability: the end-to-end synthetic transaction of flow.py as a
check (`stackprobe run`, pytest items, coverage, the monitor), and the same flows under load
for `stackprobe flow --rate R --duration S`.

Hop results go in the evidence (`hops`: hop, service, status, latency_ms, message), which every
report shows as a table; the check's message names the first broken hop and why.
"""

from __future__ import annotations

from stackprobe.check import CheckContext, CheckSpec
from stackprobe.flow import LOW_RATE, FlowRig, load_verdict, run_flow, run_load, verdict
from stackprobe.services.stack import KIND as STACK
from stackprobe.services.stack import StackOptions, StackView

FLOW_TIMEOUT = 60.0  # the flow waits for its trace, the span metrics and Grafana, each bounded
LOAD_EXTRA_S = 90.0  # a load run's timeout: its duration plus the last flows and the metrics


async def _rig(ctx: CheckContext[StackView]) -> FlowRig:
    opts: StackOptions = ctx.options or StackOptions()
    rig = FlowRig(ctx, ctx.client.members, opts.flow)
    await rig.start()
    return rig


@STACK.check(
    "e2e-flow",
    title="one synthetic transaction crosses every configured component, its trace complete",
    timeout=FLOW_TIMEOUT,
    name="synthetic_transaction",
)
async def check_synthetic_transaction(ctx: CheckContext[StackView]) -> str:
    result = await run_flow(await _rig(ctx))
    ctx.evidence.update(result.evidence())
    return verdict(result)


def load_check(rate: float, duration: float) -> CheckSpec:
    """Flows open-loop at `rate` per second for `duration` seconds, as one check (disruptive
    above the low default rate)."""

    async def check_flows_under_load(ctx: CheckContext[StackView]) -> str:
        summary, hops = await run_load(await _rig(ctx), rate, duration)
        ctx.evidence.update(load=summary, hops=[h.evidence() for h in hops])
        return load_verdict(summary, hops)

    return CheckSpec(
        kind=STACK.name,
        capability="e2e-flow",
        name="flows_under_load",
        title=f"flows open-loop at {rate:g}/s for {duration:g} s: latency percentiles, trace completeness",
        fn=check_flows_under_load,
        timeout=duration + LOAD_EXTRA_S,
        disruptive=rate > LOW_RATE,
    )


def flow_spec(rate: float | None = None, duration: float | None = None) -> CheckSpec:
    """The check `stackprobe flow` runs: the registered single flow, or flows under load."""
    if rate and duration:
        return load_check(rate, duration)
    return next(c for c in STACK.checks if c.capability == "e2e-flow")
