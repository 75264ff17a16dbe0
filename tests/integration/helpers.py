"""Run checks through the real engine against a stack file written by the test."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from stackprobe.loader import load_stack
from stackprobe.results import RunResult
from stackprobe.runner import Runner, Selection, make_plan


def write_stack(tmp_path: Path, services: dict[str, object], name: str = "stackprobe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"version": 1, "stack": "test", "services": services}))
    return path


def run_stack(path: Path, timeout: float | None = None, **selection: Any) -> RunResult:
    plan = make_plan(load_stack(path), Selection(**selection))
    return asyncio.run(Runner(plan, timeout=timeout).run())


def outcomes(result: RunResult) -> dict[str, str]:
    return {r.check: r.outcome.value for r in result.results}
