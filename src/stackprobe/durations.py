"""One duration parser for every place a person writes a duration.

It reads what people write in stack files and on the command line (`90s`, `30m`, `1h`, `2d`,
`500ms`) and what services print (Go's `168h0m0s`, Tempo's `336h`): one or more number+unit
parts, units ns, us, µs, ms, s, m, h, d, w. A bare number is refused: the unit is the point.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
EXAMPLES = "like 500ms, 90s, 30m, 1h, 2d or 1m30s"


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError (saying what a duration looks like) when it is not one."""
    value = str(text).strip()
    parts = _PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"{text!r} is not a duration {EXAMPLES}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """A short human form for messages: 0.25 s -> "250ms", 90 -> "90s", 7200 -> "2h"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _valid_duration(text: str) -> str:
    parse_duration(text)
    return text


# a duration written in a stack file, kept as written (messages quote it) and validated at load
DurationText = Annotated[str, AfterValidator(_valid_duration)]
