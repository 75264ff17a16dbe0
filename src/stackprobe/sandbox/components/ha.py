"""The sandbox's HA profile (`stackprobe sandbox up --ha`): what the failover scenarios need,
all real, all on loopback with the sandbox's own ports and data dirs:

    ha-redis-a, ha-redis-b      a Redis primary and its replica (AOF on)
    ha-sentinel-1..3            three Redis Sentinels (Debian's redis-sentinel), quorum 2,
                                down-after 1 s
    ha-consul-1..3              a three-server Consul 1.8.7 cluster (not dev mode: raft on
                                disk, bootstrap-expect 3, raft_multiplier 1 for fast elections)

A Sentinel rewrites its own config file as the topology changes; it is written afresh only
when no Sentinel is running, so a restart after a failover keeps what the Sentinels know.
"""

from __future__ import annotations

from typing import Any

import httpx
import redis as sync_redis

from stackprobe.sandbox.component import Component, Layout

HOST = "127.0.0.1"
MASTER = "stackprobe-ha"  # the Sentinel master name
SENTINELS = ("ha-sentinel-1", "ha-sentinel-2", "ha-sentinel-3")
CONSULS = ("ha-consul-1", "ha-consul-2", "ha-consul-3")
CONSUL_PORTS = ("http", "dns", "serf_lan", "serf_wan", "server")


def _ping(port: int, **checks: str) -> bool:
    client = sync_redis.Redis(host=HOST, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        if not client.ping():
            return False
        info = client.info("replication") if checks else {}
        return all(str(info.get(k)) == v for k, v in checks.items())
    except sync_redis.RedisError:
        return False
    finally:
        client.close()


def _redis(name: str, replica_of: str | None) -> Component:
    def command(layout: Layout) -> list[str]:
        args = [
            "redis-server",
            "--port", str(layout.port(name)),
            "--bind", HOST,
            "--dir", str(layout.dir),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
            "--replica-announce-ip", HOST,
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", HOST, str(layout.port(replica_of))]
        return args

    def ready(layout: Layout) -> bool:
        if replica_of is None:
            return _ping(layout.port(name))
        return _ping(layout.port(name), master_link_status="up") or _ping(
            layout.port(name),
            role="master",  # promoted by a failover before this `up`
        )

    def services(layout: Layout) -> dict[str, dict[str, Any]]:
        return {
            f"ha-cache-{name[-1]}": {
                "kind": "redis",
                "url": f"redis://{HOST}:{layout.port(name)}/0",
                "options": {"celery": False},
            }
        }

    return Component(
        name=name,
        binary="redis-server",
        install="scripts/install-services redis",
        port_names=("main",),
        command=command,
        ready=ready,
        services=services,
        requires=(replica_of,) if replica_of else (),
        restart_with_requires=False,  # a replica reconnects, and Sentinel re-points it
    )


def _sentinel(name: str) -> Component:
    def command(layout: Layout) -> list[str]:
        conf = layout.dir / "sentinel.conf"
        layout.dir.mkdir(parents=True, exist_ok=True)
        others_alive = any(_ping(layout.port(s)) for s in SENTINELS if s != name)
        if not conf.is_file() or not others_alive:
            conf.write_text(
                f"port {layout.port(name)}\nbind {HOST}\ndir {layout.dir}\n"
                f"sentinel announce-ip {HOST}\n"
                f"sentinel monitor {MASTER} {HOST} {layout.port('ha-redis-a')} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
        return ["redis-sentinel", str(conf)]

    def ready(layout: Layout) -> bool:
        """It knows a master, the replica, and (the last one) the two other Sentinels."""
        client = sync_redis.Redis(
            host=HOST, port=layout.port(name), socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            master: dict[str, Any] = client.sentinel_master(MASTER)  # type: ignore[assignment]  # a dict
            known = int(master.get("num-other-sentinels", 0))
            replicas = int(master.get("num-slaves", 0))
            return replicas >= 1 and known >= SENTINELS.index(name)
        except (sync_redis.RedisError, ValueError):
            return False
        finally:
            client.close()

    return Component(
        name=name,
        binary="redis-sentinel",
        install="scripts/install-services redis  (Debian's redis-sentinel)",
        port_names=("main",),
        command=command,
        ready=ready,
        # the last Sentinel adds the Sentinel-aware service, once all three are there
        services=_sentinel_service if name == SENTINELS[-1] else (lambda layout: {}),
        requires=("ha-redis-b", *SENTINELS[: SENTINELS.index(name)]),
        restart_with_requires=False,
    )


def _sentinel_service(layout: Layout) -> dict[str, dict[str, Any]]:
    sentinels = ",".join(f"{HOST}:{layout.port(s)}" for s in SENTINELS)
    return {
        "ha-cache": {
            "kind": "redis",
            "url": f"redis://{HOST}:{layout.port('ha-redis-a')}/0",
            "endpoints": {"sentinels": sentinels},
            "options": {"celery": False, "sentinel_master": MASTER},
        }
    }


def _consul(name: str) -> Component:
    index = CONSULS.index(name)

    def port(layout: Layout, which: str, node: str = name) -> str:
        return str(layout.port(node, which))

    def command(layout: Layout) -> list[str]:
        data = layout.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        joins = [
            a
            for other in CONSULS
            if other != name
            for a in ("-retry-join", f"{HOST}:{port(layout, 'serf_lan', other)}")
        ]
        return [
            "consul", "agent", "-server", "-bootstrap-expect", "3",
            "-data-dir", str(data), "-node", name,
            "-bind", HOST, "-client", HOST,
            "-http-port", port(layout, "http"), "-dns-port", port(layout, "dns"),
            "-serf-lan-port", port(layout, "serf_lan"), "-serf-wan-port", port(layout, "serf_wan"),
            "-server-port", port(layout, "server"), "-grpc-port", "-1",
            "-retry-interval", "1s", *joins,
            "-hcl", "performance { raft_multiplier = 1 }",
            "-log-level", "info",
        ]  # fmt: skip

    def ready(layout: Layout) -> bool:
        """The first two answer HTTP; the third waits for a leader and three raft peers."""
        url = f"http://{HOST}:{port(layout, 'http')}"
        try:
            if index < 2:
                return httpx.get(f"{url}/v1/status/peers", timeout=0.5).status_code == 200
            leader = httpx.get(f"{url}/v1/status/leader", timeout=0.5).json()
            peers = httpx.get(f"{url}/v1/status/peers", timeout=0.5).json()
            return bool(leader) and len(peers) == 3
        except (httpx.HTTPError, ValueError):
            return False

    return Component(
        name=name,
        binary="consul",
        install="scripts/install-services consul",
        port_names=CONSUL_PORTS,
        command=command,
        ready=ready,
        services=lambda layout: {
            f"ha-consul-{index + 1}": {
                "kind": "consul",
                "url": f"http://{HOST}:{port(layout, 'http')}",
                "endpoints": {"dns": f"{HOST}:{port(layout, 'dns')}"},
                "expectations": {"min_peers": 3},
            }
        },
        requires=CONSULS[:index],
        restart_with_requires=False,
    )


HA_COMPONENTS = (
    _redis("ha-redis-a", None),
    _redis("ha-redis-b", "ha-redis-a"),
    *(_sentinel(s) for s in SENTINELS),
    *(_consul(c) for c in CONSULS),
)
