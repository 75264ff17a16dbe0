"""What a load run recorded, second by second, in a form that merges exactly across workers.

An operation counts in the second in which it completed (second 0 starts at the first
intended start). Each second keeps its latency histogram encoded, so the timelines of several
workers merge by adding counts: the merged percentiles are those of one histogram of every
sample. Windows (the SLO's `window`) are runs of whole seconds; a trailing window shorter
than half a window joins the one before it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stackprobe.load.histogram import Histogram, merged


@dataclass
class Second:
    ops: int = 0  # operations that succeeded
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    latency: str = ""  # encoded histogram of the successes

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "latency": self.latency,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Second:
        return cls(
            ops=int(raw["ops"]),
            errors=int(raw["errors"]),
            error_kinds=Counter({str(k): int(v) for k, v in raw.get("error_kinds", {}).items()}),
            latency=str(raw.get("latency", "")),
        )


@dataclass
class Generator:
    """One generator process's view of itself: how late it started operations, how often
    every lane was busy, and how much CPU it used."""

    name: str = "local"
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the process's CPU time
    busy_s: float = 0.0  # the engine thread on a CPU or waiting for one
    runqueue_s: float = 0.0  # ... of which waiting for a CPU (the machine was busy)
    issued: int = 0  # operations started
    lag: str = ""  # encoded histogram: start lateness of operations whose lane was free
    queued: int = 0  # operations that started late because every lane was still busy
    unfinished: int = 0  # operations still running when the drain time ran out
    service_time: str = ""  # encoded histogram: send to answer, without any wait
    complete: bool = True  # False: the worker was lost and this is what it sent before

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def busy_share(self) -> float:
        return self.busy_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Generator:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass
class Timeline:
    seconds: dict[int, Second] = field(default_factory=dict)
    generators: list[Generator] = field(default_factory=list)

    def add(self, other: Timeline) -> None:
        """Merge another timeline (another worker) into this one, second by second."""
        for index, theirs in other.seconds.items():
            self.add_second(index, theirs)
        self.generators += other.generators

    def add_second(self, index: int, theirs: Second) -> None:
        mine = self.seconds.setdefault(index, Second())
        mine.ops += theirs.ops
        mine.errors += theirs.errors
        mine.error_kinds.update(theirs.error_kinds)
        mine.latency = (
            merged([mine.latency, theirs.latency]).encode() if mine.latency else theirs.latency
        )

    @property
    def length_s(self) -> int:
        return max(self.seconds, default=-1) + 1

    def _between(self, start: float, end: float | None) -> list[Second]:
        return [s for i, s in self.seconds.items() if start <= i and (end is None or i < end)]

    def histogram(self, start: float = 0, end: float | None = None) -> Histogram:
        """The merged latency of seconds [start, end) (end None: to the last)."""
        return merged([s.latency for s in self._between(start, end)])

    def counts(self, start: float = 0, end: float | None = None) -> tuple[int, int, Counter[str]]:
        """(successes, errors, error kinds) of seconds [start, end)."""
        ops = errors = 0
        kinds: Counter[str] = Counter()
        for s in self._between(start, end):
            ops += s.ops
            errors += s.errors
            kinds.update(s.error_kinds)
        return ops, errors, kinds

    def windows(self, window_s: int, elapsed_s: float | None = None) -> list[tuple[int, float]]:
        """[start, end) in seconds of each window over the run's `elapsed_s`; a trailing
        window shorter than half a window joins the one before it."""
        elapsed = float(self.length_s) if elapsed_s is None else max(elapsed_s, 1e-3)
        window_s = max(1, window_s)
        bounds: list[tuple[int, float]] = []
        start = 0
        while start < elapsed:
            bounds.append((start, min(float(start + window_s), elapsed)))
            start += window_s
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < window_s / 2:
            last = bounds.pop()
            bounds[-1] = (bounds[-1][0], last[1])
        return bounds or [(0, elapsed)]

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": {str(i): s.to_json() for i, s in sorted(self.seconds.items())},
            "generators": [g.to_json() for g in self.generators],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Timeline:
        return cls(
            seconds={int(i): Second.from_json(s) for i, s in raw.get("seconds", {}).items()},
            generators=[Generator.from_json(g) for g in raw.get("generators", [])],
        )
