"""The run-result store: every run's result as `<state dir>/runs/<run_id>.json`.

`stackprobe run`, the pytest plugin's sessions and the monitor's full runs all save here, so
`stackprobe coverage` (the latest by default) and the monitor's `/api/runs/latest` agree.
Run ids start with their UTC start time, so names sort by age.
"""

from __future__ import annotations

from pathlib import Path

from stackprobe.errors import ConfigError
from stackprobe.results import RunResult
from stackprobe.state import state_dir


def runs_dir(root: Path | None = None) -> Path:
    return (root or state_dir()) / "runs"


def save_result(result: RunResult, root: Path | None = None) -> Path:
    """Write the result (atomically: a reader never sees half a file); OSError on failure."""
    path = runs_dir(root) / f"{result.run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(result.to_json(), encoding="utf-8")
    partial.replace(path)
    return path


def latest_result_path(root: Path | None = None) -> Path:
    """The latest saved run; ConfigError saying how to make one when there is none."""
    runs = runs_dir(root)
    found = sorted(runs.glob("*.json"), key=lambda p: (p.name[:16], p.stat().st_mtime_ns))
    if not found:
        raise ConfigError(
            f"no saved run in {runs}: run `stackprobe run` first, or pass a RESULT.json"
        )
    return found[-1]


def latest_result(root: Path | None = None) -> RunResult:
    return RunResult.load(latest_result_path(root))


def last_durations(stack: str, root: Path | None = None, scan: int = 20) -> dict[str, float]:
    """`check[service]` -> seconds it took in the newest saved runs of `stack` (the newest
    wins), for the runner to start the slowest checks first; {} when there is none."""
    runs = sorted(runs_dir(root).glob("*.json"), key=lambda p: p.name, reverse=True)[:scan]
    durations: dict[str, float] = {}
    for path in runs:
        try:
            result = RunResult.load(path)
        except ConfigError:
            continue
        if result.stack != stack:
            continue
        for r in result.results:
            durations.setdefault(f"{r.check}[{r.service}]", r.duration_s)
    return durations
