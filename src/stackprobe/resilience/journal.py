"""A journal file per scenario run: every fault and remedy is written (and flushed) as it
happens, so that a run killed with kill -9 leaves a record of what it broke, which
`stackprobe scenario restore` reads to repair it.

    <state dir>/resilience/<run_id>.jsonl      one JSON object per line; the last is "end"
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def journal_dir(state: Path) -> Path:
    return state / "resilience"


class Journal:
    """Appends events to one run's journal; each line is on disk before the action it names."""

    def __init__(self, state: Path, run_id: str, scenario: str) -> None:
        self.path = journal_dir(state) / f"{run_id}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write("start", scenario=scenario, pid=os.getpid())

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields})
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    def end(self, problems: list[str]) -> None:
        self.write("end", problems=problems)


@dataclass(frozen=True)
class Unfinished:
    """A run whose journal has no end: the faults it applied and did not remedy."""

    path: Path
    scenario: str
    faults: list[dict[str, Any]]  # {"action", "service", "injector", "undo"}


def unfinished(state: Path) -> Iterator[Unfinished]:
    """Journals of runs that never reached their end (killed, or the machine went down)."""
    for path in sorted(journal_dir(state).glob("*.jsonl")):
        events = [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        if not events or events[-1].get("event") == "end":
            continue
        open_faults: list[dict[str, Any]] = []
        for ev in events:
            if ev.get("event") == "fault":
                open_faults.append(ev)
            elif ev.get("event") == "remedy":
                open_faults = [
                    f for f in open_faults
                    if not (f.get("service") == ev.get("service") and f.get("undo") == ev.get("action"))
                ]  # fmt: skip
        yield Unfinished(path, str(events[0].get("scenario", "?")), open_faults)


def close(path: Path, note: str) -> None:
    """Mark a journal ended (after `scenario restore` repaired what it left)."""
    with path.open("a", encoding="utf-8") as out:
        out.write(
            json.dumps({"ts": round(time.time(), 3), "event": "end", "restored": note}) + "\n"
        )
