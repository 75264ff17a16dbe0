"""What every command-line verb does the same way: find and load the stack, write the
document to stdout or `-o`, save the run result (cli.py and the verbs beside their libraries,
compose/commands.py and load/commands.py, share these)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console

from stackprobe.config import Stack, find_stack_file
from stackprobe.errors import ConfigError
from stackprobe.loader import load_stack
from stackprobe.results import RunResult
from stackprobe.sandbox.manager import Sandbox
from stackprobe.state import state_dir
from stackprobe.store import save_result


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stack_of(config: str | None, sandbox: bool) -> Stack:
    """-c FILE or --sandbox (not both), loaded and validated; warnings go to stderr."""
    if sandbox and config:
        raise ConfigError("--sandbox and -c/--config cannot be combined: pick one stack")
    path = Sandbox().require_running() if sandbox else find_stack_file(config)
    stack = load_stack(path)
    for warning in stack.warnings:
        err_console().print(f"warning: {warning}", markup=False)
    return stack


def write_document(document: str, output: Path | None) -> None:
    """The document to stdout, or to `output` (ConfigError when it cannot be written)."""
    if output is None:
        sys.stdout.write(document)
        sys.stdout.flush()
        return
    try:
        output.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write: {exc.strerror or exc}") from None


def color_for(output: Path | None) -> bool:
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
