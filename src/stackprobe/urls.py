"""Small URL helpers shared by kinds whose clients only take URLs."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """Put configured credentials into a URL (e.g. a Celery broker URL)."""
    if not password:
        return url
    parts = urlsplit(url)
    netloc = f"{quote(username or '', safe='')}:{quote(password, safe='')}@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port
