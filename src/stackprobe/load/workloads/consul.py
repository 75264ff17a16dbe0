"""Consul workloads on the kind's own client (ConsulClient over the HTTP API): KV read,
KV write, a health query. KV keys are `<ns>consul-kv-load-...` and deleted by name afterwards (Consul
KV has no TTL: a killed run's keys wait for `stackprobe clean`); the probe service of the
health query carries a TTL check with DeregisterCriticalServiceAfter, as every service a
check registers does, and is deregistered afterwards."""

from __future__ import annotations

import random
from typing import Any

from stackprobe.check import CheckContext
from stackprobe.load.engine import Op
from stackprobe.load.workload import workload
from stackprobe.services.consul import ConsulClient, _kv_keys, _register

KEYS = 100
VALUE = b"x" * 64


def _keyspace(ctx: CheckContext[ConsulClient], what: str) -> list[str]:
    """The run's KV keys for this workload, their deletion registered before any is written."""
    return _kv_keys(ctx, *(f"load-{what}-{i}" for i in range(KEYS)))


@workload("consul", name="kv_read", title="GET of one of 100 KV keys")
async def kv_read(ctx: CheckContext[ConsulClient], lanes: int) -> list[Op]:
    keys = _keyspace(ctx, "read")
    for key in keys:
        await ctx.client.kv_put(key, VALUE)

    async def op() -> Any:
        key = random.choice(keys)
        entry, _ = await ctx.client.kv_get(key)
        if entry is None:
            raise LookupError(f"KV {key}: 404, the key written before the load is gone")
        return entry

    return [op] * lanes


@workload("consul", name="kv_write", title="PUT of one of 100 KV keys")
async def kv_write(ctx: CheckContext[ConsulClient], lanes: int) -> list[Op]:
    keys = _keyspace(ctx, "write")

    async def op() -> Any:
        if not await ctx.client.kv_put(random.choice(keys), VALUE):
            raise ValueError("PUT answered false")
        return True

    return [op] * lanes


@workload(
    "consul",
    name="health_query",
    title="GET /v1/health/service/<probe>?passing of a registered probe service",
)
async def health_query(ctx: CheckContext[ConsulClient], lanes: int) -> list[Op]:
    name = ctx.name("load-svc")
    service_id = await _register(
        ctx, {"ID": name, "Name": name, "Port": 1, "Check": {"TTL": "60s"}}
    )
    await ctx.client.ttl_update(f"{service_id}-check-0", "pass", "stackprobe load")

    async def op() -> Any:
        entries = await ctx.client.health_service(name, passing=True)
        if not entries:
            raise LookupError(f"{name}: no passing instance listed")
        return entries

    return [op] * lanes
