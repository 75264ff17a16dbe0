"""The built-in resilience scenarios as checks of the stack kind (`failover` and `recovery`),
so they get the runner's timeouts and cleanups, the run result, coverage, every report and
pytest items. All are disruptive: they run only with --allow-disruption, on the sandbox or on
services marked `disruption: allowed`."""

from __future__ import annotations

from typing import Any

from stackprobe.check import CheckContext, CheckFn
from stackprobe.resilience.builtin import builtin
from stackprobe.resilience.engine import ROLLBACK_TIMEOUT, run_scenario
from stackprobe.resilience.model import Scenario
from stackprobe.resilience.roles import resolve
from stackprobe.services.stack import KIND as STACK
from stackprobe.services.stack import StackOptions


def scenario_check(scenario: Scenario) -> CheckFn:
    """The check that runs `scenario` on the stack (its roles resolved, the stack file's
    tolerances for it applied)."""

    async def run(ctx: CheckContext[Any]) -> str:
        options: StackOptions = ctx.options or StackOptions()
        resolved = resolve(scenario, ctx.stack, options.targets)
        tolerances = scenario.tolerances.merged(options.tolerances.get(scenario.name))
        return await run_scenario(ctx, resolved, tolerances)

    run.__name__ = f"check_{scenario.name.replace('-', '_')}"
    return run


def check_timeout(scenario: Scenario) -> float:
    """The method's budget, the steady states before and after, and the write accounting."""
    return scenario.timeout_s + 2 * 30.0 + 90.0


for _scenario in builtin().values():
    STACK.check(
        _scenario.capability,
        title=f"scenario {_scenario.name}: {_scenario.description.split(';')[0]}",
        name=_scenario.name.replace("-", "_"),
        timeout=check_timeout(_scenario),
        disruptive=True,
    )(scenario_check(_scenario))

__all__ = ["ROLLBACK_TIMEOUT", "check_timeout", "scenario_check"]
