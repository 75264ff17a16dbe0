"""Renderers of a RunResult: one function per format, each returning the whole document."""

from __future__ import annotations

from collections.abc import Callable

from stackprobe.report.html import render_html
from stackprobe.report.json import render_json
from stackprobe.report.junit import render_junit
from stackprobe.report.markdown import render_markdown
from stackprobe.report.text import render_text
from stackprobe.results import RunResult

Renderer = Callable[[RunResult, bool], str]  # (result, color) -> document

RENDERERS: dict[str, Renderer] = {
    "text": render_text,
    "json": render_json,
    "junit": render_junit,
    "html": render_html,
    "markdown": render_markdown,
}

__all__ = ["RENDERERS", "Renderer"]
