"""The run result as JSON (the schema in DESIGN.md)."""

from __future__ import annotations

from stackprobe.results import RunResult


def render_json(result: RunResult, color: bool = False) -> str:
    del color  # JSON is never coloured
    return result.to_json()
