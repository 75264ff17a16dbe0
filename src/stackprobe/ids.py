"""Run ids and the name prefix every artifact of a run carries.

A run id embeds its UTC start time (`20261125T115700Z-a1b2c3`) so that `stackprobe clean`
can tell a leftover's age from its name alone, without any bookkeeping on the service.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

PREFIX = "stackprobe-"
_RUN_ID = re.compile(r"stackprobe-(?P<ts>\d{8}T\d{6}Z)-(?P<rand>[0-9a-f]{6})")


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id for a run starting at `now` (UTC)."""
    ts = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{ts}-{secrets.token_hex(3)}"


def namespace(run_id: str) -> str:
    """The prefix every name a run creates starts with."""
    return f"{PREFIX}{run_id}-"


def created_at(name: str) -> datetime | None:
    """When the run that created `name` started, or None when `name` is not a run artifact."""
    match = _RUN_ID.search(name)
    if match is None:
        return None
    return datetime.strptime(match["ts"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def is_leftover(name: str, cutoff: datetime) -> bool:
    """True when `name` belongs to a run that started before `cutoff`."""
    started = created_at(name)
    return started is not None and started < cutoff
