"""Baselines: `--save-baseline FILE` keeps a run's figures and its encoded histogram;
`--compare FILE` flags a regression percentile by percentile.

A percentile regressed when it is more than `threshold` above the baseline's (and more than
`FLOOR_MS` above it, so that microsecond jitter on a sub-millisecond service is not a
regression); throughput (`--max`) regressed when it is more than `threshold` below; the error
rate when it rose by more than `threshold` of itself plus `ERROR_FLOOR`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackprobe.errors import ConfigError

FORMAT = 1
PERCENTILES = ("p50_ms", "p90_ms", "p99_ms", "p999_ms")
FLOOR_MS = 0.05
ERROR_FLOOR = 0.001


def baseline_document(
    *, service: str, kind: str, workload: str, evidence: dict[str, Any], run_id: str, version: str
) -> dict[str, Any]:
    return {
        "stackprobe_baseline": FORMAT,
        "stackprobe": version,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "service": service,
        "kind": kind,
        "workload": workload,
        "mode": evidence["mode"],
        "profile": evidence["profile"],
        "overall": evidence["overall"],
        "histogram": evidence["histogram"],
    }


def save_baseline(path: Path, document: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--save-baseline {path}: cannot write: {exc.strerror or exc}") from None


def read_baseline(path: Path) -> dict[str, Any]:
    """A baseline file; ConfigError (exit 2) naming the file when it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--compare {path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--compare {path}: not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("stackprobe_baseline") != FORMAT:
        raise ConfigError(
            f"--compare {path}: not a stackprobe load baseline (write one with --save-baseline)"
        )
    for key in ("kind", "workload", "mode", "overall"):
        if key not in document:
            raise ConfigError(f"--compare {path}: baseline has no {key!r}")
    return document


def require_comparable(
    path: Path, document: dict[str, Any], kind: str, workload: str, mode: str
) -> None:
    """A baseline of another kind, workload or mode compares nothing: ConfigError."""
    for what, theirs, ours in (
        ("kind", document["kind"], kind),
        ("workload", document["workload"], workload),
        ("mode", document["mode"], mode),
    ):
        if theirs != ours:
            raise ConfigError(
                f"--compare {path}: the baseline's {what} is {theirs!r}, this run's is {ours!r}"
            )


def regressions(
    baseline: dict[str, Any], overall: dict[str, Any], threshold: float
) -> tuple[list[str], dict[str, Any]]:
    """(one line per regression, the comparison as evidence)."""
    base = baseline["overall"]
    found: list[str] = []
    table: dict[str, Any] = {}

    def compare(
        key: str,
        regressed: Callable[[float, float], bool],
        line: Callable[[str, float, float, float], str],
    ) -> None:
        before, now = float(base.get(key, 0)), float(overall.get(key, 0))
        change = (now - before) / before if before else 0.0
        table[key] = {
            "baseline": before,
            "now": now,
            "change": round(change, 4),
            "regressed": regressed(before, now),
        }
        if table[key]["regressed"]:
            found.append(line(key, before, now, change))

    for key in PERCENTILES:
        compare(
            key,
            lambda before, now: now > before * (1 + threshold) and now - before > FLOOR_MS,
            lambda key, before, now, change: (
                f"{key} {before:g} → {now:g} ms (+{change:.0%}, threshold {threshold:.0%})"
            ),
        )
    if baseline["mode"].startswith("closed"):
        compare(
            "rate",
            lambda before, now: now < before * (1 - threshold),
            lambda _, before, now, change: (
                f"throughput {before:g} → {now:g} ops/s ({change:.0%}, threshold -{threshold:.0%})"
            ),
        )
    compare(
        "error_rate",
        lambda before, now: now > before * (1 + threshold) + ERROR_FLOOR,
        lambda key, before, now, _: f"{key} {before:.4g} → {now:.4g}",
    )
    return found, table
