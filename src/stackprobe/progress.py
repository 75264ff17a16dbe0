"""Live progress on stderr while checks run; silent when stderr is not a terminal (rule 8)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from stackprobe.check import Outcome
from stackprobe.results import CheckResult
from stackprobe.runner import PlanItem


class LiveProgress:
    """A rich progress bar: checks done of total, failures so far, the check that just ended."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._failed = 0
        self._progress = Progress(
            TextColumn("[bold]checks"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=True,
            disable=not enabled,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> LiveProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def started(self, total: int) -> None:
        self._task = self._progress.add_task("", total=total)

    def check_started(self, item: PlanItem) -> None:
        pass

    def check_finished(self, result: CheckResult) -> None:
        if self._task is None:
            return
        if result.outcome in (Outcome.FAILED, Outcome.ERROR):
            self._failed += 1
        failed = f"[red]{self._failed} not passed[/] " if self._failed else ""
        self._progress.update(
            self._task, advance=1, description=f"{failed}{result.check} [{result.service}]"
        )
