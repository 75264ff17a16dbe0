"""The CLI verbs over Compose files: `stackprobe compose lint` and `stackprobe discover`.

Kept beside the library so that `cli.py` only mounts them; errors are ConfigError (one line,
exit 2), which the CLI's entry point prints.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from stackprobe.compose.discover import discover, render_stack
from stackprobe.compose.lint import lint
from stackprobe.compose.model import load_compose
from stackprobe.errors import ConfigError

compose_app = typer.Typer(
    help="Docker Compose files: lint them against stackprobe's orchestration rules.",
    no_args_is_help=True,
)


class LintFormat(StrEnum):
    text = "text"
    json = "json"


@compose_app.command("lint")
def compose_lint(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The Compose file.")],
    fmt: Annotated[LintFormat, typer.Option("--format", help="Output format.")] = LintFormat.text,
) -> int:
    """Check a Compose file: healthchecks, startup order, networking, volumes, and unpinned images, plain secrets, privileged containers, admin ports on all interfaces. Each finding names file, service and key, and how to fix it. Exit 0 no error-level finding (warnings allowed), 1 an error-level finding, 2 the file is missing or malformed."""
    report = lint(load_compose(file), str(file))
    sys.stdout.write(report.to_json() if fmt is LintFormat.json else report.to_text())
    return report.exit_code


def discover_command(
    compose: Annotated[
        Path,
        typer.Option(
            "--compose", metavar="FILE", help="The Compose file to read.", show_default=False
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write the stack file here, not stdout."),
    ] = None,
) -> int:
    """Write a stack file for the services of a Compose file: images to kinds, published ports to URLs on 127.0.0.1, credentials as ${VAR} references (never their values), depends_on, and a compose service for the file itself. Exit 0 written, 2 the file is missing or malformed, or -o cannot be written."""
    target_dir = (output.parent if output else Path.cwd()).resolve()
    result = discover(load_compose(compose), compose, target_dir)
    for note in result.notes:
        sys.stderr.write(f"discover: {note}\n")
    document = render_stack(result.stack, compose)
    if output is None:
        sys.stdout.write(document)
        return 0
    try:
        output.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write: {exc.strerror or exc}") from None
    sys.stderr.write(
        f"discover: wrote {output} with {len(result.stack['services'])} services; "
        f"next: stackprobe config check -c {output}\n"
    )
    return 0
