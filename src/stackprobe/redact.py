"""Replace secrets with `***` in every string that leaves stackprobe (DESIGN rule 10)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
# scheme://user:password@host -> scheme://user:***@host, for any URL in any text
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?=@)")


class Redactor:
    """Knows the secret values of one stack and masks them wherever they appear."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first so that a secret containing another is masked whole
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def text(self, value: str) -> str:
        value = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, value)
        for secret in self._secrets:
            value = value.replace(secret, MASK)
        return value

    def data(self, value: Any) -> Any:
        """Redact strings inside nested dicts, lists and tuples; other values pass through."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value
