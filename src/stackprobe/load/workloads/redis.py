"""Redis workloads on the kind's own client (redis.asyncio): a get/set mix, session touch,
cache-aside. Each lane holds one connection of the client's pool (`client.client()`), as
each client of redis-benchmark does. Every key is `<ns>load-...` with a TTL of at most
`KEY_TTL_MS`, and is deleted by name afterwards."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from stackprobe.check import CheckContext
from stackprobe.load.engine import Op
from stackprobe.load.workload import workload
from stackprobe.services.redis import KEY_TTL_MS

KEYS = 1000  # the keyspace of one run
VALUE = b"x" * 64
READ_SHARE = 0.9
DELETE_BATCH = 500
LOW_RATE = 2000.0  # not disruptive up to here: a few percent of one Redis core's capacity


def _keyspace(ctx: CheckContext[aioredis.Redis], what: str) -> list[str]:
    """The run's keys for this workload, their deletion registered before any is written."""
    keys = [ctx.name(f"load-{what}-{i}") for i in range(KEYS)]

    async def delete() -> None:
        for i in range(0, len(keys), DELETE_BATCH):
            await ctx.client.delete(*keys[i : i + DELETE_BATCH])

    ctx.cleanup(delete, f"delete {len(keys)} load key(s)")
    return keys


async def _lanes(ctx: CheckContext[aioredis.Redis], count: int) -> list[aioredis.Redis]:
    """One single-connection client per lane, on the kind's pool, connected before the load
    (a connect is not an operation) and closed afterwards."""
    lanes = [ctx.client.client() for _ in range(count)]

    async def close() -> None:
        for lane in lanes:
            await lane.aclose()

    ctx.cleanup(close, "close the lanes' connections")
    await asyncio.gather(*(lane.ping() for lane in lanes))
    return lanes


async def _per_lane(
    ctx: CheckContext[aioredis.Redis],
    lanes: int,
    keys: list[str],
    body: Callable[[aioredis.Redis, str], Awaitable[Any]],
) -> list[Op]:
    """One operation per lane: `body(lane, a random key of the keyspace)`."""

    def op_for(lane: aioredis.Redis) -> Op:
        async def op() -> Any:
            return await body(lane, keys[random.randrange(KEYS)])

        return op

    return [op_for(lane) for lane in await _lanes(ctx, lanes)]


async def _seed(ctx: CheckContext[aioredis.Redis], keys: list[str]) -> None:
    pipe = ctx.client.pipeline(transaction=False)
    for key in keys:
        pipe.set(key, VALUE, px=KEY_TTL_MS)
    await pipe.execute()


@workload(
    "redis",
    name="get_set",
    title="90 % GET / 10 % SET (with a TTL) over 1,000 keys",
    low_rate=LOW_RATE,
)
async def get_set(ctx: CheckContext[aioredis.Redis], lanes: int) -> list[Op]:
    keys = _keyspace(ctx, "kv")
    await _seed(ctx, keys)

    async def body(lane: aioredis.Redis, key: str) -> Any:
        if random.random() < READ_SHARE:
            return await lane.get(key)
        return await lane.set(key, VALUE, px=KEY_TTL_MS)

    return await _per_lane(ctx, lanes, keys, body)


@workload(
    "redis",
    name="session_touch",
    title="read a session hash and slide its expiry (HGETALL + PEXPIRE, one round trip)",
    low_rate=LOW_RATE,
)
async def session_touch(ctx: CheckContext[aioredis.Redis], lanes: int) -> list[Op]:
    keys = _keyspace(ctx, "session")
    pipe = ctx.client.pipeline(transaction=False)
    for key in keys:
        pipe.hset(key, mapping={"user": "load", "seen": "0"})
        pipe.pexpire(key, KEY_TTL_MS)
    await pipe.execute()

    async def body(lane: aioredis.Redis, key: str) -> Any:
        touch = lane.pipeline(transaction=False)
        touch.hgetall(key)
        touch.pexpire(key, KEY_TTL_MS)
        session, _ = await touch.execute()
        if not session:
            raise LookupError(f"session {key} is gone")
        return session

    return await _per_lane(ctx, lanes, keys, body)


@workload(
    "redis",
    name="cache_aside",
    title="GET; on a miss compute and SET with a TTL (the cache fills during the run)",
    low_rate=LOW_RATE,
)
async def cache_aside(ctx: CheckContext[aioredis.Redis], lanes: int) -> list[Op]:
    keys = _keyspace(ctx, "cache")

    async def body(lane: aioredis.Redis, key: str) -> Any:
        value = await lane.get(key)
        if value is None:
            await lane.set(key, VALUE, px=KEY_TTL_MS)
        return value

    return await _per_lane(ctx, lanes, keys, body)
