"""Redis: connectivity, data operations, sessions, Celery queue, cache invalidation, persistence.

Every key a check writes is named `stackprobe-<run_id>-redis-...`, carries a TTL so that a
killed run leaves nothing permanent, and is deleted by name in the check's cleanup.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit

import redis as sync_redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import WatchError

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped, expect, ms
from stackprobe.errors import ServiceError
from stackprobe.held import hold_redis
from stackprobe.ids import PREFIX, is_leftover
from stackprobe.kinds import Kind, SyncAccess, Target
from stackprobe.services.celery import CeleryClient, celery_client, probe_task_id
from stackprobe.urls import with_credentials

Client = aioredis.Redis
KEY_TTL_MS = 600_000
OWN_KEY_PREFIXES = (
    PREFIX,
    f"celery-task-meta-{PREFIX}",
)  # upper bound on any key's life, should every cleanup fail
PING_SAMPLES = 20
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3.0


class RedisOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    celery: bool = True
    celery_queue: str = "celery"
    celery_backend: str | None = None
    sentinel_master: str = "mymaster"  # with endpoints.sentinels: the master's name


class RedisExpectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str | None = None  # INFO replication role: master or slave


@functools.cache
def _lib_version() -> str:
    """redis-py's version, read once: each client it builds reads its package metadata
    otherwise (about 2 ms a client, most of the engine's cost over 2,000 services)."""
    try:
        return importlib.metadata.version("redis")
    except importlib.metadata.PackageNotFoundError:
        return "99.99.99"  # what redis-py says itself then


_CALLBACKS: dict[tuple[Any, Any], Any] = {}


def _share_callbacks(client: Client) -> Client:
    """Give the client the one table of reply parsers its protocol uses. redis-py builds a
    table of ~170 entries per client and only ever reads it (stackprobe never registers a
    callback): 13 KB a client, a quarter of a 2,000-service run's peak memory."""
    kwargs = client.connection_pool.connection_kwargs
    key = (kwargs.get("protocol"), kwargs.get("legacy_responses", True))
    client.response_callbacks = _CALLBACKS.setdefault(key, client.response_callbacks)
    return client


def connect_url(url: str, username: str | None = None, password: str | None = None) -> Client:
    """A bounded client: every call has a timeout, and a dead server is retried once, briefly."""
    return _share_callbacks(
        aioredis.Redis.from_url(
            url,
            username=username,
            password=password,
            driver_info=DriverInfo(lib_version=_lib_version()),
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        )
    )


def sentinel_client(
    sentinels: str, master: str, url: str, username: str | None, password: str | None
) -> Client:
    """A client of the current master, as Sentinel names it (redis-py's Sentinel client): it
    asks the Sentinels again when the master changes (after a failover)."""
    addresses = []
    for item in sentinels.split(","):
        host, _, port = item.strip().rpartition(":")
        addresses.append((host.strip("[]"), int(port)))
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        addresses,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        sentinel_kwargs={
            "socket_timeout": CONNECT_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
        },
    )
    db = int((urlsplit(url).path or "/0").lstrip("/") or 0)
    client: Client = sentinel.master_for(
        master,
        db=db,
        username=username,
        password=password,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        driver_info=DriverInfo(lib_version=_lib_version()),
    )
    return client


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[Client]:
    svc = target.config
    assert svc.url is not None  # validated: url is required for this kind
    sentinels = svc.endpoints.get("sentinels")
    if sentinels:
        opts: RedisOptions = target.options
        client = sentinel_client(
            sentinels, opts.sentinel_master, svc.url, svc.username, svc.password
        )
    else:
        client = connect_url(svc.url, svc.username, svc.password)
    try:
        yield client
    finally:
        await client.aclose()


@contextmanager
def _sync_client(target: Target) -> Iterator[sync_redis.Redis]:
    """The blocking client of the plugin's handles, with the same timeouts as the async one."""
    svc = target.config
    client = sync_redis.Redis.from_url(
        svc.url or "",
        username=svc.username,
        password=svc.password,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )
    try:
        yield client
    finally:
        client.close()


def server_of(info: dict[str, Any]) -> tuple[str, str | None]:
    """(server, version) from INFO: Valkey says `redis_version:7.2.4` for compatibility (on
    8.x and 9.x alike) and its own version in `valkey_version`, with `server_name:valkey`."""
    if info.get("valkey_version") or str(info.get("server_name", "")).lower() == "valkey":
        version = info.get("valkey_version") or info.get("redis_version")
        return "Valkey", str(version) if version else None
    version = info.get("redis_version")
    return "Redis", str(version) if version else None


async def _version(client: Client) -> str | None:
    return server_of(await client.info("server"))[1]


async def _liveness(client: Client) -> None:
    if await client.ping() is not True:
        raise CheckFailed("PING did not answer PONG")


async def _sweep(client: Client, target: Target, cutoff: datetime) -> list[str]:
    """Keys of killed runs: any key holding a run prefix whose run started before cutoff."""
    removed = []
    async for key in client.scan_iter(match=f"*{PREFIX}*", count=500):
        name = key.decode("utf-8", "replace")
        # only names stackprobe creates: an application key that merely contains a run id
        # (say "audit:stackprobe-2025...") is not ours
        if name.startswith(OWN_KEY_PREFIXES) and is_leftover(name, cutoff):
            await client.delete(key)
            removed.append(name)
    return removed


class RedisWrites:
    """Resilience write accounting: SET of run-prefixed keys with a TTL, read back with MGET."""

    def __init__(self, ctx: CheckContext[Any], client: Client) -> None:
        self.client = client
        self.prefix = ctx.name(f"redis-w-{secrets.token_hex(2)}-")

    def key(self, i: int) -> str:
        return f"{self.prefix}{i}"

    async def write(self, i: int) -> None:
        await self.client.set(self.key(i), str(i), px=KEY_TTL_MS)

    async def kept(self, acknowledged: list[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(acknowledged), 500):
            chunk = acknowledged[start : start + 500]
            values = await self.client.mget([self.key(i) for i in chunk])
            found |= {i for i, v in zip(chunk, values, strict=True) if v is not None}
        return found

    async def close(self) -> None:
        keys = [k async for k in self.client.scan_iter(match=f"{self.prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await self.client.delete(*keys[start : start + 500])


async def _writes(ctx: CheckContext[Any], service: str) -> RedisWrites:
    return RedisWrites(ctx, await ctx.open(service))


KIND: Kind[Client] = Kind(
    name="redis",
    description="Redis as cache, session store and Celery broker",
    capabilities=(
        "connectivity",
        "operations",
        "sessions",
        "celery-queue",
        "cache-invalidation",
        "persistence",
    ),
    connect=_connect,
    url_schemes=("redis", "rediss"),
    endpoints=("sentinels",),  # host:port,host:port,...: find the master through Sentinel
    options_model=RedisOptions,
    expectations_model=RedisExpectations,
    links={"celery": "celery"},
    version=_version,
    liveness=_liveness,
    watch=hold_redis,
    sweep=_sweep,
    sync=SyncAccess(open=_sync_client, delete=lambda client, key: client.delete(key)),
    writes=_writes,
)
check = KIND.check


def _keys(ctx: CheckContext[Client], *suffixes: str) -> list[str]:
    """Name keys for this check and register their deletion before anything is written."""
    keys = [ctx.name(f"redis-{s}") for s in suffixes]

    async def delete() -> None:
        await ctx.client.delete(*keys)

    ctx.cleanup(delete, f"delete {len(keys)} key(s)")
    return keys


# --- connectivity -----------------------------------------------------------------------------


@check("connectivity", title="PING answers, server version and role reported")
async def check_ping(ctx: CheckContext[Client]) -> str:
    latencies = []
    for _ in range(PING_SAMPLES):
        started = time.perf_counter()
        pong = await ctx.client.ping()
        latencies.append(time.perf_counter() - started)
        expect("PING reply", True, pong)
    info = await ctx.client.info()
    role = str(info.get("role", "?"))
    server, version = server_of(info)
    ctx.evidence.update(
        server=server.lower(),
        version=version,
        redis_version=info.get("redis_version"),
        role=role,
        mode=info.get("redis_mode"),
        connected_clients=info.get("connected_clients"),
        maxmemory_policy=info.get("maxmemory_policy"),
        ping_ms_p50=ms(statistics.median(latencies)),
        ping_ms_max=ms(max(latencies)),
    )
    expected_role = ctx.expectations.role
    if expected_role and expected_role != role:
        raise CheckFailed(f"role: expected {expected_role!r} (expectations.role), saw {role!r}")
    return f"{server} {version} ({role}), PING p50 {ctx.evidence['ping_ms_p50']} ms"


# --- operations -------------------------------------------------------------------------------


@check("operations", title="strings, hashes and lists read back what was written")
async def check_data_types(ctx: CheckContext[Client]) -> str:
    s, h, lst = _keys(ctx, "ops-string", "ops-hash", "ops-list")
    r = ctx.client
    value = "héllo ✓ " + secrets.token_hex(4)
    await r.set(s, value, px=KEY_TTL_MS)
    expect("GET after SET", value.encode(), await r.get(s))
    expect("APPEND length", len(value.encode()) + 3, await r.append(s, "!!!"))
    await r.hset(h, mapping={"a": "1", "b": "two"})
    await r.pexpire(h, KEY_TTL_MS)
    expect("HINCRBY", 6, await r.hincrby(h, "a", 5))
    expect("HGETALL", {b"a": b"6", b"b": b"two"}, await r.hgetall(h))
    await r.rpush(lst, "x", "y", "z")
    await r.pexpire(lst, KEY_TTL_MS)
    expect("LPOP", b"x", await r.lpop(lst))
    expect("LRANGE", [b"y", b"z"], await r.lrange(lst, 0, -1))
    return "string, hash and list values read back exactly"


@check("operations", title="TTLs are kept and keys expire")
async def check_ttl(ctx: CheckContext[Client]) -> str:
    kept, short = _keys(ctx, "ttl-kept", "ttl-short")
    r = ctx.client
    await r.set(kept, "v", px=KEY_TTL_MS)
    pttl = await r.pttl(kept)
    if not 0 < pttl <= KEY_TTL_MS:
        raise CheckFailed(
            f"PTTL after SET PX {KEY_TTL_MS}: expected 0 < ttl <= {KEY_TTL_MS}, saw {pttl}"
        )
    await r.set(short, "v", px=200)
    written = time.monotonic()

    async def gone() -> None:
        if await r.exists(short):
            raise CheckFailed("key with a 200 ms TTL still exists")

    await ctx.eventually(gone, timeout=3.0, interval=0.05, what="expiry of a 200 ms key")
    ctx.evidence["expired_after_ms"] = ms(time.monotonic() - written)
    return f"TTL kept; a 200 ms key was gone after {ctx.evidence['expired_after_ms']:.0f} ms"


@check("operations", title="pipeline, MULTI/EXEC and WATCH behave atomically")
async def check_transactions(ctx: CheckContext[Client]) -> str:
    counter, watched = _keys(ctx, "tx-counter", "tx-watched")
    r = ctx.client
    async with r.pipeline(transaction=False) as pipe:
        for _ in range(50):
            pipe.incr(counter)
        pipe.pexpire(counter, KEY_TTL_MS)
        replies = await pipe.execute()
    expect("pipelined INCR replies", list(range(1, 51)), replies[:-1])
    async with r.pipeline(transaction=True) as tx:
        tx.set(watched, "a", px=KEY_TTL_MS)
        tx.append(watched, "b")
        tx.get(watched)
        expect("MULTI/EXEC replies", [True, 2, b"ab"], await tx.execute())
    # optimistic locking: a write by another connection between WATCH and EXEC aborts EXEC
    async with r.pipeline(transaction=True) as tx:
        await tx.watch(watched)
        other = connect_url(ctx.service.url or "", ctx.service.username, ctx.service.password)
        try:
            await other.set(watched, "changed-by-other-client", px=KEY_TTL_MS)
        finally:
            await other.aclose()
        tx.multi()  # type: ignore[no-untyped-call]
        tx.set(watched, "should-not-apply", px=KEY_TTL_MS)
        try:
            await tx.execute()
        except WatchError:
            pass
        else:
            raise CheckFailed(
                "EXEC after a concurrent write to a WATCHed key: expected abort, it applied"
            )
    expect("value after aborted EXEC", b"changed-by-other-client", await r.get(watched))
    return (
        "50 pipelined INCRs in order; MULTI/EXEC atomic; WATCH aborted EXEC on a concurrent write"
    )


_CAS_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


@check("operations", title="a Lua compare-and-set script runs atomically (EVAL, EVALSHA)")
async def check_lua_script(ctx: CheckContext[Client]) -> str:
    (key,) = _keys(ctx, "lua")
    r = ctx.client
    await r.set(key, "old", px=KEY_TTL_MS)
    cas = r.register_script(_CAS_SCRIPT)
    expect(
        "CAS with the wrong expected value",
        0,
        await cas(keys=[key], args=["nope", "new", KEY_TTL_MS]),
    )
    expect("value after refused CAS", b"old", await r.get(key))
    expect(
        "CAS with the right expected value",
        1,
        await cas(keys=[key], args=["old", "new", KEY_TTL_MS]),
    )
    expect("value after CAS", b"new", await r.get(key))
    ctx.evidence["script_sha"] = cas.sha
    return "compare-and-set script refused the stale value and applied the current one"


# --- sessions ---------------------------------------------------------------------------------


class SessionStore:
    """The session pattern applications use: a hash per session with a sliding TTL."""

    def __init__(self, ctx: CheckContext[Client], ttl_ms: int) -> None:
        self.ctx = ctx
        self.ttl_ms = ttl_ms

    def new_id(self) -> str:
        sid = self.ctx.name(f"redis-session-{secrets.token_hex(8)}")

        async def delete() -> None:
            await self.ctx.client.delete(sid)

        self.ctx.cleanup(delete, "delete session")
        return sid

    async def create(self, data: dict[str, str]) -> str:
        sid = self.new_id()
        async with self.ctx.client.pipeline(transaction=True) as tx:
            tx.hset(sid, mapping=cast(Any, data))
            tx.pexpire(sid, self.ttl_ms)
            await tx.execute()
        return sid

    async def read(self, sid: str, slide: bool = True) -> dict[str, str]:
        """Read a session; reading extends its life (sliding expiry)."""
        async with self.ctx.client.pipeline(transaction=True) as tx:
            tx.hgetall(sid)
            if slide:
                tx.pexpire(sid, self.ttl_ms)
            raw = (await tx.execute())[0]
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def logout(self, sid: str) -> bool:
        return bool(await self.ctx.client.delete(sid))


@check("sessions", title="a session is created, read back, and gone after logout", name="lifecycle")
async def check_session_lifecycle(ctx: CheckContext[Client]) -> str:
    store = SessionStore(ctx, ttl_ms=KEY_TTL_MS)
    data = {"user": "probe-user", "role": "reader", "csrf": secrets.token_hex(8)}
    sid = await store.create(data)
    expect("session read back", data, await store.read(sid))
    if not await store.logout(sid):
        raise CheckFailed("logout: DEL removed nothing")
    expect("session after logout", {}, await store.read(sid, slide=False))
    return "session created, read back, gone after logout"


@check("sessions", title="sliding expiry: access extends a session, idleness ends it")
async def check_sliding_expiry(ctx: CheckContext[Client]) -> str:
    ttl_ms = 800
    store = SessionStore(ctx, ttl_ms=ttl_ms)
    late = (ttl_ms - 100) / 1000  # a read sent later than this after the last renewal
    stalls: list[str] = []
    for _ in range(3):  # a busy machine can stall the loop past a TTL: then try again
        sid = await store.create({"user": "probe-user"})
        created = time.monotonic()
        await asyncio.sleep(0.5)
        sent = time.monotonic()
        if not await store.read(sid):  # extends the life to read time + 0.8 s
            if sent - created > late:
                stalls.append(f"first read {sent - created:.2f} s after creation")
                continue
            raise CheckFailed(f"session with a {ttl_ms} ms TTL was gone 0.5 s after creation")
        read_at = time.monotonic()
        pttl = await ctx.client.pttl(sid)
        # what is left of a TTL renewed by the read is at least the TTL less the time since
        # the read was sent (a busy machine can stall the loop for 300 ms here); not renewed,
        # it would be at most the TTL less the time since creation, 500 ms lower
        floor = ttl_ms - (time.monotonic() - sent) * 1000 - 50
        if pttl < floor:
            raise CheckFailed(
                f"PTTL right after the read: expected at least {floor:.0f} ms of the {ttl_ms} "
                f"ms TTL, saw {pttl}: reading did not extend it"
            )
        # timed from the read, not from creation: past the original expiry even if the event
        # loop was slow, alive only because access slid it
        await asyncio.sleep(max(0.0, read_at + 0.5 - time.monotonic()))
        again = time.monotonic()
        if await store.read(sid, slide=False):
            break
        if again - sent > late:  # gone, but asked after the renewed TTL: no evidence
            stalls.append(f"second read {again - sent:.2f} s after the first")
            continue
        raise CheckFailed(
            f"session created with a {ttl_ms} ms TTL and read after 0.5 s was gone at "
            f"{time.monotonic() - created:.2f} s: reading did not extend it"
        )
    else:
        raise ServiceError(
            f"too busy a machine to judge sliding expiry: 3 tries stalled past the {ttl_ms} ms "
            f"TTL ({'; '.join(stalls)})"
        )
    ctx.evidence["stalled_tries"] = stalls

    async def expired() -> None:
        if await ctx.client.exists(sid):
            raise CheckFailed("idle session still exists")

    await ctx.eventually(expired, timeout=3.0, interval=0.05, what="idle session expiry")
    ctx.evidence.update(ttl_ms=ttl_ms, expired_after_s=round(time.monotonic() - created, 3))
    return f"a {ttl_ms} ms session outlived its TTL by access, expired {ctx.evidence['expired_after_s']:.2f} s after creation"


@check("sessions", title="concurrent sessions stay isolated", name="concurrent_isolation")
async def check_concurrent_sessions(ctx: CheckContext[Client]) -> str:
    store = SessionStore(ctx, ttl_ms=KEY_TTL_MS)
    users = [f"user-{i}" for i in range(20)]
    sids = await asyncio.gather(
        *(store.create({"user": u, "cart": str(i)}) for i, u in enumerate(users))
    )
    # one user changes their session; nobody else's may change
    await ctx.client.hset(sids[3], "cart", "changed")
    seen = await asyncio.gather(*(store.read(s) for s in sids))
    for i, (user, session) in enumerate(zip(users, seen, strict=True)):
        expected = {"user": user, "cart": "changed" if i == 3 else str(i)}
        expect(f"session of {user}", expected, session)
    await store.logout(sids[5])
    remaining = await asyncio.gather(*(ctx.client.exists(s) for s in sids))
    expect(
        "sessions alive after one logout", [i != 5 for i in range(20)], [bool(x) for x in remaining]
    )
    ctx.evidence["sessions"] = len(sids)
    return f"{len(sids)} concurrent sessions isolated through a change and a logout"


# --- celery queue -----------------------------------------------------------------------------


@check(
    "celery-queue",
    title="a task round-trips broker -> live worker -> result backend",
    timeout=20,
    name="round_trip",
)
async def check_celery_round_trip(ctx: CheckContext[Client]) -> str:
    opts: RedisOptions = ctx.options
    if not opts.celery:
        raise CheckSkipped("options.celery is false: this Redis is not a Celery broker")
    queue = opts.celery_queue
    client: CeleryClient
    if ctx.stack.link(ctx.service_name, "celery"):  # the linked worker pool's own client
        _, client = await ctx.linked("celery")
        queue = client.queue
    else:
        assert ctx.service.url is not None
        broker = with_credentials(ctx.service.url, ctx.service.username, ctx.service.password)
        client = celery_client(broker, opts.celery_backend or broker, queue)
        ctx.cleanup(client.app.close, "close celery app")
    workers = await client.ping()
    ctx.evidence["workers"] = sorted(workers)
    if not workers:
        raise CheckFailed(
            f"no Celery worker answered ping within 1 s on this broker (queue {queue!r})"
        )
    consumers = await client.consumers(queue)
    ctx.evidence["consumers"] = consumers
    ctx.evidence["backlog_before"] = await client.backlog(queue)
    if not consumers:
        raise CheckFailed(
            f"{len(workers)} worker(s) alive, none consumes queue {queue!r}; task not sent"
        )
    task_id = probe_task_id(ctx.ns)
    ctx.cleanup(lambda: client.forget_result(task_id), "delete task result")
    nonce = secrets.token_hex(8)
    took = await client.round_trip(task_id, nonce, timeout=15)
    ctx.evidence.update(queue=queue, task_id=task_id, round_trip_ms=ms(took))
    return f"round trip {ms(took)} ms via {len(consumers)} worker(s) on {queue!r}"


# --- cache invalidation -----------------------------------------------------------------------


@check("cache-invalidation", title="entries leave the cache by TTL and by explicit delete")
async def check_ttl_and_delete(ctx: CheckContext[Client]) -> str:
    expiring, deleted = _keys(ctx, "cache-expiring", "cache-deleted")
    r = ctx.client
    await r.set(expiring, "cached", px=300)
    await r.set(deleted, "cached", px=KEY_TTL_MS)
    expect("cache hit before invalidation", [b"cached", b"cached"], await r.mget(expiring, deleted))
    expect("DEL count", 1, await r.delete(deleted))
    expect("read after delete", None, await r.get(deleted))
    written = time.monotonic()

    async def miss() -> None:
        if await r.get(expiring) is not None:
            raise CheckFailed("entry with a 300 ms TTL still served")

    await ctx.eventually(miss, timeout=3.0, interval=0.05, what="TTL invalidation")
    ctx.evidence["ttl_miss_after_ms"] = ms(time.monotonic() - written)
    return f"DEL invalidates at once; a 300 ms entry missed after {ctx.evidence['ttl_miss_after_ms']:.0f} ms"


@check("cache-invalidation", title="versioned and tag-based invalidation hide stale entries")
async def check_versioned_and_tags(ctx: CheckContext[Client]) -> str:
    version, v1, v2, tag_a, tag_b, a1, a2, b1 = _keys(
        ctx, "cache-version", "cache-v1", "cache-v2", "cache-tag-a", "cache-tag-b",
        "cache-a1", "cache-a2", "cache-b1",
    )  # fmt: skip
    r = ctx.client
    # versioned: readers build the entry key from the current version
    await r.set(version, 1, px=KEY_TTL_MS)
    await r.set(v1, "stale", px=KEY_TTL_MS)

    async def read_current() -> Any:
        current = int(await r.get(version) or 0)
        return await r.get({1: v1, 2: v2}.get(current, v2))

    expect("read through version 1", b"stale", await read_current())
    expect("version bump", 2, await r.incr(version))
    expect("read after version bump", None, await read_current())
    # tag-based: each tag is a set of entry keys; invalidating a tag deletes its members
    async with r.pipeline(transaction=True) as tx:
        for key, tag in ((a1, tag_a), (a2, tag_a), (b1, tag_b)):
            tx.set(key, "cached", px=KEY_TTL_MS)
            tx.sadd(tag, key)
            tx.pexpire(tag, KEY_TTL_MS)
        await tx.execute()
    members = await r.smembers(tag_a)
    async with r.pipeline(transaction=True) as tx:
        tx.delete(*members)
        tx.delete(tag_a)
        deleted = (await tx.execute())[0]
    expect("entries deleted with tag a", 2, deleted)
    expect("entries after invalidating tag a", [None, None, b"cached"], await r.mget(a1, a2, b1))
    return "a version bump hid the stale entry; invalidating a tag removed exactly its 2 entries"


@check(
    "cache-invalidation",
    title="a pub/sub invalidation message reaches another connection",
    name="pubsub",
)
async def check_pubsub_invalidation(ctx: CheckContext[Client]) -> str:
    channel = ctx.name("redis-invalidate")  # channels hold no data: nothing to delete
    (entry,) = _keys(ctx, "cache-pubsub-entry")
    local_cache = {entry: b"cached"}  # the subscriber's in-process copy
    pubsub = ctx.client.pubsub()
    ctx.cleanup(pubsub.aclose, "close pubsub connection")
    await pubsub.subscribe(channel)
    confirm = await pubsub.get_message(timeout=2.0)
    if not confirm or confirm.get("type") != "subscribe":
        raise CheckFailed(f"SUBSCRIBE not confirmed within 2 s, saw {confirm!r}")
    sent = time.monotonic()
    receivers = await ctx.client.publish(channel, entry)
    expect("PUBLISH receivers", 1, receivers)
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
    if not message or message.get("data") != entry.encode():
        raise CheckFailed(f"invalidation message not received within 2 s, saw {message!r}")
    local_cache.pop(message["data"].decode(), None)
    expect("subscriber cache after invalidation", {}, local_cache)
    ctx.evidence["delivery_ms"] = ms(time.monotonic() - sent)
    return f"invalidation reached the subscriber in {ctx.evidence['delivery_ms']} ms"


# --- persistence ------------------------------------------------------------------------------


async def _persistence(r: Client) -> dict[str, Any]:
    info = await r.info("persistence")
    try:
        config = {}
        for name in ("save", "appendonly", "appendfsync"):  # one per call: Redis 6 takes one
            config.update(await r.config_get(name))
    except aioredis.ResponseError:  # CONFIG disabled or renamed on managed Redis
        config = {}
    save = config.get("save")
    return {
        "save": save,
        "appendonly": config.get("appendonly", "yes" if info.get("aof_enabled") else "no"),
        "appendfsync": config.get("appendfsync"),
        "rdb_last_bgsave_status": info.get("rdb_last_bgsave_status"),
        "rdb_changes_since_last_save": info.get("rdb_changes_since_last_save"),
        "rdb_last_save_age_s": int(time.time()) - int(info.get("rdb_last_save_time", 0)),
        "aof_last_write_status": info.get("aof_last_write_status"),
        "loading": info.get("loading"),
    }


@check(
    "persistence",
    title="data survives a restart (RDB or AOF enabled)",
    severity="warning",
    name="configured",
)
async def check_persistence_configured(ctx: CheckContext[Client]) -> str:
    state = await _persistence(ctx.client)
    ctx.evidence.update(state)
    rdb = bool(state["save"])
    aof = state["appendonly"] == "yes"
    if state["save"] is None and not aof:
        raise CheckSkipped("CONFIG GET is disabled and AOF is off: RDB policy unknown")
    if not rdb and not aof:
        raise CheckFailed(
            "nothing is persisted (save '' and appendonly no): sessions and queued tasks "
            "in this Redis are lost on restart"
        )
    return ", ".join(
        p for p in [f"RDB save {state['save']!r}" if rdb else "", "AOF on" if aof else ""] if p
    )


@check("persistence", title="the last RDB save and AOF write succeeded", name="last_write_ok")
async def check_persistence_healthy(ctx: CheckContext[Client]) -> str:
    state = await _persistence(ctx.client)
    ctx.evidence.update(state)
    if state["rdb_last_bgsave_status"] not in (None, "ok"):
        raise CheckFailed(f"last RDB save: expected 'ok', saw {state['rdb_last_bgsave_status']!r}")
    if state["appendonly"] == "yes" and state["aof_last_write_status"] not in (None, "ok"):
        raise CheckFailed(f"last AOF write: expected 'ok', saw {state['aof_last_write_status']!r}")
    return f"last RDB save {state['rdb_last_bgsave_status']}, last AOF write {state['aof_last_write_status']}"
