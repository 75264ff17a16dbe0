"""`stackprobe compose lint`: every rule catches its broken variant, naming service and key.

Each test starts from a small healthy stack, breaks one thing, and expects exactly the rule
for it (short and long Compose syntax alike). The reference stack must lint clean.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackprobe.cli import _invoke
from stackprobe.compose.lint import RULES, lint
from stackprobe.compose.model import ComposeError, load_compose

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "deploy" / "compose" / "docker-compose.yml"

GOOD: dict[str, Any] = {
    "services": {
        "cache": {
            "image": "redis:7.2.5",
            "ports": ["127.0.0.1:6379:6379"],
            "volumes": ["cache-data:/data"],
            "healthcheck": {
                "test": ["CMD", "redis-cli", "ping"],
                "interval": "5s",
                "timeout": "3s",
                "retries": 5,
            },
        },
        "app": {
            "image": "example/app:1.0",
            "depends_on": {"cache": {"condition": "service_healthy"}},
            "healthcheck": {"test": "wget -q -O /dev/null http://127.0.0.1:8080/health"},
            "environment": {"API_TOKEN": "${API_TOKEN}", "MODE": "prod"},
        },
    },
    "volumes": {"cache-data": {}},
}


def write(tmp_path: Path, doc: dict[str, Any] | str) -> Path:
    path = tmp_path / "docker-compose.yml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def findings(tmp_path: Path, doc: dict[str, Any] | str) -> list[tuple[str, str | None, str]]:
    report = lint(load_compose(write(tmp_path, doc), env={}))
    return [(f.rule, f.service, f.key) for f in report.findings]


def broken(**changes: Any) -> dict[str, Any]:
    """GOOD with services.<name> keys replaced: broken(cache={"ports": [...]})."""
    doc = copy.deepcopy(GOOD)
    for name, svc in changes.items():
        if name == "top":
            doc.update(svc)
            continue
        doc["services"].setdefault(name, {}).update(svc)
        for key, value in svc.items():
            if value is None:
                del doc["services"][name][key]
    return doc


def test_the_good_stack_is_clean(tmp_path: Path) -> None:
    assert findings(tmp_path, GOOD) == []


def test_the_reference_stack_has_no_error_findings() -> None:
    report = lint(load_compose(REFERENCE, env={}))
    assert report.errors == [], report.to_text()
    assert report.startup_order is not None
    assert report.startup_order[-1] == ["grafana"]


# --- healthchecks -------------------------------------------------------------------------


def test_missing_healthcheck(tmp_path: Path) -> None:
    assert findings(tmp_path, broken(cache={"healthcheck": None}))[0] == (
        "healthcheck-missing",
        "cache",
        "healthcheck",
    )


def test_missing_healthcheck_fix_names_a_test_for_the_image(tmp_path: Path) -> None:
    report = lint(load_compose(write(tmp_path, broken(cache={"healthcheck": None})), env={}))
    assert "redis-cli ping" in report.findings[0].fix


@pytest.mark.parametrize(
    "healthcheck", [{"test": ["NONE"]}, {"disable": True, "test": ["CMD", "true"]}]
)
def test_disabled_healthcheck(tmp_path: Path, healthcheck: dict[str, Any]) -> None:
    rule, service, key = findings(tmp_path, broken(cache={"healthcheck": healthcheck}))[0]
    assert (rule, service) == ("healthcheck-missing", "cache") and key.startswith("healthcheck.")


def test_one_shot_jobs_need_no_healthcheck(tmp_path: Path) -> None:
    doc = broken(
        migrate={"image": "example/migrate:1.0"},
        app={"depends_on": {"migrate": {"condition": "service_completed_successfully"}}},
    )
    assert findings(tmp_path, doc) == []


def test_external_healthcheck_accepted_with_a_reason(tmp_path: Path) -> None:
    doc = broken(
        tempo={
            "image": "grafana/tempo:2.7.2",
            "volumes": ["tempo-data:/var/tempo"],
            "x-stackprobe": {"healthcheck": "external", "reason": "distroless"},
        },
        top={"volumes": {"cache-data": {}, "tempo-data": {}}},
    )
    assert findings(tmp_path, doc) == []
    doc["services"]["tempo"]["x-stackprobe"] = {"healthcheck": "external"}
    assert findings(tmp_path, doc) == [
        ("healthcheck-external-reason", "tempo", "x-stackprobe.reason")
    ]


def test_shell_healthcheck_in_a_distroless_image(tmp_path: Path) -> None:
    doc = broken(
        tempo={
            "image": "grafana/tempo:2.7.2",
            "volumes": ["tempo-data:/var/tempo"],
            "healthcheck": {"test": "wget -q -O- http://127.0.0.1:3200/ready"},
        },
        top={"volumes": {"cache-data": {}, "tempo-data": {}}},
    )
    assert findings(tmp_path, doc) == [("healthcheck-tool", "tempo", "healthcheck.test")]


@pytest.mark.parametrize(
    "test",
    [
        ["CMD", "curl", "-f", "http://127.0.0.1:9090/-/ready"],  # no curl in prom/prometheus
        ["CMD-SHELL", "curl -fs http://127.0.0.1:9090/-/ready || exit 1"],
    ],
)
def test_tool_missing_from_the_image(tmp_path: Path, test: list[str]) -> None:
    doc = broken(
        metrics={
            "image": "prom/prometheus:v2.42.0",
            "volumes": ["metrics-data:/prometheus"],
            "healthcheck": {"test": test},
        },
        top={"volumes": {"cache-data": {}, "metrics-data": {}}},
    )
    assert findings(tmp_path, doc) == [("healthcheck-tool", "metrics", "healthcheck.test")]


def test_collector_binary_is_fine_but_curl_is_not(tmp_path: Path) -> None:
    doc = broken(
        otel={
            "image": "otel/opentelemetry-collector-contrib:0.130.0",
            "healthcheck": {"test": ["CMD", "/otelcol-contrib", "--version"]},
        }
    )
    assert findings(tmp_path, doc) == []
    doc["services"]["otel"]["healthcheck"]["test"] = ["CMD", "curl", "-f", "http://x:13133/"]
    assert findings(tmp_path, doc) == [("healthcheck-tool", "otel", "healthcheck.test")]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"interval": "500ms", "timeout": "200ms"}, "healthcheck.interval"),
        ({"interval": "10m"}, "healthcheck.interval"),
        ({"interval": "5s", "timeout": "10s"}, "healthcheck.timeout"),
        ({"retries": 0}, "healthcheck.retries"),
        ({"retries": 50}, "healthcheck.retries"),
        ({"start_period": "1h"}, "healthcheck.start_period"),
    ],
)
def test_insane_healthcheck_timing_is_a_warning(
    tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    doc = copy.deepcopy(GOOD)
    doc["services"]["cache"]["healthcheck"].update(change)
    report = lint(load_compose(write(tmp_path, doc), env={}))
    assert [(f.rule, f.service, f.key, f.severity) for f in report.findings] == [
        ("healthcheck-timing", "cache", key, "warning")
    ]
    assert report.exit_code == 0


# --- startup order ------------------------------------------------------------------------


def test_depends_on_unknown_service(tmp_path: Path) -> None:
    assert findings(tmp_path, broken(app={"depends_on": ["cache", "queue"]})) == [
        ("depends-on-start-only", "app", "depends_on.cache.condition"),
        ("depends-on-unknown", "app", "depends_on.queue"),
    ]


def test_depends_on_cycle(tmp_path: Path) -> None:
    doc = broken(cache={"depends_on": {"app": {"condition": "service_healthy"}}})
    report = lint(load_compose(write(tmp_path, doc), env={}))
    cycle = [f for f in report.findings if f.rule == "depends-on-cycle"]
    assert len(cycle) == 1 and "cache -> app -> cache" in cycle[0].message
    assert report.startup_order is None and "cycle" in report.to_text()


def test_short_depends_on_on_a_stateful_service_waits_only_for_start(tmp_path: Path) -> None:
    assert findings(tmp_path, broken(app={"depends_on": ["cache"]})) == [
        ("depends-on-start-only", "app", "depends_on.cache.condition")
    ]


def test_long_form_service_started_on_a_stateful_service(tmp_path: Path) -> None:
    doc = broken(app={"depends_on": {"cache": {"condition": "service_started"}}})
    assert findings(tmp_path, doc) == [
        ("depends-on-start-only", "app", "depends_on.cache.condition")
    ]


def test_waiting_for_healthy_on_a_service_without_healthcheck(tmp_path: Path) -> None:
    doc = broken(
        worker={"image": "example/worker:1.0", "healthcheck": {"test": ["CMD", "true"]}},
        app={"depends_on": {"worker": {"condition": "service_healthy"}}},
    )
    del doc["services"]["worker"]["healthcheck"]
    assert ("depends-on-no-healthcheck", "app", "depends_on.worker.condition") in findings(
        tmp_path, doc
    )


def test_waiting_for_healthy_on_an_external_service(tmp_path: Path) -> None:
    doc = broken(
        otel={
            "image": "otel/opentelemetry-collector-contrib:0.130.0",
            "x-stackprobe": {"healthcheck": "external", "reason": "scratch"},
        },
        app={"depends_on": {"otel": {"condition": "service_healthy"}}},
    )
    report = lint(load_compose(write(tmp_path, doc), env={}))
    [finding] = report.findings
    assert finding.rule == "depends-on-no-healthcheck" and "service_started" in finding.fix


def test_startup_and_shutdown_order(tmp_path: Path) -> None:
    doc = broken(
        web={"image": "example/web:1.0", "depends_on": {"app": {"condition": "service_healthy"}},
             "healthcheck": {"test": ["CMD", "true"]}},
    )  # fmt: skip
    report = lint(load_compose(write(tmp_path, doc), env={}))
    assert report.startup_order == [["cache"], ["app"], ["web"]]
    assert report.shutdown_order == [["web"], ["app"], ["cache"]]
    assert "startup order: cache -> app -> web" in report.to_text()


# --- networking ---------------------------------------------------------------------------


def test_network_mode_with_networks(tmp_path: Path) -> None:
    doc = broken(app={"network_mode": "host", "networks": ["back"]}, top={"networks": {"back": {}}})
    assert ("network-mode-conflict", "app", "network_mode") in findings(tmp_path, doc)


def test_undeclared_network(tmp_path: Path) -> None:
    doc = broken(app={"networks": {"back": {"aliases": ["api"]}}})
    assert ("network-undefined", "app", "networks.back") in findings(tmp_path, doc)


def test_dependents_share_no_network(tmp_path: Path) -> None:
    doc = broken(
        cache={"networks": ["data"]},
        app={"networks": ["front"]},
        top={"networks": {"data": {}, "front": {}}},
    )
    assert findings(tmp_path, doc) == [("network-unshared", "app", "depends_on.cache")]


def test_default_network_is_shared_and_service_mode_shares_the_namespace(tmp_path: Path) -> None:
    doc = broken(
        cache={"networks": ["default"]},
        sidecar={"image": "example/sidecar:1.0", "network_mode": "service:app",
                 "depends_on": {"app": {"condition": "service_healthy"}},
                 "healthcheck": {"test": ["CMD", "true"]}},
    )  # fmt: skip
    assert findings(tmp_path, doc) == []


@pytest.mark.parametrize(
    "ports",
    [
        ["127.0.0.1:6379:6379"],  # short syntax, same address
        ["6379:6379"],  # all interfaces overlap 127.0.0.1
        [{"target": 6379, "published": "6379", "host_ip": "127.0.0.1"}],  # long syntax
        ["127.0.0.1:6370-6380:6370-6380"],  # a range containing it
    ],
)
def test_port_published_twice(tmp_path: Path, ports: list[Any]) -> None:
    doc = broken(app={"ports": ports})
    found = findings(tmp_path, doc)
    assert ("port-conflict", "app", "ports[0]") in found


def test_same_port_on_different_addresses_or_protocols_is_fine(tmp_path: Path) -> None:
    doc = broken(app={"ports": ["127.0.0.2:6379:6379", "127.0.0.1:6379:6379/udp"]})
    assert findings(tmp_path, doc) == []


# --- volumes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("volumes", "seen"),
    [
        (None, "not mounted"),
        (["/data"], "anonymous volume"),
        ([{"type": "volume", "target": "/data"}], "anonymous volume"),
        ([{"type": "tmpfs", "target": "/data"}], "tmpfs mount"),
    ],
)
def test_stateful_data_off_a_named_volume(
    tmp_path: Path, volumes: list[Any] | None, seen: str
) -> None:
    (tmp_path / "data").mkdir()
    report = lint(load_compose(write(tmp_path, broken(cache={"volumes": volumes})), env={}))
    [finding] = report.findings
    assert (finding.rule, finding.service) == ("data-volume", "cache")
    assert (
        finding.key.startswith("volumes") and seen in finding.message and "/data" in finding.message
    )


def test_named_volume_in_long_syntax_is_fine(tmp_path: Path) -> None:
    doc = broken(cache={"volumes": [{"type": "volume", "source": "cache-data", "target": "/data"}]})
    assert findings(tmp_path, doc) == []


def test_undeclared_named_volume(tmp_path: Path) -> None:
    doc = broken(top={"volumes": {}})
    assert findings(tmp_path, doc) == [("volume-undefined", "cache", "volumes[0]")]


@pytest.mark.parametrize(
    "mount",
    ["./conf/app.yml:/etc/app.yml:ro", {"type": "bind", "source": "./conf", "target": "/etc/app"}],
)
def test_bind_source_missing(tmp_path: Path, mount: Any) -> None:
    assert findings(tmp_path, broken(app={"volumes": [mount]})) == [
        ("bind-source-missing", "app", "volumes[0]")
    ]
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.yml").write_text("x: 1\n")
    assert findings(tmp_path, broken(app={"volumes": [mount]})) == []


def test_build_context_missing(tmp_path: Path) -> None:
    assert findings(tmp_path, broken(app={"build": "./app"})) == [
        ("build-context-missing", "app", "build")
    ]


# --- outside coverage ---------------------------------------------------------------------


@pytest.mark.parametrize("image", ["redis", "redis:latest", "docker.io/library/redis"])
def test_unpinned_image(tmp_path: Path, image: str) -> None:
    report = lint(load_compose(write(tmp_path, broken(cache={"image": image})), env={}))
    assert [(f.rule, f.key, f.severity, f.capability) for f in report.findings] == [
        ("image-unpinned", "image", "warning", None)
    ]


def test_digest_pinned_image_is_fine(tmp_path: Path) -> None:
    doc = broken(cache={"image": "redis@sha256:" + "a" * 64})
    assert findings(tmp_path, doc) == []


@pytest.mark.parametrize(
    "environment",
    [
        {"API_TOKEN": "s3cr3t-value"},
        ["API_TOKEN=s3cr3t-value"],
        {"API_TOKEN": "${API_TOKEN:-s3cr3t-value}"},
    ],
)
def test_plain_secret(tmp_path: Path, environment: Any) -> None:
    report = lint(load_compose(write(tmp_path, broken(app={"environment": environment})), env={}))
    [finding] = report.findings
    assert (finding.rule, finding.service, finding.key) == (
        "plain-secret",
        "app",
        "environment.API_TOKEN",
    )
    assert "s3cr3t" not in finding.line()  # the value is never printed


@pytest.mark.parametrize(
    "environment",
    [
        {"API_TOKEN": "${API_TOKEN}"},
        {"API_TOKEN": "${API_TOKEN:?set it}"},
        ["API_TOKEN"],  # taken from the host environment
        {"GF_SECURITY_ADMIN_PASSWORD__FILE": "/run/secrets/grafana"},
        {"ARANGO_RANDOM_ROOT_PASSWORD": "1"},
        {"PASSWORD_MIN_LENGTH": "12"},
    ],
)
def test_references_and_flags_are_not_secrets(tmp_path: Path, environment: Any) -> None:
    assert findings(tmp_path, broken(app={"environment": environment})) == []


def test_privileged(tmp_path: Path) -> None:
    assert findings(tmp_path, broken(app={"privileged": True})) == [
        ("privileged", "app", "privileged")
    ]


@pytest.mark.parametrize(
    "ports", [["6379:6379"], ["0.0.0.0:6379:6379"], [{"target": 6379, "published": 6379}], ["6379"]]
)
def test_admin_port_on_all_interfaces(tmp_path: Path, ports: list[Any]) -> None:
    assert findings(tmp_path, broken(cache={"ports": ports})) == [
        ("admin-port-exposed", "cache", "ports[0]")
    ]


def test_non_admin_port_on_all_interfaces_is_fine(tmp_path: Path) -> None:
    assert findings(tmp_path, broken(app={"ports": ["8080:8080"]})) == []


def test_x_stackprobe_ignore_acknowledges_a_finding(tmp_path: Path) -> None:
    doc = broken(app={"privileged": True, "x-stackprobe": {"ignore": ["privileged"]}})
    report = lint(load_compose(write(tmp_path, doc), env={}))
    assert report.findings == [] and report.ignored == 1


def test_every_rule_has_a_severity_and_a_fix() -> None:
    for rule in RULES.values():
        assert rule.severity in ("error", "warning") and rule.fix and rule.summary
        assert rule.capability in (None, "healthchecks", "startup-order", "networking", "volumes")


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ("services: [\n", "invalid YAML"),
        ("services:\n  a:\n    image: x:1\n    healthchek: {}\n", "services.a.healthchek: unknown service key (did you mean 'healthcheck'?)"),
        ("services:\n  a:\n    image: x:1\n    ports: ['80:http']\n", "services.a.ports[0]"),
        ("services:\n  a:\n    image: x:1\n    ports: ['1:2:3:4:99999']\n", "services.a.ports[0]"),
        ("services:\n  a:\n    image: x:1\n    healthcheck: {test: [CMD, x], interval: 1 minute}\n", "services.a.healthcheck.interval"),
        ("services:\n  a:\n    image: x:1\n    healthcheck: {test: [RUN, x]}\n", "services.a.healthcheck.test"),
        ("services:\n  a:\n    image: x:1\n    depends_on: {b: {condition: service_ready}}\n", "services.a.depends_on.b.condition"),
        ("services:\n  a:\n    command: x\n", "services.a: neither `image` nor `build`"),
        ("services:\n  a:\n    image: x:1\n    volumes: ['data:relative']\n", "services.a.volumes[0]"),
        ("services:\n  a:\n    image: x:1\n    x-stackprobe: {healthcheck: maybe}\n", "services.a.x-stackprobe.healthcheck"),
        ("services:\n  a:\n    image: x:1\n  a:\n    image: y:1\n", "duplicate key"),
        ("version: '3'\n", "services: no services defined"),
    ],
)  # fmt: skip
def test_malformed_files_are_one_clear_error(tmp_path: Path, doc: str, where: str) -> None:
    with pytest.raises(ComposeError) as caught:
        load_compose(write(tmp_path, doc), env={})
    assert where in str(caught.value) and str(write(tmp_path, doc)) in str(caught.value)


def test_long_and_short_syntax_parse_alike(tmp_path: Path) -> None:
    short = """
services:
  a:
    image: x:1
    ports: ["127.0.0.1:8080:80/udp", "[::1]:9000:9000", "3000-3001:3000-3001", 53]
    volumes: ["named:/data:ro", "./conf:/conf", "/anon"]
    depends_on: [b]
    environment: ["A=1", "B", "C=${C:-x}"]
    healthcheck: {test: "exit 0", interval: 1m30s, timeout: 500ms}
  b: {image: "x:1"}
"""
    compose = load_compose(write(tmp_path, short), env={})
    a = compose.services["a"]
    assert [(p.host_ip, p.published, p.target, p.protocol) for p in a.ports] == [
        ("127.0.0.1", (8080, 8080), (80, 80), "udp"),
        ("::1", (9000, 9000), (9000, 9000), "tcp"),
        (None, (3000, 3001), (3000, 3001), "tcp"),
        (None, None, (53, 53), "tcp"),
    ]
    assert [(m.type, m.source, m.target, m.read_only) for m in a.volumes] == [
        ("volume", "named", "/data", True),
        ("bind", "./conf", "/conf", False),
        ("volume", None, "/anon", False),
    ]
    assert a.depends_on["b"].condition == "service_started"
    assert a.environment == {"A": "1", "B": None, "C": "x"}
    assert a.environment_raw["C"] == "${C:-x}"
    assert a.healthcheck is not None and a.healthcheck.test == ("CMD-SHELL", "exit 0")
    assert (a.healthcheck.interval_s, a.healthcheck.timeout_s) == (90.0, 0.5)


def test_interpolation_uses_env_and_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=7000\n")
    doc = "services:\n  a:\n    image: x:${TAG:-1}\n    ports: ['127.0.0.1:${PORT}:80']\n"
    compose = load_compose(write(tmp_path, doc), env={"TAG": "2"})
    assert compose.services["a"].image == "x:2"
    assert compose.services["a"].ports[0].published == (7000, 7000)


# --- the CLI verb -------------------------------------------------------------------------


def test_cli_lint_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _invoke(["compose", "lint", str(REFERENCE)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    path = write(tmp_path, broken(app={"privileged": True}))
    assert _invoke(["compose", "lint", str(path), "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["errors"] == 1 and doc["findings"][0]["rule"] == "privileged"
    assert doc["startup_order"] == [["cache"], ["app"]]
    warn = write(tmp_path, broken(cache={"image": "redis"}))
    assert _invoke(["compose", "lint", str(warn)]) == 0
    out = capsys.readouterr().out
    assert f"{warn}: services.cache.image: warning [image-unpinned]" in out


def test_cli_lint_bad_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _invoke(["compose", "lint", str(tmp_path / "missing.yml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err
    path = write(tmp_path, "services:\n  a:\n    image: x:1\n    ports: ['80:http']\n")
    assert _invoke(["compose", "lint", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "services.a.ports[0]" in err and "Traceback" not in err
