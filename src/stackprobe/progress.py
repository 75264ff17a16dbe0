"""Live progress on stderr while checks or a load run; silent when stderr is not a terminal
(rule 8). Verbs whose checks take minutes each (`scenario run`) log one line per finished
check instead when stderr is not a terminal, so a CI log shows how far a run got."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from stackprobe.check import Outcome
from stackprobe.load.engine import Tick
from stackprobe.results import CheckResult
from stackprobe.runner import PlanItem


class _Bar:
    """A transient rich progress bar on stderr: `label`, the bar, `columns`, the elapsed time
    and a description."""

    def __init__(self, enabled: bool, label: str, *columns: ProgressColumn) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            *columns,
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=True,
            disable=not enabled,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)


class LiveProgress(_Bar):
    """Checks done of total, failures so far, the check that just ended."""

    def __init__(self, enabled: bool) -> None:
        super().__init__(enabled, "checks", MofNCompleteColumn())
        self._failed = 0

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


class LineProgress:
    """One stderr line per check as it ends: `[2/7] scenario redis-crash [stack]: passed in 9.1 s`.
    Used where a live bar is off (stderr not a terminal) and checks are few and slow."""

    def __init__(self) -> None:
        self._total = 0
        self._done = 0
        self._console = Console(stderr=True, highlight=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def started(self, total: int) -> None:
        self._total = total

    def check_started(self, item: PlanItem) -> None:
        pass

    def check_finished(self, result: CheckResult) -> None:
        self._done += 1
        self._console.print(
            f"[{self._done}/{self._total}] {result.title} [{result.service}]: "
            f"{result.outcome.value} in {result.duration_s:.1f} s",
            markup=False,
        )


class LoadProgress(_Bar):
    """A load's elapsed time of its duration, the last second's rate, p50 and p99, and the
    errors so far (`tick` is the engine's on_tick hook)."""

    def __init__(self, enabled: bool, duration: float) -> None:
        super().__init__(enabled, "load")
        self._task = self._progress.add_task("starting", total=duration)
        self.duration = duration

    def tick(self, tick: Tick) -> None:
        assert self._task is not None
        target = f"/{tick.target_rate:g}" if tick.target_rate else ""
        self._progress.update(
            self._task,
            completed=min(self.duration, tick.elapsed_s),
            description=(
                f"{tick.ops + tick.errors}{target} ops/s · p50 {tick.p50_ms:g} ms · "
                f"p99 {tick.p99_ms:g} ms · {tick.total_errors} error(s)"
            ),
        )
