"""The CLI verbs `stackprobe load SERVICE` and `stackprobe load-worker`.

`load` builds one stack-level check from its options (`services/stack_load.load_spec`) and
runs it through the runner (`stack_plan` + `Runner`), so the report formats, the saved run
result, coverage (`stack` / `load`), redaction, exit codes and Ctrl-C cleanups are those of
`stackprobe run`. Errors are ConfigError (one line, exit 2), printed by the CLI's entry point.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from stackprobe.config import Stack
from stackprobe.durations import parse_duration
from stackprobe.errors import ConfigError
from stackprobe.frontend import (
    ConfigOpt,
    Format,
    OutputOpt,
    SandboxOpt,
    execute,
    stack_arg_of,
    stack_of,
)
from stackprobe.load.limits import (
    DEFAULT_CONCURRENCY,
    DEFAULT_THRESHOLD,
    LOW_RATE,
    MAX_DURATION,
    MAX_RATE,
)
from stackprobe.progress import LoadProgress
from stackprobe.results import RunResult
from stackprobe.runner import Selection, stack_plan

if TYPE_CHECKING:
    from stackprobe.services.stack_load import LoadRequest

DEFAULT_DURATION = "10s"
DEADLINE_MARGIN = 60.0


def _seconds(option: str, text: str) -> float:
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _request(
    stack: Stack,
    service: str,
    *,
    rate: float | None,
    maximum: bool,
    duration: str,
    **kwargs: Any,
) -> LoadRequest:
    """The request, every argument checked (ConfigError, one line, exit 2)."""
    from stackprobe.load.analysis import CLOSED_LOOP, OPEN_LOOP  # the engine loads only for `load`
    from stackprobe.load.baseline import read_baseline, require_comparable
    from stackprobe.load.workload import find_workload
    from stackprobe.services.stack_load import LoadRequest

    if service not in stack.services:
        known = ", ".join(stack.services) or "none"
        raise ConfigError(f"SERVICE: no service {service!r} in {stack.path} (services: {known})")
    if rate is not None and maximum:
        raise ConfigError("--rate and --max cannot be combined: a constant rate or the maximum")
    if rate is not None and not 0 < rate <= MAX_RATE:
        raise ConfigError(f"--rate: {rate:g} is not in (0, {MAX_RATE:g}] operations per second")
    seconds = _seconds("--duration", duration)
    if not 0 < seconds <= MAX_DURATION:
        raise ConfigError(f"--duration: {duration} is not between 0 and {MAX_DURATION:g} s (1h)")
    chosen = find_workload(service, stack.service(service).kind, kwargs.get("workload"))
    compare = kwargs.get("compare")
    document = None
    if compare is not None:
        document = read_baseline(compare)
        mode = CLOSED_LOOP if maximum else OPEN_LOOP
        require_comparable(compare, document, stack.service(service).kind, chosen.name, mode)
    return LoadRequest(
        service=service,
        rate=None if maximum else (rate or LOW_RATE),
        duration=seconds,
        compare_document=document,
        **kwargs,
    )


def load_command(
    service: Annotated[str, typer.Argument(metavar="SERVICE", help="The service to load.")],
    config: ConfigOpt = None,
    sandbox: SandboxOpt = False,
    workload: Annotated[
        str | None,
        typer.Option("--workload", help="Workload of the service's kind (default: its first)."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", help=f"Operations per second, open loop (default {LOW_RATE:g}).", metavar="R"
        ),
    ] = None,
    maximum: Annotated[
        bool, typer.Option("--max", help="Closed loop: as fast as the lanes can (disruptive).")
    ] = False,
    duration: Annotated[
        str,
        typer.Option(
            "--duration", help="Seconds (5) or a duration (30s, 2m); at most 1h.", metavar="S"
        ),
    ] = DEFAULT_DURATION,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            min=1,
            max=4096,
            help="Lanes (operations in flight at most).",
            metavar="C",
        ),
    ] = DEFAULT_CONCURRENCY,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            max=256,
            help="Run on N Locust worker processes (0: in this process).",
            metavar="N",
        ),
    ] = 0,
    local_workers: Annotated[
        int | None,
        typer.Option(
            "--local-workers",
            min=0,
            help="Workers started on this machine (default: all N; the rest join with load-worker).",
            metavar="K",
        ),
    ] = None,
    master_bind: Annotated[
        str,
        typer.Option(
            "--master-bind",
            help="Where the Locust master listens (0.0.0.0:5557 for other machines).",
            metavar="HOST:PORT",
        ),
    ] = "127.0.0.1:0",
    allow_disruption: Annotated[
        bool,
        typer.Option(
            "--allow-disruption",
            help=f"Needed above the workload's low rate ({LOW_RATE:g} ops/s; Redis 2000) and for --max (sandbox, or disruption: allowed).",
        ),
    ] = False,
    save_baseline: Annotated[
        Path | None,
        typer.Option(
            "--save-baseline", help="Write this run's figures as a baseline.", metavar="FILE"
        ),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare", help="Fail on a regression against this baseline.", metavar="FILE"
        ),
    ] = None,
    max_regression: Annotated[
        float,
        typer.Option(
            "--max-regression",
            min=0,
            help="Percent a percentile may grow (or throughput drop) before it is a regression.",
            metavar="PCT",
        ),
    ] = DEFAULT_THRESHOLD * 100,
    telemetry: Annotated[
        bool,
        typer.Option(
            "--telemetry/--no-telemetry",
            help="Export the live figures as OTLP metrics through the stack's collector.",
        ),
    ] = True,
    fmt: Annotated[Format, typer.Option("--format", help="Report format.")] = Format.text,
    output: OutputOpt = None,
) -> int:
    """Bounded load against one service: open-loop constant rate (latency from each operation's intended start) or --max throughput; HdrHistogram percentiles, achieved vs target rate, errors by kind, SLO verdict per window and overall, generator-bound detection, baselines. Exit 0 the SLO held (or none is set), 1 the SLO was breached, a regression, errors, or the generator was the bottleneck, 2 bad arguments or config, 130 interrupted (after cleanups)."""
    stack = stack_of(config, sandbox)
    if local_workers is not None and local_workers > workers:
        raise ConfigError(f"--local-workers {local_workers} is more than --workers {workers}")
    progress = LoadProgress(sys.stderr.isatty(), _seconds("--duration", duration))
    request = _request(
        stack,
        service,
        rate=rate,
        maximum=maximum,
        duration=duration,
        workload=workload,
        concurrency=concurrency,
        workers=workers,
        local_workers=local_workers,
        master_bind=master_bind,
        save_baseline=save_baseline,
        compare=compare,
        threshold=max_regression / 100,
        telemetry=telemetry,
        on_tick=(progress.tick,),
    )
    from stackprobe.services.stack_load import load_spec  # the engine loads only for `load`

    spec = load_spec(request, stack.service(service).kind)
    plan = stack_plan(stack, [spec], Selection(allow_disruption=allow_disruption, sandbox=sandbox))
    stack.require_secrets([service])
    from stackprobe.load.engine import new_event_loop

    result = execute(
        plan,
        fmt,
        output,
        stack_arg_of(config, sandbox),
        live=progress,
        loop_factory=new_event_loop,
        appendix=summary_text,
        deadline=(spec.timeout or 0) + DEADLINE_MARGIN,
    )
    return result.exit_code


def summary_text(result: RunResult) -> str:
    """Percentiles, rates, windows and the generator in plain tables, after the report."""
    buffer = io.StringIO()
    console = Console(width=120, no_color=True, highlight=False, file=buffer)
    for r in result.results:
        e = r.evidence
        if "overall" not in e or "windows" not in e:
            continue
        o = e["overall"]
        table = Table(
            title=f"{e.get('service')} · {e.get('workload')} · {e.get('mode')}",
            title_justify="left",
        )
        for col in (
            "ops/s",
            "target",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "error rate",
        ):
            table.add_column(col, justify="right")
        table.add_row(
            f"{o['rate']:g}", f"{o['target_rate']:g}" if o.get("target_rate") else "max",
            *(f"{o[k]:g}" for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")),
            str(o["errors"]), f"{o['error_rate']:.3%}",
        )  # fmt: skip
        console.print(table)
        windows = Table(title=f"SLO windows ({e['slo']['window_s']} s)", title_justify="left")
        for col in ("window", "ops/s", "p50 ms", "p99 ms", "errors", "verdict"):
            windows.add_column(col)
        for i, w in enumerate(e["windows"], 1):
            verdict = "pass" if w["passed"] else "FAIL: " + "; ".join(w["breaches"])
            if e["slo"]["targets"] is None:
                verdict = "no slo"
            windows.add_row(f"{i} ({w['start_s']}-{w['end_s']:g} s)", f"{w['rate']:g}", f"{w['p50_ms']:g}", f"{w['p99_ms']:g}", str(w["errors"]), verdict)  # fmt: skip
        console.print(windows)
        gen = e["generator"]
        console.print(
            f"generator: {'BOUND — ' + gen['reason'] if gen['bound'] else 'not bound'}"
            + (f" ({gen['limited_by']}-bound: {gen['reason']})" if gen["limited_by"] == "concurrency" else "")
            + "; " + ", ".join(f"{p['name']} busy {p['busy_share']:.0%}, lag p99 {p['lag_p99_ms']:g} ms" for p in gen["processes"])
        )  # fmt: skip
        if e.get("error_kinds"):
            console.print(
                "errors by kind: " + "; ".join(f"{n}× {k}" for k, n in e["error_kinds"].items())
            )
    return buffer.getvalue()


def load_worker_command(
    master: Annotated[
        str,
        typer.Option(
            "--master",
            help="The master's HOST:PORT (stackprobe load --workers N --master-bind ...).",
            metavar="HOST:PORT",
            show_default=False,
        ),
    ],
    config: Annotated[
        str | None,
        typer.Option(
            "-c",
            "--config",
            help="This machine's stack file (else $STACKPROBE_CONFIG, else ./stackprobe.yaml).",
        ),
    ] = None,
    sandbox: SandboxOpt = False,
) -> int:
    """Join a distributed load as a Locust worker: run the share the master sends, against the service as this machine's stack file configures it. Exit 0 after the master quits, 2 bad arguments or config."""
    stack = stack_of(config, sandbox)
    from stackprobe.load.locust.worker import run  # Locust only in this process

    run(["--master", master, "-c", str(stack.path)])  # exits the process when the master quits
    return 0
