"""What every command shares: the stack a command works on (-c / --sandbox), where its
output goes (stdout or -o, colour only for a terminal), the report formats, and saving the
run result. The verbs of cli.py and of each area's commands module use these."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stackprobe.config import Stack, find_stack_file
from stackprobe.durations import parse_duration
from stackprobe.errors import ConfigError
from stackprobe.loader import load_stack
from stackprobe.progress import LineProgress, LiveProgress
from stackprobe.redact import Redactor
from stackprobe.report import RENDERERS
from stackprobe.report.ci import failures_by_service, step_summary
from stackprobe.report.matrix import stack_arg_for
from stackprobe.results import RunResult
from stackprobe.runner import Plan, Runner
from stackprobe.sandbox.manager import Sandbox
from stackprobe.state import state_dir
from stackprobe.store import save_result


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "-c", "--config", help="Stack file (else $STACKPROBE_CONFIG, else ./stackprobe.yaml)."
    ),
]
SandboxOpt = Annotated[
    bool, typer.Option("--sandbox", help="Use the running sandbox's stack file.")
]
OutputOpt = Annotated[
    Path | None, typer.Option("-o", "--output", help="Write the report here, not stdout.")
]


def stack_of(config: str | None, sandbox: bool, wait: float = 0.0) -> Stack:
    """The stack the user named; with `wait` seconds, a sandbox still starting is waited for."""
    if sandbox and config:
        raise ConfigError("--sandbox and -c/--config cannot be combined: pick one stack")
    path = _sandbox_stack(wait) if sandbox else find_stack_file(config)
    stack = load_stack(path)
    for warning in stack.warnings:
        err_console().print(f"warning: {warning}", markup=False)
    return stack


def _sandbox_stack(wait: float) -> Path:
    box = Sandbox()
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            return box.require_running()
        except ConfigError:
            if time.monotonic() >= deadline:
                raise
            if not said:
                say_wait("sandbox", f"waiting: no sandbox running in {box.root} yet")
                said = True
            time.sleep(0.25)


def duration_option(option: str, text: str) -> float:
    """Seconds of a duration option (90s, 2m, 1h); one clear line when it is not one."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


LOG_LINES = 50  # the last lines of a failing service's log in the report (--log-lines)


class Format(StrEnum):
    text = "text"
    json = "json"
    junit = "junit"
    html = "html"
    markdown = "markdown"


def write_output(document: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(document)
        sys.stdout.flush()
        return
    try:
        output.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write: {exc.strerror or exc}") from None


def use_color(output: Path | None) -> bool:
    return output is None and sys.stdout.isatty() and "NO_COLOR" not in os.environ


def save_run(result: RunResult) -> Path:
    """Every run is saved in the result store; a failure to save is a warning, not an error."""
    try:
        return save_result(result)
    except OSError as exc:
        err_console().print(
            f"warning: could not save the run result in {state_dir() / 'runs'}: {exc.strerror}",
            markup=False,
        )
        return state_dir() / "runs" / f"{result.run_id}.json"


def execute(
    plan: Plan,
    fmt: Format,
    output: Path | None,
    stack_arg: str | None = None,
    log_lines: int = LOG_LINES,
    *,
    live: AbstractContextManager[Any] | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    appendix: Callable[[RunResult], str] | None = None,
    log_each: bool = False,
    **runner: Any,
) -> RunResult:
    """Run a plan with live progress, save its result, write the report (redacted), and say
    the summary on stderr when the report is not the text on a terminal. In CI, append the
    verdict and failures to $GITHUB_STEP_SUMMARY, and end the text report with the failures
    grouped per service with a rerun command. A verb with its own live display (`load`) gives
    it as `live`, its event loop as `loop_factory` and tables after the text as `appendix`.
    `log_each` (slow checks, few of them): off a terminal, one stderr line per finished check.
    The caller turns `result.exit_code` into the command's exit code."""
    progress: LiveProgress | LineProgress = LiveProgress(
        enabled=sys.stderr.isatty() and live is None
    )
    if log_each and not sys.stderr.isatty():
        progress = LineProgress()
    runner.setdefault("on_wait", say_wait)
    with (
        progress,
        live or contextlib.nullcontext(),
        asyncio.Runner(loop_factory=loop_factory) as loop,
    ):
        result = loop.run(Runner(plan, progress=progress, log_lines=log_lines, **runner).run())
    saved = save_run(result)
    stack_arg = stack_arg or stack_arg_for(result)
    redactor = Redactor(plan.stack.secrets())
    document = RENDERERS[fmt.value](result, use_color(output))
    if appendix is not None and fmt is Format.text:
        document += appendix(result)
    if fmt is Format.text and os.environ.get("CI") == "true" and not sys.stderr.isatty():
        document += failures_by_service(result, stack_arg)
    write_output(redactor.text(document), output)
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        _append(Path(summary), redactor.text(step_summary(result, stack_arg)))
    if output is not None or fmt is not Format.text:
        s = result.summary
        err_console().print(
            f"{s.passed} passed, {s.failed} failed, {s.error} error, {s.skipped} skipped; "
            f"coverage {result.coverage.percent:g}%; result saved to {saved}",
            markup=False,
        )
    return result


def say_wait(service: str, what: str) -> None:
    err_console().print(f"wait: {service}: {what}", markup=False)


def _append(path: Path, text: str) -> None:
    """Add to a CI summary file; a summary that cannot be written is a warning."""
    try:
        with path.open("a", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        err_console().print(
            f"warning: cannot append to {path}: {exc.strerror or exc}", markup=False
        )


def stack_arg_of(config: str | None, sandbox: bool) -> str:
    """How a rerun command names the stack the user gave."""
    if sandbox:
        return "--sandbox"
    return f"-c {config}" if config else ""
