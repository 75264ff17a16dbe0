"""Celery worker pools on a broker: are workers alive, and does a task really round-trip?

Nothing has to be deployed on the user's workers: the round trip sends Celery's built-in
`celery.accumulate` task, which every worker has. A task is only sent when a live worker
consumes the queue, so a run never leaves a message in a queue nobody reads. What the run
causes in the broker and backend (result keys, pidbox reply queues) is removed by name.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.pools import ProducerPool
from pydantic import BaseModel, ConfigDict

from stackprobe.check import CheckContext, CheckFailed
from stackprobe.held import hold_redis
from stackprobe.ids import is_leftover
from stackprobe.kinds import Held, Kind, Target
from stackprobe.threads import in_thread
from stackprobe.urls import with_credentials

PING_TIMEOUT = 1.0
LIVENESS_PING_TIMEOUT = 0.3
RESULT_TTL_S = 120  # result keys expire even when a killed run cannot delete them
TASK_EXPIRES_S = 30  # a probe task nobody picked up in time is discarded by the worker
REPLY_EXCHANGE = "reply.celery.pidbox"
BINDING_DEADLINES = "_kombu.binding_deadlines"
_UNSET = object()
T = TypeVar("T")
_LOCKS: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


def _broadcast_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    for old in [lp for lp in _LOCKS if lp.is_closed()]:
        del _LOCKS[old]
    return _LOCKS.setdefault(loop, asyncio.Lock())


class CeleryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str = "celery"
    min_workers: int = 1


@dataclass
class CeleryClient:
    """A Celery app bound to one broker and result backend, plus raw Redis access for cleanup."""

    app: Any
    broker_url: str
    backend_url: str
    queue: str
    _liveness_deadline: float | object | None = field(default=None, init=False)
    _warm: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._liveness_deadline = _UNSET

    async def broadcast(self, call: Callable[[], T]) -> T:
        """Run one control broadcast (ping, inspect) and remove the bookkeeping it causes.

        A broadcast binds a reply queue named after this app's oid and, on kombu >= 5.7, puts
        the reply exchange into `_kombu.binding_deadlines`. Afterwards our binding member and
        reply queue are deleted by name, and the deadline entry is removed (or its previous
        score restored) when no other client's reply binding remains. Broadcasts of one
        process run one at a time so that "previous" is really the state before us.
        """
        async with _broadcast_lock():
            async with _redis(self.broker_url) as client:
                before = await client.zscore(BINDING_DEADLINES, REPLY_EXCHANGE)
            try:
                return await in_thread(call)
            finally:
                await self._forget_replies(before)

    async def ping(self, timeout: float = PING_TIMEOUT) -> dict[str, Any]:
        """Live workers as {name: reply}; empty when nobody answers within `timeout`."""
        replies = await self.broadcast(lambda: self.app.control.ping(timeout=timeout))
        return {name: reply for item in replies or [] for name, reply in item.items()}

    async def alive(self) -> bool:
        """Monitor liveness: one ping, returning at the first reply (a few ms on a live worker).

        It does not take the broadcast lock (a full run may hold it for seconds) and does not
        clean up per call: the reply binding it creates is the same on every call (one app,
        one oid), and is removed once, with the deadline entry, when the client closes.
        """
        if self._liveness_deadline is _UNSET:
            async with _redis(self.broker_url) as client:
                self._liveness_deadline = await client.zscore(BINDING_DEADLINES, REPLY_EXCHANGE)
        # a new client's first ping also sets up its reply queue (~300 ms measured here, 4 ms
        # after): give it the full ping timeout, the short one once it has answered
        timeout = LIVENESS_PING_TIMEOUT if self._warm else PING_TIMEOUT
        replies = await in_thread(self.app.control.ping, timeout=timeout, limit=1)
        self._warm = self._warm or bool(replies)
        return bool(replies)

    async def close(self) -> None:
        if self._liveness_deadline is not _UNSET:
            before = self._liveness_deadline
            await self._forget_replies(before if isinstance(before, float) else None)
        self.app.close()

    async def consumers(self, queue: str) -> list[str]:
        """Workers that consume `queue` right now."""
        inspect = self.app.control.inspect(timeout=PING_TIMEOUT)
        active = await self.broadcast(inspect.active_queues) or {}
        return sorted(
            w for w, queues in active.items() if any(q.get("name") == queue for q in queues)
        )

    async def backlog(self, queue: str) -> int:
        """Messages waiting in `queue` (a Redis list named after it)."""
        async with _redis(self.broker_url) as client:
            return int(await client.llen(queue))

    async def round_trip(self, task_id: str, nonce: str, timeout: float) -> float:
        """Send `celery.accumulate(nonce)` and wait for the worker's answer; seconds taken."""
        started = time.monotonic()
        result = await in_thread(  # publishing can block on the broker: not on the loop
            self.app.send_task,
            "celery.accumulate",
            args=(nonce,),
            queue=self.queue,
            task_id=task_id,
            expires=TASK_EXPIRES_S,
        )
        value = await in_thread(result.get, timeout=timeout, propagate=False)
        took = time.monotonic() - started
        if value != [nonce]:
            raise CheckFailed(f"expected the worker to return [{nonce!r}], got {value!r}")
        return took

    async def wait_result(self, task_id: str, timeout: float) -> Any:
        """The result of a task sent by anyone (the flow's probe service), within `timeout`;
        TimeoutError when none came."""
        result = self.app.AsyncResult(task_id)
        try:
            return await in_thread(result.get, timeout=timeout, propagate=False)
        except CeleryTimeoutError:
            raise TimeoutError(f"no result for task {task_id} within {timeout:g} s") from None

    async def withdraw(self, task_id: str, limit: int = 10_000) -> bool:
        """Remove our task's message from the queue when no worker took it (by its task id,
        never by position); whether it was there. Long queues (> `limit`) are left alone."""
        async with _redis(self.broker_url) as client:
            if await client.llen(self.queue) > limit:
                return False
            for raw in await client.lrange(self.queue, 0, -1):
                try:
                    headers = json.loads(raw).get("headers") or {}
                except (ValueError, AttributeError):
                    continue
                if headers.get("id") == task_id:
                    return bool(await client.lrem(self.queue, 1, raw))  # type: ignore[arg-type]
        return False

    async def forget_result(self, task_id: str) -> None:
        async with _redis(self.backend_url) as client:
            await client.delete(f"celery-task-meta-{task_id}")

    async def _forget_replies(self, deadline_before: float | None) -> None:
        oid = self.app.control.mailbox.oid
        binding = f"_kombu.binding.{REPLY_EXCHANGE}"
        async with _redis(self.broker_url) as client:
            ours = [m for m in await client.smembers(binding) if oid.encode() in m]
            if ours:
                await client.srem(binding, *ours)
            await client.delete(f"{oid}.{REPLY_EXCHANGE}")
            if await client.scard(binding) == 0:  # no other client's reply queue is bound
                if deadline_before is None:
                    await client.zrem(BINDING_DEADLINES, REPLY_EXCHANGE)
                else:
                    await client.zadd(BINDING_DEADLINES, {REPLY_EXCHANGE: deadline_before}, xx=True)


def celery_client(broker_url: str, backend_url: str, queue: str) -> CeleryClient:
    """A Celery app that fails fast instead of retrying forever against a dead broker."""
    app = Celery("stackprobe", broker=broker_url, backend=backend_url, set_as_current=False)
    app.conf.update(
        broker_connection_retry=False,
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=0,
        broker_connection_timeout=3,
        broker_transport_options={
            "socket_timeout": 3,
            "socket_connect_timeout": 3,
            "max_retries": 0,
        },
        redis_socket_timeout=3,
        redis_socket_connect_timeout=3,
        result_expires=RESULT_TTL_S,
    )
    # Pools of this app's own: Celery takes broker connections and producers from kombu's
    # process-wide registries, keyed by broker URL, so every app of the process shares them. A
    # broker restart left a closed connection there, and the next client's ping failed with
    # "Connection closed by server" (a long-running monitor, the pytest plugin); sharing would
    # also touch the pools of a user's app in the same process. app.close() closes these.
    app._pool = app.connection_for_write().Pool(limit=app.conf.broker_pool_limit)
    app.amqp._producer_pool = ProducerPool(app._pool, limit=app._pool.limit)  # type: ignore[no-untyped-call]
    return CeleryClient(app=app, broker_url=broker_url, backend_url=backend_url, queue=queue)


@asynccontextmanager
async def _redis(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[CeleryClient]:
    svc = target.config
    assert svc.url is not None  # validated: url is required for this kind
    opts: CeleryOptions = target.options
    broker = with_credentials(svc.url, svc.username, svc.password)
    client = celery_client(broker, svc.endpoints.get("backend", broker), opts.queue)
    try:
        yield client
    finally:
        await client.close()


async def _version(client: CeleryClient) -> str | None:
    """The Celery version the first live worker reports (`limit=1`: no waiting out the
    whole timeout for replies that may never come)."""
    inspect = client.app.control.inspect(timeout=PING_TIMEOUT, limit=1)
    reports = await client.broadcast(inspect.report) or {}
    for report in reports.values():
        for line in str(report.get("ok", "")).splitlines():
            if line.startswith("software -> celery:"):
                return line.split(":", 1)[1].split()[0]
    return None


async def _liveness(client: CeleryClient) -> None:
    """Cheap enough for the monitor's 0.5 s probe budget: a local worker answers in ms."""
    if not await client.alive():
        raise CheckFailed("no Celery worker answered ping")


async def _watch(client: CeleryClient) -> Held:
    """A held connection to the broker: a dead broker is a dead Celery at once."""
    broker = aioredis.Redis.from_url(client.broker_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        return await hold_redis(broker)
    finally:
        await broker.aclose()  # the held connection is the broker client's own, not its pool's


async def _sweep(client: CeleryClient, target: Target, cutoff: datetime) -> list[str]:
    """Result keys of killed runs (`celery-task-meta-stackprobe-<run_id>-...`) older than cutoff."""
    removed: list[str] = []
    async with _redis(client.backend_url) as backend:
        async for key in backend.scan_iter(match="celery-task-meta-stackprobe-*", count=500):
            name = key.decode("utf-8", "replace")
            if is_leftover(name, cutoff):
                await backend.delete(key)
                removed.append(name)
    return removed


KIND: Kind[CeleryClient] = Kind(
    name="celery",
    description="Celery workers on a Redis broker: live workers consuming the configured queue",
    capabilities=("workers",),
    connect=_connect,
    url_schemes=("redis", "rediss"),
    endpoints=("backend",),
    options_model=CeleryOptions,
    version=_version,
    liveness=_liveness,
    watch=_watch,
    sweep=_sweep,
)
check = KIND.check


@check("workers", title="live workers answer ping and consume the queue")
async def check_ping(ctx: CheckContext[CeleryClient]) -> str:
    opts: CeleryOptions = ctx.options
    started = time.monotonic()
    workers = await ctx.client.ping()
    ctx.evidence["ping_ms"] = round((time.monotonic() - started) * 1000, 1)
    ctx.evidence["workers"] = sorted(workers)
    if len(workers) < opts.min_workers:
        raise CheckFailed(
            f"expected at least {opts.min_workers} worker(s) to answer ping within "
            f"{PING_TIMEOUT:g} s, {len(workers)} answered"
        )
    consumers = await ctx.client.consumers(opts.queue)
    ctx.evidence["consumers"] = consumers
    ctx.evidence["backlog"] = await ctx.client.backlog(opts.queue)
    if not consumers:
        raise CheckFailed(f"{len(workers)} worker(s) alive but none consumes queue {opts.queue!r}")
    return f"{len(workers)} worker(s), {len(consumers)} on queue {opts.queue!r}"


def probe_task_id(ns: str) -> str:
    """Task ids carry the run prefix, so `clean` can find results a killed run left."""
    return f"{ns}celery-{uuid.uuid4().hex}"
