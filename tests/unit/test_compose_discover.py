"""`stackprobe discover --compose`: kinds, URLs, ${VAR} credentials, depends_on, the compose file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stackprobe.catalog import known_kinds
from stackprobe.cli import _invoke
from stackprobe.compose.discover import discover
from stackprobe.compose.model import load_compose
from stackprobe.loader import load_stack

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "deploy" / "compose" / "docker-compose.yml"
EXPECTED_KINDS = {
    "consul": "consul",
    "redis": "redis",
    "worker": "celery",
    "arangodb": "arangodb",
    "tempo": "tempo",
    "otel-collector": "otel-collector",
    "prometheus": "prometheus",
    "grafana": "grafana",
    "compose": "compose",
}


def discovered(path: Path, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    result = discover(load_compose(path, env={}), path, out_dir)
    return result.stack, result.notes


def test_reference_stack_every_service_under_its_kind(tmp_path: Path) -> None:
    stack, notes = discovered(REFERENCE, REFERENCE.parent)
    services = stack["services"]
    assert {n: s["kind"] for n, s in services.items()} == EXPECTED_KINDS
    assert stack["stack"] == "stackprobe-reference"
    assert notes == [
        "${ARANGO_ROOT_PASSWORD} is required (export ARANGO_ROOT_PASSWORD first): "
        "Compose refuses docker-compose.yml until it is set",
        "${GF_SECURITY_ADMIN_PASSWORD} is required (export GF_SECURITY_ADMIN_PASSWORD first): "
        "Compose refuses docker-compose.yml until it is set",
        "toxiproxy: Toxiproxy (scratch) has no stackprobe kind; skipped",
    ]
    assert services["consul"] == {
        "kind": "consul",
        "url": "http://127.0.0.1:8500",
        "endpoints": {"dns": "127.0.0.1:8600"},
    }
    assert services["worker"]["url"] == "redis://127.0.0.1:6379/0"
    assert services["worker"]["endpoints"] == {"backend": "redis://127.0.0.1:6379/1"}
    assert services["worker"]["options"] == {"queue": "celery"}
    assert services["worker"]["depends_on"] == ["redis"]
    assert services["otel-collector"]["endpoints"]["health"] == "http://127.0.0.1:13133/"
    assert services["grafana"]["depends_on"] == ["prometheus", "tempo"]
    assert services["compose"]["url"] == "docker-compose.yml"


def test_credentials_are_references_never_values(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "grafana": {
                        "image": "grafana/grafana:11.2.0",
                        "ports": ["3000:3000"],
                        "environment": {"GF_SECURITY_ADMIN_PASSWORD": "hunter2-literal"},
                    },
                    "db": {
                        "image": "arangodb:3.12.4",
                        "ports": ["127.0.0.1:18529:8529"],
                        "environment": ["ARANGO_ROOT_PASSWORD=${DB_PASS:?set it}"],
                    },
                    "consul": {
                        "image": "hashicorp/consul:1.20.1",
                        "ports": ["8500:8500"],
                        "environment": {"CONSUL_HTTP_TOKEN": "${CONSUL_TOKEN:-default-token}"},
                    },
                }
            }
        )
    )
    stack, _ = discovered(path, tmp_path)
    text = yaml.safe_dump(stack)
    assert "hunter2" not in text and "default-token" not in text
    assert stack["services"]["grafana"]["password"] == "${GF_SECURITY_ADMIN_PASSWORD}"
    assert stack["services"]["grafana"]["username"] == "admin"
    assert stack["services"]["db"] == {
        "kind": "arangodb",
        "url": "http://127.0.0.1:18529",
        "username": "root",
        "password": "${DB_PASS}",
    }
    assert stack["services"]["consul"]["token"] == "${CONSUL_TOKEN}"


def test_valkey_jaeger_custom_celery_and_unpublished_ports(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "cache": {"image": "valkey/valkey:8.0", "ports": ["127.0.0.1:6380:6379"]},
                    "tasks": {
                        "image": "example/app:1.0",
                        "command": "celery -A app worker -Q jobs,mail",
                        "environment": {"CELERY_BROKER_URL": "redis://cache:6379/2"},
                        "depends_on": ["cache"],
                    },
                    "traces": {
                        "image": "jaegertracing/jaeger:2.1.0",
                        "ports": ["127.0.0.1:16686:16686", "127.0.0.1:4317:4317"],
                    },
                    "hidden": {"image": "prom/prometheus:v2.42.0"},
                    "web": {"image": "nginx:1.27"},
                }
            }
        )
    )
    stack, notes = discovered(path, tmp_path)
    services = stack["services"]
    assert services["cache"] == {"kind": "redis", "url": "redis://127.0.0.1:6380/0"}
    assert services["tasks"]["url"] == "redis://127.0.0.1:6380/2"
    assert services["tasks"]["options"] == {"queue": "jobs"}
    assert services["traces"]["endpoints"] == {"otlp_grpc": "127.0.0.1:4317"}
    assert "hidden" not in services and "web" not in services
    assert any("hidden: prometheus: HTTP API port 9090 is not published" in n for n in notes)
    assert any(n.startswith("web: image nginx:1.27 has no stackprobe kind") for n in notes)


def test_cli_discover_writes_a_file_and_notes_go_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "stackprobe.yaml"
    out.parent.mkdir()
    assert _invoke(["discover", "--compose", str(REFERENCE), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "toxiproxy" in captured.err and f"config check -c {out}" in captured.err
    doc = yaml.safe_load(out.read_text())
    assert (out.parent / doc["services"]["compose"]["url"]).resolve() == REFERENCE.resolve()
    assert _invoke(["discover", "--compose", str(tmp_path / "nope.yml")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.skipif(
    not {"grafana", "arangodb"} <= set(known_kinds()),
    reason="waits for the grafana and arangodb kinds (services/grafana.py, services/arangodb.py)",
)
def test_discovered_reference_stack_passes_config_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stackprobe.yaml"
    assert _invoke(["discover", "--compose", str(REFERENCE), "-o", str(out)]) == 0
    stack = load_stack(out, env={})  # secrets unset: warnings, not errors
    assert {n: s.kind for n, s in stack.services.items()} == EXPECTED_KINDS
    assert _invoke(["config", "check", "-c", str(out)]) == 0
    assert "ok: stack 'stackprobe-reference'" in capsys.readouterr().out


@pytest.mark.skipif(
    not {"grafana", "arangodb"} <= set(known_kinds()),
    reason="waits for the grafana and arangodb kinds (services/grafana.py, services/arangodb.py)",
)
def test_shipped_reference_stack_file_passes_config_check() -> None:
    stack = load_stack(REPO / "deploy" / "compose" / "stackprobe.yaml", env={})
    assert {s.kind for s in stack.services.values()} == set(EXPECTED_KINDS.values())


def test_shipped_stack_file_names_the_compose_kinds_discover_finds() -> None:
    shipped = yaml.safe_load((REPO / "deploy" / "compose" / "stackprobe.yaml").read_text())
    stack, _ = discovered(REFERENCE, REFERENCE.parent)
    assert {n: s["kind"] for n, s in shipped["services"].items()} == {
        n: s["kind"] for n, s in stack["services"].items()
    }


def test_a_password_in_a_url_to_a_host_outside_the_stack_becomes_a_reference(
    tmp_path: Path,
) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "worker": {
                        "image": "myapp/worker:1.2",
                        "command": ["celery", "-A", "app", "worker"],
                        "environment": {
                            "CELERY_BROKER_URL": "redis://:hunter2@redis.example.com:6379/0"
                        },
                    }
                }
            }
        )
    )
    stack, notes = discovered(path, tmp_path)
    text = yaml.safe_dump(stack) + "\n".join(notes)
    assert "hunter2" not in text
    worker = stack["services"]["worker"]
    assert worker["url"] == "redis://redis.example.com:6379/0"
    assert worker["password"] == "${REDIS_EXAMPLE_COM_PASSWORD}"  # a secret field: celery adds it
