"""Sandbox components for the observability pipeline: Jaeger v2, an OpenTelemetry Collector
(built with ocb from deploy/otelcol/builder.yaml) and Prometheus, wired together:

    probe --OTLP--> otelcol --traces--> jaeger            (trace store)
                       |--span_metrics + metrics--> prometheus exporter <--scrape-- prometheus
                       '--own telemetry-----------------------------------scrape-- prometheus

Intervals are short (scrape, rule evaluation, span-metrics flush: 1 s) so checks do not wait
on production defaults. Each component writes its config into its own directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from stackprobe.sandbox.component import Component, Layout

CACHE_BIN = Path.home() / ".cache" / "stackprobe" / "bin"
HOST = "127.0.0.1"
CANARY_METRIC = "stackprobe_canary_value"
CANARY_ALERT = "StackprobeCanaryHigh"


def _addr(layout: Layout, component: str, name: str) -> str:
    return f"{HOST}:{layout.port(component, name)}"


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _write(layout: Layout, name: str, doc: dict[str, Any]) -> Path:
    layout.dir.mkdir(parents=True, exist_ok=True)
    path = layout.dir / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- Jaeger v2 ---------------------------------------------------------------------------------


def jaeger_config(layout: Layout, badger: bool = False) -> dict[str, Any]:
    """Jaeger v2 with in-memory storage, or with badger on disk (the HA profile: a restart
    keeps the traces)."""

    def a(name: str) -> str:
        return _addr(layout, "jaeger", name)

    store = "badger_store" if badger else "memstore"
    backend: dict[str, Any] = (
        {"badger": {"directories": {"keys": str(layout.dir / "badger" / "keys"), "values": str(layout.dir / "badger" / "values")},
                    "ephemeral": False, "ttl": {"spans": "72h"}}}
        if badger
        else {"memory": {"max_traces": 100000}}
    )  # fmt: skip
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]}
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {
                    "level": "basic",
                    "readers": [{"pull": {"exporter": {"prometheus": {"host": HOST, "port": layout.port("jaeger", "metrics")}}}}],
                },
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": store},
                "http": {"endpoint": a("query_http")},
                "grpc": {"endpoint": a("query_grpc")},
            },
            "jaeger_storage": {"backends": {store: backend}},
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": a("health")}},
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": a("otlp_grpc")}, "http": {"endpoint": a("otlp_http")}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": store}},
    }  # fmt: skip


def _jaeger_file(badger: bool) -> str:
    return "jaeger-badger.yaml" if badger else "jaeger.yaml"


def _jaeger(badger: bool) -> Component:
    def command(layout: Layout) -> list[str]:
        config = _write(layout, _jaeger_file(badger), jaeger_config(layout, badger))
        return [str(CACHE_BIN / "jaeger"), f"--config=file:{config}"]

    def services(layout: Layout) -> dict[str, dict[str, Any]]:
        return {
            "tracing": {
                "kind": "jaeger",
                "url": f"http://{_addr(layout, 'jaeger', 'query_http')}",
                "endpoints": {
                    "otlp_http": f"http://{_addr(layout, 'jaeger', 'otlp_http')}",
                    "otlp_grpc": _addr(layout, "jaeger", "otlp_grpc"),
                    "metrics": f"http://{_addr(layout, 'jaeger', 'metrics')}/metrics",
                    "health": f"http://{_addr(layout, 'jaeger', 'health')}/status",
                },
                "links": {"collector": "otel"},
                "expectations": {"retention": "24h"} if badger else {"max_traces": 100000},
                "options": {"config_file": str(layout.dir / _jaeger_file(badger))},
            }
        }

    return Component(
        name="jaeger",
        binary=str(CACHE_BIN / "jaeger"),
        install="scripts/install-services jaeger",
        port_names=("query_http", "query_grpc", "otlp_grpc", "otlp_http", "health", "metrics"),
        command=command,
        ready=lambda layout: _http_ok(
            f"http://{_addr(layout, 'jaeger', 'query_http')}/api/services"
        ),
        services=services,
    )


JAEGER = _jaeger(badger=False)
JAEGER_BADGER = _jaeger(badger=True)  # the HA profile's: traces survive a restart


# --- OpenTelemetry Collector -------------------------------------------------------------------


def otelcol_config(layout: Layout) -> dict[str, Any]:
    def a(name: str) -> str:
        return _addr(layout, "otelcol", name)

    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": a("otlp_grpc")}, "http": {"endpoint": a("otlp_http")}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {
            "otlp_grpc/jaeger": {
                "endpoint": _addr(layout, "jaeger", "otlp_grpc"), "tls": {"insecure": True},
                # while Jaeger is down the queue holds batches; retried soon after it is back
                "retry_on_failure": {"enabled": True, "initial_interval": "500ms", "max_interval": "2s", "max_elapsed_time": "300s"},
            },
            "prometheus": {
                "endpoint": a("prometheus"),
                "enable_open_metrics": True,
            },
            "debug": {"verbosity": "basic"},
        },
        "connectors": {
            "span_metrics": {
                "metrics_flush_interval": "3s",  # exemplars live one flush: give scrapes (1 s) time
                "exemplars": {"enabled": True},
                "histogram": {"explicit": {"buckets": ["5ms", "25ms", "100ms", "500ms", "2s"]}},
            }
        },
        "extensions": {
            "health_check": {"endpoint": a("health")},
            "zpages": {"endpoint": a("zpages")},
        },
        "service": {
            "extensions": ["health_check", "zpages"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["otlp_grpc/jaeger", "span_metrics"]},
                "metrics": {"receivers": ["otlp", "span_metrics"], "processors": ["batch"], "exporters": ["prometheus"]},
            },
            "telemetry": {
                "metrics": {
                    "level": "detailed",
                    "readers": [{"pull": {"exporter": {"prometheus": {"host": HOST, "port": layout.port("otelcol", "metrics")}}}}],
                },
            },
        },
    }  # fmt: skip


def _otelcol_command(layout: Layout) -> list[str]:
    config = _write(layout, "otelcol.yaml", otelcol_config(layout))
    return [str(CACHE_BIN / "otelcol-stackprobe"), f"--config=file:{config}"]


OTELCOL = Component(
    name="otelcol",
    binary=str(CACHE_BIN / "otelcol-stackprobe"),
    install="scripts/install-services otelcol",
    port_names=("otlp_grpc", "otlp_http", "health", "zpages", "metrics", "prometheus"),
    command=_otelcol_command,
    ready=lambda layout: _http_ok(f"http://{_addr(layout, 'otelcol', 'health')}/"),
    requires=("jaeger",),
    services=lambda layout: {
        "otel": {
            "kind": "otel-collector",
            "endpoints": {
                "otlp_http": f"http://{_addr(layout, 'otelcol', 'otlp_http')}",
                "otlp_grpc": _addr(layout, "otelcol", "otlp_grpc"),
                "health": f"http://{_addr(layout, 'otelcol', 'health')}/",
                "metrics": f"http://{_addr(layout, 'otelcol', 'metrics')}/metrics",
                "prometheus": f"http://{_addr(layout, 'otelcol', 'prometheus')}/metrics",
            },
            "depends_on": ["tracing"],
            "links": {"prometheus": "metrics", "trace_store": "tracing"},
        }
    },
)


# --- Prometheus --------------------------------------------------------------------------------


def prometheus_rules() -> dict[str, Any]:
    """A recording rule, an alert on the collector, and the canary the alerting check drives."""
    return {
        "groups": [
            {
                "name": "stackprobe-sandbox",
                "interval": "1s",
                "rules": [
                    {
                        "record": "job:otelcol_receiver_accepted_spans:rate1m",
                        "expr": 'sum by (job) (rate({__name__=~"otelcol_receiver_accepted_spans(_total)?"}[1m]))',
                    },
                    {
                        # queue size and capacity exist from start-up; send_failed appears only
                        # after the first failure, which would make an alert on it a dead rule
                        "alert": "CollectorExportQueueFilling",
                        "expr": "max(otelcol_exporter_queue_size / otelcol_exporter_queue_capacity) > 0.8",
                        "for": "1m",
                        "labels": {"severity": "warning"},
                        "annotations": {"summary": "the collector's export queue is filling up"},
                    },
                    {
                        "alert": "CollectorDown",
                        "expr": 'up{job="otelcol"} == 0',
                        "for": "30s",
                        "labels": {"severity": "critical"},
                        "annotations": {"summary": "Prometheus cannot scrape the collector"},
                    },
                    {
                        "alert": CANARY_ALERT,
                        "expr": f"max({CANARY_METRIC}) > 100",
                        "for": "2s",
                        "labels": {"severity": "none", "stackprobe": "canary"},
                        "annotations": {
                            "summary": "stackprobe's canary metric is above its threshold"
                        },
                    },
                ],
            }
        ]
    }


def prometheus_config(layout: Layout) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(layout.dir / "rules.yml")],
        "scrape_configs": [
            {"job_name": "otelcol", "static_configs": [{"targets": [_addr(layout, "otelcol", "metrics")]}]},
            {"job_name": "otelcol-exporter", "static_configs": [{"targets": [_addr(layout, "otelcol", "prometheus")]}]},
            {"job_name": "jaeger", "static_configs": [{"targets": [_addr(layout, "jaeger", "metrics")]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [_addr(layout, "prometheus", "main")]}]},
        ],
    }  # fmt: skip


def _prometheus_command(layout: Layout) -> list[str]:
    _write(layout, "rules.yml", prometheus_rules())
    config = _write(layout, "prometheus.yml", prometheus_config(layout))
    return [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={layout.dir / 'data'}",
        f"--web.listen-address={_addr(layout, 'prometheus', 'main')}",
        "--enable-feature=exemplar-storage",
        "--web.enable-remote-write-receiver",
        "--storage.tsdb.retention.time=1d",
    ]


PROMETHEUS = Component(
    name="prometheus",
    binary="prometheus",
    install="scripts/install-services prometheus  (or: apt-get install prometheus)",
    port_names=("main",),
    command=_prometheus_command,
    ready=lambda layout: _http_ok(f"http://{_addr(layout, 'prometheus', 'main')}/-/ready"),
    requires=("otelcol",),
    services=lambda layout: {
        "metrics": {
            "kind": "prometheus",
            "url": f"http://{_addr(layout, 'prometheus', 'main')}",
            "depends_on": ["otel"],
            "expectations": {"jobs": ["otelcol", "otelcol-exporter", "jaeger", "prometheus"]},
            "options": {
                "rule_files": [str(layout.dir / "rules.yml")],
                "canary": {"alert": CANARY_ALERT, "metric": CANARY_METRIC, "threshold": 100},
            },
            "links": {"collector": "otel"},
        }
    },
)

COMPONENTS = (JAEGER, OTELCOL, PROMETHEUS)
