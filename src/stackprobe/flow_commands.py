"""The `stackprobe flow` verb: the end-to-end flow (the stack's e2e-flow check) through the
runner, so reports, the saved run result, coverage, redaction, exit codes, cleanups and Ctrl-C
are those of `stackprobe run`.

`cli.py` mounts it with one line; it loads the stack, runs and reports through the same
front-end helpers (stackprobe.frontend) as `run`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from stackprobe.errors import ConfigError
from stackprobe.flow import LOW_RATE, MAX_DURATION, MAX_RATE
from stackprobe.frontend import (
    ConfigOpt,
    Format,
    OutputOpt,
    SandboxOpt,
    execute,
    stack_arg_of,
    stack_of,
)
from stackprobe.runner import DEFAULT_DEADLINE, Selection, stack_plan
from stackprobe.services.stack_flow import flow_spec

HELP = f"""Run one synthetic transaction through every configured component, traced with the
OpenTelemetry SDK and W3C trace context across each hop: Consul registration and discovery, an
HTTP call to a probe service (its own process), a cache-aside read and write in Redis, a Celery
task that carries the trace context, ArangoDB metadata, the complete trace in the trace store,
span metrics with an exemplar in Prometheus, the trace through Grafana. A hop whose component
is not configured is skipped with the reason; a failure names the first broken hop.

With --rate and --duration: flows open-loop at R per second for S seconds; reports end-to-end
and per-hop latency percentiles and trace completeness (complete traces / flows sent), with
each incomplete trace's missing spans. Above {LOW_RATE:g}/s it needs --allow-disruption.

Exit codes: 0 passed; 1 a hop failed or errored (or a flow under load, or a trace was
incomplete); 2 usage or config error; 130 interrupted (after cleanups ran)."""


def flow_command(
    config: ConfigOpt = None,
    sandbox: SandboxOpt = False,
    fmt: Annotated[Format, typer.Option("--format", help="Report format.")] = Format.text,
    output: OutputOpt = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=0.1, max=MAX_RATE, help="Flows per second (with --duration)."),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=1, max=MAX_DURATION, help="Seconds of flows at --rate."),
    ] = None,
    allow_disruption: Annotated[
        bool,
        typer.Option(
            "--allow-disruption",
            help=f"Allow a rate above {LOW_RATE:g}/s (sandbox, or disruption: allowed).",
        ),
    ] = False,
) -> int:
    if (rate is None) != (duration is None):
        raise ConfigError("--rate and --duration go together: give both, or neither for one flow")
    stack = stack_of(config, sandbox)
    spec = flow_spec(rate, duration)
    plan = stack_plan(stack, [spec], Selection(allow_disruption=allow_disruption, sandbox=sandbox))
    stack.require_secrets(list(stack.services))
    deadline = max(DEFAULT_DEADLINE, (spec.timeout or 0) + 60)
    return execute(plan, fmt, output, stack_arg_of(config, sandbox), deadline=deadline).exit_code
