"""Run ids and the name prefix every artifact of a run carries.

A run id embeds its UTC start time (`20261125T115700Z-a1b2c3`) so that `stackprobe clean`
can tell a leftover's age from its name alone, without any bookkeeping on the service.
"""

from __future__ import annotations

import hashlib
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


def service_namespace(run_id: str, service: str) -> str:
    """The prefix of one service's checks: two services on one backend (a cache and a broker
    in one Redis) must never name, and so never clean up, the same thing. A short hash keeps
    names within the tightest limit a kind has (Grafana uids: 40 characters)."""
    return f"{namespace(run_id)}{hashlib.sha1(service.encode()).hexdigest()[:3]}-"  # noqa: S324 - a name, not security


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
