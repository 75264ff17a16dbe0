"""Compose files written by others: lint without false positives, discover every recognisable
service, and write a stack file that passes `config check`, for each class of input seen.

`compose_wild/` holds whole files as people write them; the tests below add several inputs
of each class (the report's example and its neighbours).
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackprobe.compose.discover import discover, render_stack
from stackprobe.compose.images import data_dirs, kind_of
from stackprobe.compose.lifecycle import lifecycle
from stackprobe.compose.lint import lint
from stackprobe.compose.model import ComposeFile, load_compose
from stackprobe.loader import load_stack

WILD = Path(__file__).resolve().parent / "compose_wild"
CORPUS = sorted(
    [*WILD.glob("*.yml"), *WILD.glob("*/compose.yaml")], key=lambda p: str(p.relative_to(WILD))
)


def write(tmp_path: Path, doc: dict[str, Any] | str, name: str = "compose.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def load(
    tmp_path: Path, doc: dict[str, Any] | str, env: dict[str, str] | None = None
) -> ComposeFile:
    return load_compose(write(tmp_path, doc), env={} if env is None else env)


def found(compose: ComposeFile) -> set[tuple[str, str | None, str]]:
    return {(f.rule, f.service, f.key) for f in lint(compose).findings}


def stack_of(compose: ComposeFile, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The discovered stack, after checking that its file passes load_stack."""
    result = discover(compose, compose.path, out_dir)
    out = out_dir / "stackprobe.yaml"
    out.write_text(render_stack(result.stack, compose.path))
    loaded = load_stack(out, env={})  # credentials unset: warnings, never errors
    assert set(loaded.services) == set(result.stack["services"])
    return result.stack["services"], result.notes


def kinds(services: dict[str, Any]) -> dict[str, str]:
    return {name: entry["kind"] for name, entry in services.items() if entry["kind"] != "compose"}


# --- the corpus --------------------------------------------------------------------------

EXPECTED: dict[str, tuple[set[tuple[str, str | None, str]], dict[str, str]]] = {
    "bitnami.yml": (set(), {"redis": "redis", "grafana": "grafana", "consul": "consul", "prometheus": "prometheus"}),
    "celery/compose.yaml": (set(), {"redis": "redis", "worker": "celery", "beat": "celery"}),
    "data_dirs.yml": (
        set(),
        {"prometheus": "prometheus", "grafana": "grafana", "store": "redis", "cache": "redis",
         "query-frontend": "tempo", "dev-consul": "consul"},
    ),
    "host_network.yml": (
        {("admin-port-exposed", "prometheus", "network_mode"), ("host-network-ports", "prometheus", "ports")},
        {"prometheus": "prometheus", "grafana": "grafana", "redis": "redis"},
    ),
    "images.yml": (
        set(),
        {"valkey": "redis", "stack": "redis", "modules": "redis", "private": "redis", "pinned": "redis",
         "lgtm": "grafana", "lgtm-otlp": "otel-collector", "metrics": "prometheus", "discovery": "consul"},
    ),
    "merge_keys.yml": (set(), {"r": "redis", "sessions": "redis"}),
    "observability.yml": (
        set(),
        {"agent": "otel-collector", "gateway": "otel-collector", "tempo": "tempo", "jaeger": "jaeger",
         "prometheus": "prometheus", "prometheus-longterm": "prometheus"},
    ),
    "one_shots.yml": (set(), {"cache": "redis"}),
    "split/compose.yaml": (set(), {"worker": "celery", "prometheus": "prometheus", "cache": "redis"}),
}  # fmt: skip


def test_the_corpus_is_the_expected_one() -> None:
    assert {str(p.relative_to(WILD)) for p in CORPUS} == set(EXPECTED)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(WILD)))
def test_every_wild_file_lints_as_expected_and_discovers_a_valid_stack(
    path: Path, tmp_path: Path
) -> None:
    rules, expected_kinds = EXPECTED[str(path.relative_to(WILD))]
    compose = load_compose(path, env={})
    assert found(compose) == rules, lint(compose).to_text()
    services, _ = stack_of(compose, tmp_path)
    assert kinds(services) == expected_kinds


# --- data-volume: where the data really is --------------------------------------------------


def _stateful(image: str, **extra: Any) -> dict[str, Any]:
    svc = {"image": image, "healthcheck": {"test": ["CMD", "true"]}}
    svc.update(extra)
    return {"services": {"s": svc}, "volumes": {"v": {}}}


@pytest.mark.parametrize(
    ("image", "extra", "expected"),
    [
        ("bitnami/redis:7.2", {}, ("/bitnami/redis/data",)),
        ("bitnami/valkey:8.0", {}, ("/bitnami/valkey/data",)),
        ("bitnami/grafana:11", {}, ("/opt/bitnami/grafana/data",)),
        ("bitnami/consul:1.20", {}, ("/bitnami/consul",)),
        ("bitnami/prometheus:2", {}, ("/opt/bitnami/prometheus/data",)),
        ("prom/prometheus:v2.53.0", {"command": ["--storage.tsdb.path=/prometheus-data"]}, ("/prometheus-data",)),
        ("prom/prometheus:v2.53.0", {"command": "--storage.tsdb.path /tsdb --web.enable-lifecycle"}, ("/tsdb",)),
        ("prom/prometheus:v2.53.0", {"command": ["--config.file=/etc/p.yml"]}, ("/prometheus/data",)),
        ("prom/prometheus:v2.53.0", {"command": ["--agent", "--config.file=/etc/p.yml"]}, ("/prometheus/data-agent",)),
        ("grafana/grafana:11.2.0", {"environment": {"GF_PATHS_DATA": "/grafana-data"}}, ("/grafana-data",)),
        ("grafana/grafana:11.2.0", {"environment": ["GF_PATHS_DATA=/srv/grafana"]}, ("/srv/grafana",)),
        ("redis:7.2.5", {"command": "redis-server --dir /var/lib/redis"}, ("/var/lib/redis",)),
        ("redis:7.2.5", {"command": ["sh", "-c", "exec redis-server --dir /cache-dir --appendonly yes"]}, ("/cache-dir",)),
        ("valkey/valkey:8.0", {"command": ["valkey-server", "--dir", "/valkey"]}, ("/valkey",)),
        ("hashicorp/consul:1.20.1", {"command": "agent -server -data-dir=/srv/consul"}, ("/srv/consul",)),
        ("arangodb:3.12.4", {"command": ["--database.directory", "/db"]}, ("/db",)),
    ],
)  # fmt: skip
def test_flags_variables_and_images_say_where_the_data_is(
    tmp_path: Path, image: str, extra: dict[str, Any], expected: tuple[str, ...]
) -> None:
    compose = load(tmp_path, _stateful(image, **extra))
    svc = compose.services["s"]
    assert data_dirs(svc, compose.base_dir) == expected
    assert ("data-volume", "s", "volumes") in found(compose)  # nothing is mounted there
    doc = _stateful(image, volumes=[f"v:{expected[0]}"], **extra)
    assert "data-volume" not in {rule for rule, _, _ in found(load(tmp_path, doc))}


@pytest.mark.parametrize(
    ("image", "extra"),
    [
        ("redis:7.2.5", {"command": 'redis-server --save "" --appendonly no'}),
        ("redis:7.2.5", {"command": ["redis-server", "--save", "", "--appendonly", "no"]}),
        ("redis:7.2.5", {"command": "redis-server --save ''"}),  # AOF is off by default
        ("redis:7.2.5", {"command": "redis-server --save --maxmemory 100mb"}),
        ("redis/redis-stack-server:7.2.0-v10", {"environment": {"REDIS_ARGS": "--save '' --appendonly no"}}),
        ("bitnami/redis:7.2", {"environment": {"REDIS_AOF_ENABLED": "no", "REDIS_RDB_POLICY_DISABLED": "yes"}}),
        ("valkey/valkey:8.0", {"command": ["valkey-server", "--save", "", "--appendonly", "no"]}),
        ("grafana/tempo:2.7.2", {"command": ["-target=distributor", "-config.file=/etc/t.yaml"]}),
        ("grafana/tempo:2.7.2", {"command": ["-target=querier"]}),
        ("grafana/tempo:2.7.2", {"command": ["--target=query-frontend"]}),
        ("consul:1.8.7", {}),  # the image's CMD is a dev agent: everything in memory
        ("hashicorp/consul:1.20.1", {"command": "agent -dev -client 0.0.0.0"}),
        ("grafana/otel-lgtm:0.8.1", {}),  # a development image: data thrown away by design
    ],
)  # fmt: skip
def test_caches_dev_agents_and_stateless_roles_keep_no_data(
    tmp_path: Path, image: str, extra: dict[str, Any]
) -> None:
    compose = load(tmp_path, _stateful(image, **extra))
    assert data_dirs(compose.services["s"], compose.base_dir) == ()
    assert "data-volume" not in {rule for rule, _, _ in found(compose)}


@pytest.mark.parametrize(
    ("text", "persists"),
    [
        ("dir /srv/redis\nsave 60 1\n", True),
        ('save ""\nappendonly no\n', False),
        ("# save 60 1\nappendonly yes\n", True),
    ],
)
def test_a_mounted_redis_conf_is_read(tmp_path: Path, text: str, persists: bool) -> None:
    (tmp_path / "redis.conf").write_text(text)
    doc = _stateful(
        "redis:7.2.5",
        command=["redis-server", "/usr/local/etc/redis/redis.conf"],
        volumes=["./redis.conf:/usr/local/etc/redis/redis.conf:ro"],
    )
    compose = load(tmp_path, doc)
    dirs = data_dirs(compose.services["s"], compose.base_dir)
    assert bool(dirs) == persists
    if "dir /srv/redis" in text:
        assert dirs == ("/srv/redis",)


@pytest.mark.parametrize(
    "volumes",
    [["./data:/data"], [{"type": "bind", "source": "./data", "target": "/data"}], ["./data:/"]],
)
def test_bind_mounts_survive_recreation_so_they_are_no_data_volume_finding(
    tmp_path: Path, volumes: list[Any]
) -> None:
    (tmp_path / "data").mkdir()
    compose = load(tmp_path, _stateful("redis:7.2.5", volumes=volumes))
    assert found(compose) == set()


# --- one-shot jobs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "svc",
    [
        {"image": "busybox:1.36", "command": ["chown", "-R", "1001:1001", "/data"], "restart": "no"},
        {"image": "busybox:1.36", "command": "sh -c 'mkdir -p /data/a && chown -R 472 /data'"},
        {"image": "alpine:3.20", "command": ["sh", "-c", "until nc -z kafka 9092; do sleep 1; done; echo ready"], "restart": "on-failure"},
        {"image": "bitnami/kafka:3.7", "entrypoint": ["/bin/bash", "-c"], "command": "kafka-topics.sh --create --topic t --bootstrap-server kafka:9092"},
        {"image": "confluentinc/cp-kafka:7.6.1", "command": "bash -c 'kafka-topics --bootstrap-server kafka:9092 --create --if-not-exists --topic orders'"},
        {"image": "example/seed:1.0", "restart": "no", "healthcheck": {"disable": True}},
        {"image": "minio/mc:RELEASE.2024-06-12T14-34-03Z", "command": ["mb", "local/uploads"]},
        {"image": "curlimages/curl:8.8.0", "command": ["-fsS", "-X", "PUT", "http://consul:8500/v1/kv/x"]},
        {"image": "redis:7.2.5", "command": "redis-cli -h cache SET warm 1"},
        {"image": "hashicorp/consul:1.20.1", "command": "consul kv put -http-addr=consul:8500 feature/x on"},
        {"image": "example/app:2.0", "command": "python manage.py migrate --noinput"},
        {"image": "flyway/flyway:10", "command": "-url=jdbc:postgresql://db/app migrate"},
    ],
)  # fmt: skip
def test_one_shot_jobs_need_no_healthcheck(tmp_path: Path, svc: dict[str, Any]) -> None:
    compose = load(tmp_path, {"services": {"job": svc}})
    life = lifecycle(compose, compose.services["job"])
    assert life.one_shot, life.why
    assert found(compose) == set()
    services, notes = stack_of(compose, tmp_path)
    assert "job" not in services
    assert not any(
        n.startswith("job:") and "one-shot" not in n
        for n in notes
        if kind_of(compose.services["job"])
    )


@pytest.mark.parametrize(
    ("svc", "why"),
    [
        ({"image": "busybox:1.36", "command": ["chown", "-R", "1001", "/data"], "restart": "always"}, "restart: always"),
        ({"image": "busybox:1.36", "command": "sh -c 'chown -R 1001 /data && sleep infinity'"}, "not one known to finish"),
        ({"image": "busybox:1.36", "command": "sh -c 'while true; do date; sleep 5; done'"}, "not one known to finish"),
        ({"image": "redis:7.2.5", "command": "redis-cli -h cache monitor"}, "it runs Redis"),
        ({"image": "example/api:1.0"}, "image's default command"),
        ({"image": "example/api:1.0", "restart": "no"}, "image's default command"),
        ({"image": "example/api:1.0", "command": ["gunicorn", "app:wsgi"]}, "gunicorn app:wsgi"),
    ],
)  # fmt: skip
def test_long_running_services_say_why_they_were_judged_so(
    tmp_path: Path, svc: dict[str, Any], why: str
) -> None:
    compose = load(tmp_path, {"services": {"svc": svc}})
    [finding] = [f for f in lint(compose).findings if f.rule == "healthcheck-missing"]
    assert why in finding.message and "judged long-running" in finding.message
    assert "service_completed_successfully" in finding.fix


# --- network_mode: host ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("svc", "url", "exposed"),
    [
        ({"image": "prom/prometheus:v2.53.0"}, "http://127.0.0.1:9090", True),
        ({"image": "prom/prometheus:v2.53.0", "command": ["--web.listen-address=127.0.0.1:9095"]}, "http://127.0.0.1:9095", False),
        ({"image": "prom/prometheus:v2.53.0", "command": ["--web.listen-address=:9091"]}, "http://127.0.0.1:9091", True),
        ({"image": "redis:7.2.5", "command": "redis-server --port 6390"}, "redis://127.0.0.1:6390/0", True),
        ({"image": "redis:7.2.5", "command": "redis-server --bind 127.0.0.1 ::1"}, "redis://127.0.0.1:6379/0", False),
        ({"image": "grafana/grafana:11.2.0", "environment": {"GF_SERVER_HTTP_PORT": "3001"}}, "http://127.0.0.1:3001", True),
        ({"image": "hashicorp/consul:1.20.1"}, "http://127.0.0.1:8500", True),  # CMD: -client 0.0.0.0
        ({"image": "hashicorp/consul:1.20.1", "command": "agent -server -bootstrap-expect=1"}, "http://127.0.0.1:8500", False),
    ],
)  # fmt: skip
def test_host_networking_listens_on_the_host(
    tmp_path: Path, svc: dict[str, Any], url: str, exposed: bool
) -> None:
    body = {**svc, "network_mode": "host", "healthcheck": {"test": ["CMD", "true"]}}
    doc = {"services": {"s": body}}
    compose = load(tmp_path, doc)
    rules = {rule for rule, _, _ in found(compose)} - {"data-volume"}
    assert ("admin-port-exposed" in rules) == exposed
    services, notes = stack_of(compose, tmp_path)
    assert services["s"]["url"] == url, notes


def test_ports_are_discarded_with_host_networking_and_the_host_port_is_taken(
    tmp_path: Path,
) -> None:
    doc = {
        "services": {
            "prom": {"image": "prom/prometheus:v2.53.0", "network_mode": "host", "ports": ["9090:9090"],
                     "healthcheck": {"test": ["CMD", "true"]}, "volumes": ["d:/prometheus"]},
            "other": {"image": "example/web:1.0", "ports": ["9090:80"], "healthcheck": {"test": ["CMD", "true"]}},
        },
        "volumes": {"d": {}},
    }  # fmt: skip
    rules = found(load(tmp_path, doc))
    assert ("host-network-ports", "prom", "ports") in rules
    assert ("port-conflict", "other", "ports[0]") in rules


# --- env_file --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_file", "missing"),
    [
        ("app.env", ["env_file[0]"]),
        (["present.env", "app.env"], ["env_file[1]"]),
        ([{"path": "app.env"}], ["env_file[0]"]),
        ([{"path": "app.env", "required": True}], ["env_file[0]"]),
        ([{"path": "app.env", "required": False}], []),
        (["present.env"], []),
        ("./conf/${ENV_NAME:-dev}.env", ["env_file[0]"]),
    ],
)
def test_a_missing_env_file_is_an_error_naming_it(
    tmp_path: Path, env_file: Any, missing: list[str]
) -> None:
    (tmp_path / "present.env").write_text("A=1\n")
    doc = {"services": {"app": {"image": "example/app:1.0", "env_file": env_file,
                                "healthcheck": {"test": ["CMD", "true"]}}}}  # fmt: skip
    report = lint(load(tmp_path, doc))
    findings = [f for f in report.findings if f.rule == "env-file-missing"]
    assert [f.key for f in findings] == missing
    for f in findings:
        assert f.severity == "error" and ".env" in f.message and "refuses" in f.message


# --- images under other names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("ghcr.io/valkey-io/valkey:8.0.1", "redis"),
        ("valkey/valkey:8", "redis"),
        ("redis/redis-stack:7.2.0-v10", "redis"),
        ("redis/redis-stack-server:7.2.0-v10", "redis"),
        ("redislabs/redismod:edge", "redis"),
        ("bitnami/redis:7.2", "redis"),
        ("docker.io/bitnami/redis:7.2", "redis"),
        ("public.ecr.aws/bitnami/redis:7.2", "redis"),
        ("docker.io/library/redis:7.2", "redis"),
        ("registry.local:5000/team/redis:7", "redis"),
        ("redis@sha256:" + "a" * 64, "redis"),
        ("localhost:5000/redis:7.2@sha256:" + "b" * 64, "redis"),
        ("bitnami/grafana:11", "grafana"),
        ("grafana/otel-lgtm:0.8.1", "grafana"),
        ("bitnami/consul:1.20", "consul"),
        ("mirror.gcr.io/hashicorp/consul:1.20.1", "consul"),
        ("otel/opentelemetry-collector-contrib:0.130.0", "otel-collector"),
        ("ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib:0.130.0", "otel-collector"),
        ("prom/prometheus:v2.53.0", "prometheus"),
        ("bitnami/prometheus:2", "prometheus"),
        ("quay.io/prometheus/prometheus:v2.53.0", "prometheus"),
        ("docker.io/grafana/tempo:2.7.2", "tempo"),
        ("example/redis-exporter:1.0", None),
    ],
)  # fmt: skip
def test_images_under_other_names_have_their_kind(
    tmp_path: Path, image: str, kind: str | None
) -> None:
    compose = load(tmp_path, {"services": {"s": {"image": image}}})
    assert kind_of(compose.services["s"]) == kind


def test_lgtm_is_grafana_and_a_collector(tmp_path: Path) -> None:
    doc = {"services": {"lgtm": {"image": "grafana/otel-lgtm:0.8.1",
                                 "ports": ["127.0.0.1:3000:3000", "127.0.0.1:4318:4318"]}}}  # fmt: skip
    services, _ = stack_of(load(tmp_path, doc), tmp_path)
    assert services["lgtm"] == {"kind": "grafana", "url": "http://127.0.0.1:3000"}
    assert services["lgtm-otlp"] == {
        "kind": "otel-collector",
        "endpoints": {"otlp_http": "http://127.0.0.1:4318"},
    }


# --- links ---------------------------------------------------------------------------------


def test_links_come_from_the_collectors_config_and_prometheus_scrape_targets(
    tmp_path: Path,
) -> None:
    compose = load_compose(WILD / "observability.yml", env={})
    services, notes = stack_of(compose, tmp_path)
    assert services["gateway"]["links"] == {"prometheus": "prometheus", "trace_store": "tempo"}
    assert services["tempo"]["links"] == {"collector": "gateway"}
    assert services["prometheus"]["links"] == {"collector": "gateway"}
    picked = [n for n in notes if "picked" in n]
    assert any(n.startswith("agent: links.trace_store") for n in picked)  # nothing told: said


@pytest.mark.parametrize(
    ("gateway_extra", "expected"),
    [
        ({"environment": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}}, "jaeger"),
        (
            {"command": ["--config=/etc/c.yaml", "--set=exporters.otlp.endpoint=tempo:4317"]},
            "tempo",
        ),
        ({"depends_on": ["jaeger"]}, "jaeger"),
    ],
)
def test_a_trace_store_link_from_environment_command_or_depends_on(
    tmp_path: Path, gateway_extra: dict[str, Any], expected: str
) -> None:
    external = {"x-stackprobe": {"healthcheck": "external", "reason": "scratch"}}
    doc = {
        "services": {
            "otel": {"image": "otel/opentelemetry-collector-contrib:0.130.0",
                     "ports": ["127.0.0.1:4317:4317"], **external, **gateway_extra},
            "jaeger": {"image": "jaegertracing/jaeger:2.1.0", "ports": ["127.0.0.1:16686:16686"], **external},
            "tempo": {"image": "grafana/tempo:2.7.2", "ports": ["127.0.0.1:3200:3200"],
                      "volumes": ["t:/var/tempo"], **external},
        },
        "volumes": {"t": {}},
    }  # fmt: skip
    services, notes = stack_of(load(tmp_path, doc), tmp_path)
    assert services["otel"]["links"] == {"trace_store": expected}
    assert not any(n.startswith("otel:") for n in notes)


@pytest.mark.parametrize("count", [2, 3])
def test_several_of_a_kind_and_no_clue_still_pass_config_check(tmp_path: Path, count: int) -> None:
    services_doc: dict[str, Any] = {
        f"otel{i}": {"image": "otel/opentelemetry-collector:0.130.0", "ports": [f"127.0.0.1:{4317 + 10 * i}:4317"]}
        for i in range(count)
    }  # fmt: skip
    services_doc |= {
        f"prom{i}": {"image": "prom/prometheus:v2.53.0", "ports": [f"127.0.0.1:{9090 + i}:9090"]}
        for i in range(count)
    }
    services_doc |= {"jaeger": {"image": "jaegertracing/jaeger:2.1.0", "ports": ["127.0.0.1:16686:16686"]},
                     "tempo": {"image": "grafana/tempo:2.7.2", "ports": ["127.0.0.1:3200:3200"]}}  # fmt: skip
    services, notes = stack_of(load(tmp_path, {"services": services_doc}), tmp_path)
    assert services["otel0"]["links"] == {"prometheus": "prom0", "trace_store": "jaeger"}
    assert any("picked prom0" in n for n in notes)


def test_celery_workers_link_to_their_redis(tmp_path: Path) -> None:
    doc = {
        "services": {
            "cache": {"image": "redis:7.2.5", "ports": ["127.0.0.1:6379:6379"]},
            "broker": {"image": "redis:7.2.5", "ports": ["127.0.0.1:6380:6379"]},
            "worker": {"image": "example/app:2.0", "command": "celery -A app worker",
                       "environment": {"CELERY_BROKER_URL": "redis://broker:6379/0"}},
            "mailer": {"image": "example/app:2.0", "command": "celery -A app worker -Q mail",
                       "environment": {"CELERY_BROKER_URL": "redis://cache:6379/4"}},
        }
    }  # fmt: skip
    services, _ = stack_of(load(tmp_path, doc), tmp_path)
    assert services["broker"]["links"] == {"celery": "worker"}
    assert services["cache"]["links"] == {"celery": "mailer"}
    assert services["mailer"]["url"] == "redis://127.0.0.1:6379/4"


# --- Celery brokers through variables -------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "env", "dotenv", "url"),
    [
        ({"CELERY_BROKER_URL": "${BROKER:-redis://redis:6379/2}"}, {}, "", "redis://127.0.0.1:6379/2"),
        ({"CELERY_BROKER_URL": "${BROKER:-redis://redis:6379/2}"}, {"BROKER": "redis://redis:6379/7"}, "", "redis://127.0.0.1:6379/7"),
        ({"CELERY_BROKER_URL": "${BROKER:-redis://redis:6379/2}"}, {}, "BROKER=redis://redis:6379/3\n", "redis://127.0.0.1:6379/3"),
        ({"CELERY_BROKER_URL": "${BROKER:-redis://redis:6379/2}"}, {"BROKER": "redis://redis:6379/8"}, "BROKER=redis://redis:6379/3\n", "redis://127.0.0.1:6379/8"),
        ({"CELERY_BROKER_URL": "${BROKER-redis://redis:6379/2}"}, {}, "", "redis://127.0.0.1:6379/2"),
        ({"CELERY_BROKER_URL": "redis://${REDIS_HOST:-redis}:6379/${DB:-4}"}, {}, "", "redis://127.0.0.1:6379/4"),
        ({"CELERY_BROKER_URL": "$BROKER"}, {"BROKER": "redis://redis:6379/9"}, "", "redis://127.0.0.1:6379/9"),
        (["CELERY_BROKER_URL=${BROKER:?set BROKER}"], {"BROKER": "redis://redis:6379/6"}, "", "redis://127.0.0.1:6379/6"),
        (["CELERY_BROKER_URL"], {"CELERY_BROKER_URL": "redis://redis:6379/5"}, "", "redis://127.0.0.1:6379/5"),
    ],
)  # fmt: skip
def test_celery_broker_through_variables(
    tmp_path: Path, environment: Any, env: dict[str, str], dotenv: str, url: str
) -> None:
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    doc = {
        "services": {
            "redis": {"image": "redis:7.2.5", "ports": ["127.0.0.1:6379:6379"]},
            "worker": {"image": "example/app:2.0", "command": "celery -A app worker",
                       "environment": environment, "depends_on": ["redis"]},
        }
    }  # fmt: skip
    services, notes = stack_of(load(tmp_path, doc, env=env), tmp_path)
    assert services["worker"]["url"] == url, notes


def test_discover_says_which_required_variables_compose_wants(tmp_path: Path) -> None:
    compose = load_compose(WILD / "bitnami.yml", env={})
    _, notes = stack_of(compose, tmp_path)
    assert (
        "${GRAFANA_PASSWORD} is required (set it): Compose refuses bitnami.yml until it is set"
        in notes
    )
    assert not load_compose(WILD / "bitnami.yml", env={"GRAFANA_PASSWORD": "x"}).unset_required


def test_a_broker_password_becomes_a_reference_in_the_password_field(tmp_path: Path) -> None:
    doc = {
        "services": {
            "redis": {"image": "redis:7.2.5", "ports": ["127.0.0.1:6379:6379"]},
            "worker": {"image": "example/app:2.0", "command": "celery -A app worker",
                       "environment": {"CELERY_BROKER_URL": "redis://:${REDIS_PASSWORD:-devpass}@redis:6379/1"}},
        }
    }  # fmt: skip
    services, notes = stack_of(load(tmp_path, doc, env={"REDIS_PASSWORD": "s3cret"}), tmp_path)
    text = yaml.safe_dump(services) + "\n".join(notes)
    assert "s3cret" not in text and "devpass" not in text
    assert services["worker"]["url"] == "redis://127.0.0.1:6379/1"
    assert services["worker"]["password"] == "${REDIS_PASSWORD}"


# --- odd but valid shapes: never a traceback ---------------------------------------------------

PORTS = [[9090], ["9090"], ["127.0.0.1:9090:9090/tcp"], [{"target": 9090, "published": "9090", "host_ip": "127.0.0.1"}],
         [{"target": 9090, "published": 9090, "protocol": "tcp", "mode": "host"}], ["[::1]:9090:9090"], ["9090-9091:9090-9091"],
         [{"target": "9090"}], ["0.0.0.0:19090:9090"], []]  # fmt: skip
ENVIRONMENTS = [{"A": None, "B": 1, "C": True, "D": 1.5}, ["A=1", "B", "C="], {"CELERY_BROKER_URL": None}, None, [],
                {"GF_SERVER_HTTP_PORT": 3000, "REDIS_ARGS": None}]  # fmt: skip
COMMANDS = ["redis-server --appendonly yes", ["--config.file=/etc/p.yml"], "", None, ["sh", "-c", "exec x"],
            "celery -A app worker -Q 'a b'", ["unbalanced", "'"], "sh -c 'unterminated"]  # fmt: skip
TESTS = [
    "wget -q -O- http://127.0.0.1:9090/-/ready",
    ["CMD", "true"],
    ["CMD-SHELL", "exit 0"],
    ["NONE"],
    None,
]
IMAGES = ["prom/prometheus:v2.53.0", "redis:7.2.5", "grafana/grafana:11.2.0", "hashicorp/consul:1.20.1",
          "otel/opentelemetry-collector-contrib:0.130.0", "grafana/tempo:2.7.2", "example/app:1.0",
          "busybox:1.36", "jaegertracing/jaeger:2.1.0", "arangodb:3.12.4", "bitnami/redis:7.2"]  # fmt: skip


def _odd_documents(count: int) -> list[dict[str, Any]]:
    rng = random.Random(20261125)  # fixed: the same shapes on every run
    docs = []
    for n in range(count):
        services: dict[str, Any] = {}
        for i in range(rng.randint(1, 4)):
            svc: dict[str, Any] = {"image": rng.choice(IMAGES)}
            for key, choices in (
                ("ports", PORTS),
                ("environment", ENVIRONMENTS),
                ("command", COMMANDS),
            ):
                value = rng.choice(choices)
                if value is not None:
                    svc[key] = value
            test = rng.choice(TESTS)
            if test is not None:
                svc["healthcheck"] = {
                    "test": test,
                    "interval": rng.choice(["5s", "1m30s", "500ms"]),
                }
            if rng.random() < 0.3:
                svc["network_mode"] = "host"
            if rng.random() < 0.3:
                svc["restart"] = rng.choice(["no", "always", "on-failure:3", "unless-stopped"])
            if rng.random() < 0.3:
                svc["expose"] = rng.choice([[9090], ["9091/tcp"], ["8000-8001"]])
            if i and rng.random() < 0.5:
                dep = f"s{rng.randrange(i)}"
                svc["depends_on"] = rng.choice([[dep], {dep: {"condition": "service_healthy"}},
                                                {dep: {"condition": "service_completed_successfully", "required": False}}])  # fmt: skip
            if rng.random() < 0.3:
                svc["volumes"] = rng.choice(
                    [["data:/data"], [{"type": "tmpfs", "target": "/prometheus"}], ["/anon"]]
                )
            services[f"s{i}"] = svc
        docs.append({"name": f"odd-{n}", "services": services, "volumes": {"data": None}})
    return docs


@pytest.mark.parametrize("doc", _odd_documents(40), ids=lambda d: str(d["name"]))
def test_odd_but_valid_shapes_lint_and_discover_without_a_traceback(
    tmp_path: Path, doc: dict[str, Any]
) -> None:
    compose = load(tmp_path, doc)
    report = lint(compose)
    assert report.to_text() and report.to_json()
    stack_of(compose, tmp_path)


@pytest.mark.parametrize(
    ("ports", "command", "environment", "test"),
    list(itertools.product(PORTS[:4], COMMANDS[:3], ENVIRONMENTS[:3], TESTS[:3])),
)
def test_every_shape_of_prometheus_lints_and_discovers(
    tmp_path: Path, ports: Any, command: Any, environment: Any, test: Any
) -> None:
    svc: dict[str, Any] = {"image": "prom/prometheus:v2.53.0", "ports": ports,
                           "healthcheck": {"test": test}}  # fmt: skip
    if command is not None:
        svc["command"] = command
    if environment is not None:
        svc["environment"] = environment
    compose = load(tmp_path, {"services": {"prom": svc}})
    lint(compose)
    services, notes = stack_of(compose, tmp_path)
    if any(p.published for p in compose.services["prom"].ports):
        assert services["prom"]["url"].endswith(":9090")
    else:  # an ephemeral host port: nothing to write down
        assert "prom" not in services and any("9090 is not published" in n for n in notes)
