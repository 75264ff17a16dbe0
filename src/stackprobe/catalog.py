"""The catalog: every kind stackprobe knows and every check it can run.

The CLI, the pytest plugin and the monitor all read this one catalog.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from stackprobe.check import CheckSpec
from stackprobe.kinds import Kind


@cache
def known_kinds() -> dict[str, Kind[Any]]:
    """Kind name -> Kind, importing every service module once."""
    from stackprobe.services import celery, redis

    kinds: list[Kind[Any]] = [celery.KIND, redis.KIND]
    return {kind.name: kind for kind in sorted(kinds, key=lambda k: k.name)}


def all_checks() -> list[CheckSpec]:
    return [spec for kind in known_kinds().values() for spec in kind.checks]
