"""The `stackprobe` command: each verb is a thin function over the library.

Exit codes (every verb): 0 all passed (skips and warnings allowed); 1 a check failed or
errored, or the sandbox could not start; 2 usage or config error, or a binary is missing;
130 after Ctrl-C once cleanups ran.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from stackprobe import __version__
from stackprobe.catalog import describe, known_kinds
from stackprobe.clean import sweep
from stackprobe.compose.commands import compose_app, discover_command
from stackprobe.config import Stack
from stackprobe.errors import ConfigError, StackprobeError
from stackprobe.flow_commands import HELP as FLOW_HELP
from stackprobe.flow_commands import flow_command
from stackprobe.frontend import (
    LOG_LINES,
    ConfigOpt,
    Format,
    OutputOpt,
    SandboxOpt,
    duration_option,
    err_console,
    execute,
    say_wait,
    stack_arg_of,
    stack_of,
    use_color,
    write_output,
)
from stackprobe.load.commands import load_command, load_worker_command
from stackprobe.report import RENDERERS
from stackprobe.report.matrix import (
    render_matrix_json,
    render_matrix_markdown,
    render_matrix_text,
    stack_arg_for,
)
from stackprobe.resilience.commands import scenario_app
from stackprobe.results import RunResult
from stackprobe.runner import DEFAULT_CONCURRENCY, DEFAULT_DEADLINE, Selection, make_plan
from stackprobe.sandbox.manager import Sandbox
from stackprobe.state import state_dir
from stackprobe.store import last_durations, latest_result_path
from stackprobe.wait import wait_stack

EXIT_CODES = """Exit codes: 0 all passed (skips and warnings allowed); 1 a check failed or errored;
2 usage or config error; 130 interrupted (after cleanups ran)."""

app = typer.Typer(
    name="stackprobe",
    help="Contract checks, coverage and health for the infrastructure under your application.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(help="Inspect the stack file.", no_args_is_help=True)
sandbox_app = typer.Typer(
    help="Real services on this machine for the demo and the tests.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(compose_app, name="compose")
app.add_typer(scenario_app, name="scenario")
app.command("discover")(discover_command)
app.command("load")(load_command)
app.command("load-worker")(load_worker_command)

_debug = False


def _version_callback(value: bool) -> None:
    if value:
        print(f"stackprobe {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    global _debug
    _debug = debug


@app.command()
def run(
    config: ConfigOpt = None,
    sandbox: SandboxOpt = False,
    service: Annotated[
        list[str] | None, typer.Option("--service", help="Only this service (repeatable).")
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help="Only services of this kind (repeatable).")
    ] = None,
    capability: Annotated[
        list[str] | None, typer.Option("--capability", help="Only this capability (repeatable).")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Report format.")] = Format.text,
    output: OutputOpt = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0.1,
            help="Per-check timeout in seconds (default: the check's own, else 10).",
        ),
    ] = None,
    deadline: Annotated[
        float, typer.Option("--deadline", min=1, help="Whole-run deadline in seconds.")
    ] = DEFAULT_DEADLINE,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Checks running at once.")
    ] = DEFAULT_CONCURRENCY,
    allow_disruption: Annotated[
        bool,
        typer.Option(
            "--allow-disruption",
            help="Also run disruptive checks (sandbox, or services marked disruption: allowed).",
        ),
    ] = False,
    fail_under: Annotated[
        float | None,
        typer.Option(
            "--fail-under",
            min=0,
            help="Exit 1 when coverage (percent of capabilities proven) is below PCT.",
            metavar="PCT",
        ),
    ] = None,
    wait: Annotated[
        str | None,
        typer.Option(
            "--wait",
            metavar="DURATION",
            help="First wait up to DURATION (90s, 2m) for every service to pass its liveness "
            "probe, saying what each waits for; a service still down gets its checks `error`.",
        ),
    ] = None,
    log_lines: Annotated[
        int,
        typer.Option(
            "--log-lines",
            min=0,
            metavar="N",
            help="Last N lines of a failing service's log in the report (0: none).",
        ),
    ] = LOG_LINES,
) -> int:
    """Run the checks of the stack and report. Exit 0 all passed, 1 a check failed or errored (or coverage below --fail-under), 2 bad config or arguments, 130 interrupted."""
    budget = duration_option("--wait", wait) if wait is not None else 0.0
    waiting_since = time.monotonic()
    stack = stack_of(config, sandbox, wait=budget)
    selection = Selection(
        services=tuple(service or ()),
        kinds=tuple(kind or ()),
        capabilities=tuple(capability or ()),
        allow_disruption=allow_disruption,
        sandbox=sandbox,
    )
    plan = make_plan(stack, selection)
    stack.require_secrets(list(plan.services))
    if not plan.items and not plan.skipped:
        raise ConfigError("nothing to run: the selection matches no check")
    left = budget - (time.monotonic() - waiting_since)  # what waiting for the sandbox left
    result = execute(
        plan,
        fmt,
        output,
        stack_arg=stack_arg_of(config, sandbox),
        log_lines=log_lines,
        wait=max(left, 1.0) if budget else 0.0,
        timeout=timeout,
        deadline=deadline,
        concurrency=concurrency,
        expected=last_durations(stack.name),
    )
    return _coverage_gate(result, fail_under, result.exit_code)


@app.command("wait")
def wait_command(
    config: ConfigOpt = None,
    sandbox: SandboxOpt = False,
    timeout: Annotated[
        str,
        typer.Option("--timeout", metavar="DURATION", help="How long to wait (90s, 2m)."),
    ] = "60s",
    service: Annotated[
        list[str] | None, typer.Option("--service", help="Only this service (repeatable).")
    ] = None,
) -> int:
    """Wait until every service of the stack passes its liveness probe (for a script after `docker compose up`), saying what each waits for. Exit 0 all alive, 1 not all alive within --timeout, 2 bad config or arguments."""
    budget = duration_option("--timeout", timeout)
    started = time.monotonic()
    stack = stack_of(config, sandbox, wait=budget)
    names = list(make_plan(stack, Selection(services=tuple(service or ()))).services)
    stack.require_secrets(names)
    left = max(budget - (time.monotonic() - started), 1.0)
    waited = asyncio.run(wait_stack(stack, names, left, on_wait=say_wait))
    down = [w for w in waited.values() if not w.ready]
    for w in down:
        print(f"{w.service}: not ready after {w.waited_s:.0f} s: {w.cause}", file=sys.stderr)
    print(
        f"{len(waited) - len(down)} of {len(waited)} service(s) ready"
        f" in {time.monotonic() - started:.1f} s"
    )
    return 1 if down else 0


def _coverage_gate(result: RunResult, fail_under: float | None, code: int) -> int:
    """Exit 1 (unless already worse) with one stderr line when coverage is below the bar."""
    if fail_under is None or result.coverage.percent >= fail_under or code == 130:
        return code
    print(
        f"stackprobe: coverage {result.coverage.percent:g}% is below --fail-under {fail_under:g}%",
        file=sys.stderr,
    )
    return max(code, 1)


app.command("flow", help=FLOW_HELP)(flow_command)


ResultArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="[RESULT.json]",
        help="A saved run result (default: the latest in <state dir>/runs/).",
        show_default=False,
    ),
]


@app.command()
def report(
    result_file: ResultArg = None,
    fmt: Annotated[Format, typer.Option("--format", help="Report format.")] = Format.text,
    output: OutputOpt = None,
) -> int:
    """Render a saved run result in any report format, e.g. the HTML file of the run a CI job just made as JUnit. Exit 0 written, 2 no saved run or the file is not a run result."""
    result = RunResult.load(result_file or latest_result_path())
    write_output(RENDERERS[fmt.value](result, use_color(output)), output)
    return 0


class CoverageFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


@app.command()
def coverage(
    result_file: ResultArg = None,
    config: Annotated[
        str | None,
        typer.Option("-c", "--config", help="Stack file to name in the suggested commands."),
    ] = None,
    fmt: Annotated[
        CoverageFormat, typer.Option("--format", help="Output format.")
    ] = CoverageFormat.text,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the matrix here, not stdout.")
    ] = None,
    fail_under: Annotated[
        float | None,
        typer.Option(
            "--fail-under",
            min=0,
            metavar="PCT",
            help="Exit 1 when coverage is below PCT.",
        ),
    ] = None,
) -> int:
    """Print the coverage matrix of a saved run: services x capabilities (passed, failed, error, skipped, not run), percent per service and overall, and what to run to close each gap. Exit 0 printed, 1 coverage below --fail-under, 2 no saved run or the file is not a run result."""
    result = RunResult.load(result_file or latest_result_path())
    stack_arg = stack_arg_for(result, config)
    if fmt is CoverageFormat.json:
        document = render_matrix_json(result, stack_arg)
    elif fmt is CoverageFormat.markdown:
        document = render_matrix_markdown(result, stack_arg)
    else:
        color = use_color(output)
        width = max(100, shutil.get_terminal_size((120, 24)).columns) if color else 120
        document = render_matrix_text(result, color=color, width=width, stack_arg=stack_arg)
    write_output(document, output)
    return _coverage_gate(result, fail_under, 0)


class ListFormat(StrEnum):
    text = "text"
    json = "json"


@app.command("list")
def list_checks(
    fmt: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.text,
) -> int:
    """List kinds, their capabilities and every check. Exit 0."""
    if fmt is ListFormat.json:
        sys.stdout.write(json.dumps(describe(), indent=2) + "\n")
        return 0
    for k in known_kinds().values():  # plain lines: grep-able, never truncated
        print(f"{k.name}: {k.description}")
        for cap in k.capabilities:
            print(f"  {cap}")
            for c in (c for c in k.checks if c.capability == cap):
                flags = "".join(
                    f" [{f}]"
                    for f, on in (
                        ("warning", c.severity.value == "warning"),
                        ("disruptive", c.disruptive),
                    )
                    if on
                )
                print(f"    {c.id}  {c.title}{flags}")
    return 0


@config_app.command("check")
def config_check(config: ConfigOpt = None, sandbox: SandboxOpt = False) -> int:
    """Validate the stack file; print every problem as `<file>: <field>: <problem>`. Exit 0 valid, 2 invalid."""
    stack = stack_of(config, sandbox)
    kinds = ", ".join(f"{n} ({s.kind})" for n, s in stack.services.items()) or "no services"
    print(f"{stack.path}: ok: stack {stack.name!r} with {kinds}")
    return 0


@app.command()
def clean(
    config: ConfigOpt = None,
    sandbox: SandboxOpt = False,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Only leftovers of runs older than this (90s, 30m, 1h, 2d)."
        ),
    ] = "1h",
) -> int:
    """Remove what killed runs left behind: names with the stackprobe run prefix older than --older-than. Exit 0 done, 1 a service could not be cleaned, 2 bad config."""
    stack = stack_of(config, sandbox)
    stack.require_secrets(list(stack.services))
    cutoff = datetime.now(UTC) - timedelta(seconds=duration_option("--older-than", older_than))
    problems = asyncio.run(_clean(stack, cutoff))
    return 1 if problems else 0


async def _clean(stack: Stack, cutoff: datetime) -> int:
    problems = 0
    for swept in await sweep(stack, cutoff):
        if swept.problem is not None:
            problems += 1
            print(f"{swept.service}: could not clean: {swept.problem}", file=sys.stderr)
            continue
        print(f"{swept.service}: removed {len(swept.removed)} leftover(s)")
        for item in swept.removed:
            print(f"  {item}")
    return problems


@app.command()
def serve(
    config: ConfigOpt = None,
    sandbox: SandboxOpt = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0 picks a free one).")
    ] = 8765,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between liveness probes.")
    ] = 1.0,
    full_interval: Annotated[
        float,
        typer.Option(
            "--full-interval", min=1, help="Seconds between full (non-disruptive) check runs."
        ),
    ] = 60.0,
    flow_interval: Annotated[
        float,
        typer.Option(
            "--flow-interval", min=0, help="Seconds between synthetic flows (0: no flow)."
        ),
    ] = 30.0,
    probe_timeout: Annotated[
        float, typer.Option("--probe-timeout", min=0.05, help="Liveness probe timeout.")
    ] = 0.5,
    down_after: Annotated[
        int, typer.Option("--down-after", min=1, help="Failed probes in a row before down.")
    ] = 2,
    up_after: Annotated[
        int, typer.Option("--up-after", min=1, help="Successful probes in a row before up again.")
    ] = 2,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Start-up seconds whose failures do not count.")
    ] = 5.0,
    slow_ms: Annotated[
        float,
        typer.Option(
            "--slow-ms",
            min=0,
            help="Degraded when the median of the last 3 probes is slower than this (0 = never).",
        ),
    ] = 100.0,
    retention: Annotated[
        str, typer.Option("--retention", help="History kept in SQLite (90s, 30m, 1h, 7d).")
    ] = "7d",
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="STACKPROBE_TOKEN", help="Bearer token; required beyond loopback."
        ),
    ] = None,
    location: Annotated[
        str | None,
        typer.Option("--location", help="A `location` label on every /metrics and /probe series."),
    ] = None,
    held: Annotated[
        bool,
        typer.Option(
            "--held/--no-held",
            help="Hold one idle connection per service (Redis, Celery broker, Consul, collector, "
            "Prometheus, Tempo): its close is a failed probe at once. --no-held: probes only.",
        ),
    ] = True,
) -> int:
    """Live health monitor: page, JSON API, /metrics, /probe (blackbox style), /healthz. Exit 130 after Ctrl-C, 2 bad config or a non-loopback --host without --token."""
    from stackprobe.monitor.core import Monitor
    from stackprobe.monitor.history import History
    from stackprobe.monitor.server import (
        MonitorServer,
        require_token_beyond_loopback,
        serve_until_stopped,
    )
    from stackprobe.monitor.state import Policy

    require_token_beyond_loopback(host, token)
    stack = stack_of(config, sandbox)
    stack.require_secrets(list(stack.services))
    history = History(
        state_dir() / "monitor" / "history.sqlite",
        duration_option("--retention", retention),
    )
    monitor = Monitor(
        stack,
        history,
        policy=Policy(
            down_after=down_after, up_after=up_after, grace_s=grace, slow_ms=slow_ms or None
        ),
        interval=interval,
        full_interval=full_interval,
        flow_interval=flow_interval,
        probe_timeout=probe_timeout,
        state=state_dir(),
        hold=held,
        location=location,
    )
    server = MonitorServer(monitor, host, port, token)
    console = err_console()

    def announce(bound: MonitorServer) -> None:
        where = f"http://{bound.host}:{bound.port}/"
        console.print(
            f"stackprobe serve: {where} (API {where}api/status, {where}metrics); Ctrl-C stops",
            markup=False,
        )

    try:
        return asyncio.run(serve_until_stopped(monitor, server, announce))
    finally:
        history.close()


@sandbox_app.command("up")
def sandbox_up(
    ha: Annotated[
        bool | None,
        typer.Option(
            "--ha/--no-ha",
            help="Also run the HA profile: a Redis primary, replica and three Sentinels, a three-server Consul cluster, Jaeger on badger (kept until --no-ha).",
            show_default=False,
        ),
    ] = None,
    proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--proxy",
            metavar="SERVICE",
            help="Put Toxiproxy in front of this stack service (repeatable; kept until --no-proxy).",
        ),
    ] = None,
    no_proxy: Annotated[
        bool, typer.Option("--no-proxy", help="Remove every Toxiproxy proxy.")
    ] = False,
) -> int:
    """Start the sandbox's services (only those not running) and write its stack file. Exit 0 ready, 1 a service did not start, 2 a binary is missing or a bad --proxy."""
    console = err_console()
    box = Sandbox()
    proxies = (
        ()
        if no_proxy
        else (tuple(dict.fromkeys((*box.profile.proxies, *proxy))) if proxy else None)
    )
    if ha is not None or proxies is not None:
        box.set_profile(ha=ha, proxies=proxies)
    stack_file = box.up(on_event=lambda line: console.print(f"sandbox: {line}", markup=False))
    print(f"sandbox ready; stack file {stack_file}; next: stackprobe run --sandbox")
    return 0


@sandbox_app.command("status")
def sandbox_status() -> int:
    """Show each sandbox service: pid, ports, ready. Exit 0 all running, 1 otherwise."""
    statuses = Sandbox().status()
    table = Table(title=f"sandbox in {Sandbox().root}", title_justify="left")
    for col in ("service", "state", "pid", "ports", "log"):
        table.add_column(col)
    for s in statuses:
        state = "ready" if s.ready else ("running, not ready" if s.running else "stopped")
        ports = ", ".join(f"{k}={v}" for k, v in s.ports.items())
        table.add_row(s.component, state, str(s.pid or "-"), ports or "-", str(s.log))
    Console(highlight=False).print(table)
    return 0 if all(s.ready for s in statuses) else 1


@sandbox_app.command("down")
def sandbox_down() -> int:
    """Stop exactly the processes the sandbox started. Exit 0."""
    console = err_console()
    stopped = Sandbox().down(on_event=lambda line: console.print(f"sandbox: {line}", markup=False))
    print(f"sandbox stopped ({len(stopped)} process(es))")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point: turns every error into one line and the documented exit code."""
    code = _invoke(argv)
    sys.exit(code)


def _invoke(argv: list[str] | None) -> int:
    try:
        rv: Any = app(args=argv, standalone_mode=False, prog_name="stackprobe")
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("stackprobe: interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # usage errors: bad option, bad value, missing argument
        exc.show()  # type: ignore[attr-defined]
        return 2
    except ConfigError as exc:
        if _debug:
            raise
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except StackprobeError as exc:
        if _debug:
            raise
        print(f"stackprobe: {exc}", file=sys.stderr)
        return exc.exit_code
    return int(rv) if isinstance(rv, int) else 0
