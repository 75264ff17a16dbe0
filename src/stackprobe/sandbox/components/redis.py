"""Sandbox components: redis-server (RDB + AOF on) and a Celery worker on it, instrumented with
OpenTelemetry (sandbox/celery_worker.py) and exporting its spans to the sandbox collector."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import redis as sync_redis

from stackprobe.sandbox.component import Component, Layout
from stackprobe.services.celery import celery_client


def _redis_url(layout: Layout, db: int = 0) -> str:
    return f"redis://127.0.0.1:{layout.port('redis')}/{db}"


def _redis_command(layout: Layout) -> list[str]:
    return [
        "redis-server",
        "--port", str(layout.port("redis")),
        "--bind", "127.0.0.1",
        "--dir", str(layout.dir),
        "--save", "60 1000",
        "--appendonly", "yes",
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip


def _redis_ready(layout: Layout) -> bool:
    client = sync_redis.Redis.from_url(
        _redis_url(layout), socket_timeout=0.5, socket_connect_timeout=0.5
    )
    try:
        return bool(client.ping())
    except sync_redis.RedisError:
        return False
    finally:
        client.close()


REDIS = Component(
    name="redis",
    binary="redis-server",
    install="scripts/install-services redis  (or: apt-get install redis-server)",
    port_names=("main",),
    command=_redis_command,
    ready=_redis_ready,
    services=lambda layout: {
        "cache": {
            "kind": "redis",
            "url": _redis_url(layout),
            "links": {"celery": "worker"},
            # loose on purpose: the sandbox shares its machine (stack.load.slo_smoke holds
            # it under a short, low load in every run)
            "slo": {"p99_ms": 100, "error_rate": 0.001, "window": "5s"},
        }
    },
)

WORKER_NAME = "stackprobe-sandbox@%h"
WORKER_SERVICE_NAME = "stackprobe-sandbox-worker"  # service.name of the worker's spans
WORKER_APP = "stackprobe_worker"
# the app's source; read as a file, never imported here (importing it instruments the process)
WORKER_SOURCE = Path(__file__).resolve().parents[1] / "celery_worker.py"
WORKER_CONFIG = "stackprobe_worker.json"  # celery_worker.CONFIG_NAME


def _worker_command(layout: Layout) -> list[str]:
    """Copy the instrumented app next to its config (it imports only installed packages, so
    the worker needs no PYTHONPATH) and run it from there."""
    url = _redis_url(layout)
    layout.dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(WORKER_SOURCE, layout.dir / f"{WORKER_APP}.py")
    collector = layout.ports.get("otelcol.otlp_http")  # a sandbox without one: no export
    config = {
        "otlp_http": f"http://127.0.0.1:{collector}" if collector else None,
        "service_name": WORKER_SERVICE_NAME,
    }
    (layout.dir / WORKER_CONFIG).write_text(json.dumps(config) + "\n")
    return [
        sys.executable, "-m", "celery",
        "-A", WORKER_APP,
        "--broker", url,
        "--result-backend", url,
        "worker",
        "--queues", "celery",
        "--pool", "threads",
        "--concurrency", "4",
        "--hostname", WORKER_NAME,
        "--without-gossip",
        "--without-mingle",
        "--loglevel", "INFO",
    ]  # fmt: skip


def _worker_ready(layout: Layout) -> bool:
    client = celery_client(_redis_url(layout), _redis_url(layout), "celery")
    try:
        replies = client.app.control.ping(timeout=0.5) or []
        return any(name.startswith("stackprobe-sandbox@") for item in replies for name in item)
    except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
        return False
    finally:
        client.app.close()


CELERY_WORKER = Component(
    name="celery-worker",
    binary=sys.executable,
    install="pip install 'celery[redis]'",
    port_names=(),
    command=_worker_command,
    ready=_worker_ready,
    requires=("redis", "otelcol"),
    services=lambda layout: {
        "worker": {
            "kind": "celery",
            "url": _redis_url(layout),
            "endpoints": {"backend": _redis_url(layout)},
            "depends_on": ["cache"],
            "options": {"queue": "celery"},
        }
    },
)

COMPONENTS = (REDIS, CELERY_WORKER)
