"""What every command shares: the stack a command works on (-c / --sandbox), where its
output goes (stdout or -o, colour only for a terminal), the report formats, and saving the
run result. The verbs of cli.py and of each area's commands module use these."""

from __future__ import annotations

import asyncio
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stackprobe.config import Stack, find_stack_file
from stackprobe.errors import ConfigError
from stackprobe.loader import load_stack
from stackprobe.progress import LiveProgress
from stackprobe.redact import Redactor
from stackprobe.report import RENDERERS
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


def stack_of(config: str | None, sandbox: bool) -> Stack:
    if sandbox and config:
        raise ConfigError("--sandbox and -c/--config cannot be combined: pick one stack")
    path = Sandbox().require_running() if sandbox else find_stack_file(config)
    stack = load_stack(path)
    for warning in stack.warnings:
        err_console().print(f"warning: {warning}", markup=False)
    return stack


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


def execute(plan: Plan, fmt: Format, output: Path | None, **runner: Any) -> RunResult:
    """Run a plan with live progress, save its result, write the report (redacted), and say
    the summary on stderr when the report is not the text on a terminal. The caller turns
    `result.exit_code` into the command's exit code."""
    with LiveProgress(enabled=sys.stderr.isatty()) as progress:
        result = asyncio.run(Runner(plan, progress=progress, **runner).run())
    saved = save_run(result)
    document = RENDERERS[fmt.value](result, use_color(output))
    write_output(Redactor(plan.stack.secrets()).text(document), output)
    if output is not None or fmt is not Format.text:
        s = result.summary
        err_console().print(
            f"{s.passed} passed, {s.failed} failed, {s.error} error, {s.skipped} skipped; "
            f"coverage {result.coverage.percent:g}%; result saved to {saved}",
            markup=False,
        )
    return result
