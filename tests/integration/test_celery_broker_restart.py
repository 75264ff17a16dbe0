"""A Celery client made after the broker restarted works: it does not inherit a connection
the restart closed. Celery takes broker connections from kombu's process-wide pools unless an
app has pools of its own; a long-lived process (the monitor, a pytest session) then got
"Connection closed by server" from every new client after one Redis restart.

Real redis-server of the test's own, on one port, stopped and started again; no worker is
needed: a control broadcast publishes on a pooled broker connection either way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from stackprobe.services.celery import celery_client
from tests.conftest import free_port, need_binary, redis_server


def test_a_client_made_after_a_broker_restart_publishes(tmp_path: Path) -> None:
    binary = need_binary("redis-server", "scripts/install-services redis")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    async def ping_once() -> dict[str, object]:
        client = celery_client(url, url, "stackprobe-restart-test")
        try:
            return await client.ping(timeout=0.2)  # nobody consumes: no replies, no error
        finally:
            await client.close()

    with redis_server(binary, tmp_path, port=port):
        assert asyncio.run(ping_once()) == {}
    with redis_server(binary, tmp_path, port=port):  # the same broker, restarted
        assert asyncio.run(ping_once()) == {}
