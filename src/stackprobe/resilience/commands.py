"""`stackprobe scenario list | run | restore`: resilience scenarios as a user runs them.

stackprobe scenario list
stackprobe scenario run redis-crash --sandbox --allow-disruption
stackprobe scenario run -f my-scenario.yaml -c stack.yaml --allow-disruption --format html -o r.html
stackprobe scenario run --all --sandbox --allow-disruption
stackprobe scenario restore --sandbox          # after a run that was killed
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from stackprobe.check import CheckSkipped, CheckSpec
from stackprobe.config import Stack
from stackprobe.errors import ConfigError
from stackprobe.frontend import (
    ConfigOpt,
    Format,
    OutputOpt,
    SandboxOpt,
    err_console,
    execute,
    stack_arg_of,
    stack_of,
)
from stackprobe.loader import with_stack_service
from stackprobe.resilience.builtin import builtin
from stackprobe.resilience.model import Scenario, disrupted, load_scenario
from stackprobe.resilience.restore import restore
from stackprobe.resilience.roles import resolve
from stackprobe.runner import Selection, stack_plan
from stackprobe.services.stack import StackOptions
from stackprobe.services.stack_resilience import check_timeout, scenario_check
from stackprobe.state import state_dir

scenario_app = typer.Typer(
    help="Resilience scenarios: inject a fault, measure detection, recovery and lost writes, restore.",
    no_args_is_help=True,
)


@scenario_app.command("list")
def list_scenarios(
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> int:
    """The built-in scenarios with what they do, what they need and their recovery procedure. Exit 0."""
    scenarios = builtin()
    if fmt == "json":
        doc = {name: s.model_dump(mode="json") for name, s in scenarios.items()}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    if fmt != "text":
        raise ConfigError(f"--format: {fmt!r} is not text or json")
    for s in scenarios.values():
        print(f"{s.name} ({s.capability}): {s.description}")
        if s.needs:
            print(f"  needs: {s.needs}")
        tol = ", ".join(f"{k} {v}" for k, v in s.tolerances.model_dump(exclude_none=True).items())
        print(f"  tolerances: {tol or 'none'}")
        print("  recovery procedure:")
        for i, step in enumerate(s.procedure, 1):
            print(f"    {i}. {step}")
    return 0


@scenario_app.command("run")
def run_scenarios(
    name: Annotated[
        str | None, typer.Argument(help="A built-in scenario (see `scenario list`).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("-f", "--file", help="A scenario of your own (YAML).")
    ] = None,
    run_all: Annotated[
        bool, typer.Option("--all", help="Every built-in scenario, one after another.")
    ] = False,
    config: ConfigOpt = None,
    sandbox: SandboxOpt = False,
    allow_disruption: Annotated[
        bool,
        typer.Option(
            "--allow-disruption", help="Required: scenarios stop, freeze and slow services."
        ),
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Report format.")] = Format.text,
    output: OutputOpt = None,
) -> int:
    """Run scenarios and report time to detect, time to recover and acknowledged writes lost, with their timeline. Needs --allow-disruption; a stack that is not the sandbox needs `disruption: allowed` on every service a scenario breaks. Exit 0 passed, 1 a scenario failed its tolerances or could not run, 2 bad arguments or config, 130 interrupted (after the rollbacks ran)."""
    chosen = _chosen(name, file, run_all)
    if not allow_disruption:
        raise ConfigError(
            "scenarios stop, freeze and slow services: run with --allow-disruption "
            "(on the sandbox, or on services marked disruption: allowed)"
        )
    stack = stack_of(config, sandbox)
    if not sandbox:
        _refuse_undisruptable(stack, chosen)
    plan = stack_plan(
        stack, [_spec(s) for s in chosen], Selection(allow_disruption=True, sandbox=sandbox)
    )
    return execute(
        plan,
        fmt,
        output,
        stack_arg_of(config, sandbox),
        deadline=sum(check_timeout(s) for s in chosen) + 60,
        log_each=True,
    ).exit_code


@scenario_app.command("restore")
def restore_command(config: ConfigOpt = None, sandbox: SandboxOpt = False) -> int:
    """Repair what a killed scenario run left: thaw frozen sandbox processes, start stopped sandbox services, remove stackprobe's toxics and re-enable proxies it disabled, start or unpause containers it stopped. Exit 0 nothing left broken, 1 something could not be repaired, 2 bad config."""
    stack = stack_of(config, sandbox)
    console = err_console()
    problems = asyncio.run(
        restore(
            stack, _state(stack, sandbox), sandbox, lambda line: console.print(line, markup=False)
        )
    )
    for problem in problems:
        print(f"stackprobe: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _chosen(name: str | None, file: Path | None, run_all: bool) -> list[Scenario]:
    given = sum(bool(x) for x in (name, file, run_all))
    if given != 1:
        raise ConfigError(
            "name one scenario, or pass -f FILE, or --all (see `stackprobe scenario list`)"
        )
    if run_all:
        return list(builtin().values())
    if file is not None:
        return [load_scenario(file)]
    known = builtin()
    if name not in known:
        raise ConfigError(
            f"no scenario {name!r}; built-in scenarios: {', '.join(known)} (or -f FILE)"
        )
    return [known[str(name)]]


def _refuse_undisruptable(stack: Stack, chosen: list[Scenario]) -> None:
    """Off the sandbox, every service a scenario breaks must say `disruption: allowed`."""
    _, stack_service = with_stack_service(stack)
    options = stack.typed[stack_service].options if stack_service in stack.typed else StackOptions()
    for scenario in chosen:
        try:
            resolved = resolve(scenario, stack, options.targets)
        except CheckSkipped as exc:
            raise ConfigError(str(exc)) from None
        for name in sorted(disrupted(resolved)):
            if name in stack.services and stack.service(name).disruption != "allowed":
                raise ConfigError(
                    f"{stack.path}: services.{name}.disruption is not 'allowed': scenario "
                    f"{scenario.name} would break it (set disruption: allowed, or use the sandbox)"
                )


def _spec(scenario: Scenario) -> CheckSpec:
    return CheckSpec(
        kind="stack",
        capability=scenario.capability,
        name=scenario.name.replace("-", "_"),
        title=f"scenario {scenario.name}",
        fn=scenario_check(scenario),
        timeout=check_timeout(scenario),
        disruptive=True,
    )


def _state(stack: Stack, sandbox: bool) -> Path:
    return stack.path.parent.parent if sandbox else state_dir()
