"""Held connections for `Kind.watch`: one idle connection per service, whose close or reset
by the server tells the monitor at once that the process died (the kernel closes a dead
process's sockets: the peer reads EOF or a reset within a round trip).

Redis connections are made by the kind's own redis-py client (its pool's connection class and
settings: AUTH, SELECT, TLS, Sentinel's current master); HTTP ones live in `stackprobe.http`.
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stackprobe.explain import explain
from stackprobe.kinds import Held


class HeldRedis:
    """An idle, authenticated Redis connection made by the client's own pool settings."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def closed(self) -> str:
        try:
            while True:  # an idle connection is sent nothing; anything that comes is dropped
                await self.connection.read_response(timeout=math.inf)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            return f"held connection closed: {explain(exc)}"

    async def aclose(self) -> None:
        await self.connection.disconnect(nowait=True)


async def hold_redis(client: aioredis.Redis) -> Held:
    """Open one connection as `client` would (raises when it cannot) and hold it idle."""
    connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    try:
        await connection.connect()
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    return HeldRedis(connection)
