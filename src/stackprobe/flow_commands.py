"""The `stackprobe flow` verb: the end-to-end flow (the stack's e2e-flow check) through the
runner, so reports, the saved run result, coverage, redaction, exit codes, cleanups and Ctrl-C
are those of `stackprobe run`.

`cli.py` mounts it with one line, handing over its own helpers (loading the stack, writing
the document, saving the result), so both verbs read and write the same way.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from stackprobe.config import Stack
from stackprobe.errors import ConfigError
from stackprobe.flow import LOW_RATE, MAX_DURATION, MAX_RATE
from stackprobe.progress import LiveProgress
from stackprobe.redact import Redactor
from stackprobe.report import RENDERERS
from stackprobe.results import RunResult
from stackprobe.runner import DEFAULT_DEADLINE, Runner, Selection, stack_plan
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


class FlowFormat(StrEnum):
    text = "text"
    json = "json"
    junit = "junit"
    html = "html"
    markdown = "markdown"


def flow_command(
    stack_of: Callable[[str | None, bool], Stack],
    write: Callable[[str, Path | None], None],
    save: Callable[[RunResult], Path],
    color_for: Callable[[Path | None], bool],
) -> Callable[..., int]:
    """The typer command, over the CLI's own helpers."""

    def flow(
        config: Annotated[
            str | None,
            typer.Option(
                "-c",
                "--config",
                help="Stack file (else $STACKPROBE_CONFIG, else ./stackprobe.yaml).",
            ),
        ] = None,
        sandbox: Annotated[
            bool, typer.Option("--sandbox", help="Use the running sandbox's stack file.")
        ] = False,
        fmt: Annotated[
            FlowFormat, typer.Option("--format", help="Report format.")
        ] = FlowFormat.text,
        output: Annotated[
            Path | None, typer.Option("-o", "--output", help="Write the report here, not stdout.")
        ] = None,
        rate: Annotated[
            float | None,
            typer.Option(
                "--rate", min=0.1, max=MAX_RATE, help="Flows per second (with --duration)."
            ),
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
            raise ConfigError(
                "--rate and --duration go together: give both, or neither for one flow"
            )
        stack = stack_of(config, sandbox)
        spec = flow_spec(rate, duration)
        selection = Selection(allow_disruption=allow_disruption, sandbox=sandbox)
        plan = stack_plan(stack, [spec], selection)
        stack.require_secrets(list(stack.services))
        deadline = max(DEFAULT_DEADLINE, (spec.timeout or 0) + 60)
        with LiveProgress(enabled=sys.stderr.isatty()) as progress:
            result = asyncio.run(Runner(plan, deadline=deadline, progress=progress).run())
        saved = save(result)
        document = RENDERERS[fmt.value](result, color_for(output))
        write(Redactor(stack.secrets()).text(document), output)
        if output is not None or fmt is not FlowFormat.text:
            flow_result = result.results[0] if result.results else None
            line = flow_result.message if flow_result else "no result"
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"{flow_result.outcome.value if flow_result else 'error'}: {line}; result saved to {saved}",
                markup=False,
            )
        return result.exit_code

    flow.__doc__ = HELP
    return flow
