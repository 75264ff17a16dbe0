"""One result type for every reporter, the dashboard and the pytest plugin (DESIGN "Run result")."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stackprobe.check import Outcome, Severity
from stackprobe.errors import ConfigError

SCHEMA_VERSION = 1


class CheckResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    check: str
    service: str
    kind: str
    capability: str
    title: str = ""
    outcome: Outcome
    severity: Severity = Severity.ERROR
    disruptive: bool = False
    duration_s: float
    message: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)

    @property
    def counts_as_failure(self) -> bool:
        """A failed or errored check sets exit 1, unless it is a failed warning."""
        if self.outcome is Outcome.ERROR:
            return True
        return self.outcome is Outcome.FAILED and self.severity is Severity.ERROR


class LogTail(BaseModel):
    """The last lines of a service's log, kept with a run where one of its checks failed."""

    model_config = ConfigDict(extra="forbid")

    source: str  # where they come from: "sandbox log <path>", "docker logs <container>", ...
    lines: list[str]


class ServiceInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    version: str | None = None
    waited_s: float | None = None  # `run --wait`: how long until it was alive
    logs: LogTail | None = None


class Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: int = 0
    failed: int = 0
    error: int = 0
    skipped: int = 0


Cell = Literal["passed", "failed", "error", "skipped", "not run"]


class ServiceCoverage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    percent: float
    capabilities: dict[str, Cell]


class Coverage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    percent: float
    services: dict[str, ServiceCoverage]


class RunResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    stackprobe: str
    run_id: str
    stack: str
    started_at: str
    services: dict[str, ServiceInfo]
    duration_s: float
    summary: Summary
    results: list[CheckResult]
    coverage: Coverage
    interrupted: bool = False

    def __repr__(self) -> str:
        # short: asyncio.run formats its main task, result included, when it restores the
        # SIGINT handler; the full repr of 28,000 results took 2-3 s
        return f"RunResult(run_id={self.run_id!r}, summary={self.summary!r})"

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if any(r.counts_as_failure for r in self.results) else 0

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> RunResult:
        """Read a saved result; a file that is not one is a ConfigError naming the file."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ConfigError(
                f"{path}: not a stackprobe run result: {loc}: {first['msg']}"
            ) from None


def summarize(results: list[CheckResult]) -> Summary:
    summary = Summary()
    for result in results:
        setattr(summary, result.outcome.value, getattr(summary, result.outcome.value) + 1)
    return summary
