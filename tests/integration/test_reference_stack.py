"""The reference Compose stack's configs are accepted by the real binaries that load them.

promtool 2.42 and 3.x (check config, check rules, test rules; each test runs on both), the OpenTelemetry Collector built from
deploy/otelcol/builder.yaml (validate), and consul 1.8.7 (validate) run here on the shipped
files; each validation is also shown to fail on a broken copy. Grafana cannot run here: its
provisioning is checked for consistency (datasource uids, dashboards, alert rules, contact
point), and every PromQL expression in its dashboards and alert rules is parsed by promtool.
Rule 11: in CI a missing validator fails the test; elsewhere it skips with the install command.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stackprobe.compose.model import load_compose
from tests.conftest import need_binary
from tests.integration.prometheus_instance import PrometheusBuild
from tests.integration.test_observability import need_file

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "compose"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
OTELCOL = Path.home() / ".cache" / "stackprobe" / "bin" / "otelcol-stackprobe"
STACKPROBE_METRICS = (
    "stackprobe_service_up",
    "stackprobe_check_status",
    "stackprobe_check_duration_seconds",
    "stackprobe_probe_latency_seconds",
    "stackprobe_coverage_ratio",
)


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


def prometheus_copy(tmp_path: Path) -> Path:
    """The prometheus/ dir as the container sees it, with the token file Compose mounts."""
    target = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, target)
    (target / "secrets").mkdir()
    (target / "secrets" / "stackprobe-token").write_text("test-token\n")
    return target


# --- promtool -----------------------------------------------------------------------------


def test_promtool_check_config(tmp_path: Path, prometheus_build: PrometheusBuild) -> None:
    promtool = prometheus_build.paths()[1]
    config = prometheus_copy(tmp_path) / "prometheus.yml"
    result = run(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_promtool_check_config_rejects_a_broken_copy(
    tmp_path: Path, prometheus_build: PrometheusBuild
) -> None:
    promtool = prometheus_build.paths()[1]
    config = prometheus_copy(tmp_path) / "prometheus.yml"
    config.write_text(config.read_text().replace("scrape_interval: 15s", "scrape_interval: soon"))
    assert run(promtool, "check", "config", str(config)).returncode != 0


def test_promtool_check_rules(prometheus_build: PrometheusBuild) -> None:
    promtool = prometheus_build.paths()[1]
    rules = sorted((PROMETHEUS / "rules").glob("*.yml"))
    assert [r.name for r in rules] == ["stack.yml", "stackprobe.yml"]
    result = run(promtool, "check", "rules", *map(str, rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(prometheus_build: PrometheusBuild) -> None:
    promtool = prometheus_build.paths()[1]
    tests = sorted((PROMETHEUS / "tests").glob("*_test.yml"))
    result = run(promtool, "test", "rules", *map(str, tests), cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests) == 2


def test_promtool_test_rules_catches_a_changed_alert(
    tmp_path: Path, prometheus_build: PrometheusBuild
) -> None:
    """The unit tests can fail: a threshold changed in the rules breaks them."""
    promtool = prometheus_build.paths()[1]
    copy = prometheus_copy(tmp_path)
    rules = copy / "rules" / "stackprobe.yml"
    rules.write_text(
        rules.read_text().replace("stackprobe_service_up == 0", "stackprobe_service_up == 2")
    )
    result = run(promtool, "test", "rules", "tests/stackprobe_test.yml", cwd=copy)
    assert result.returncode != 0 and "StackprobeServiceDown" in result.stdout + result.stderr


def test_every_stackprobe_metric_has_an_alert_or_a_recording_rule() -> None:
    text = (PROMETHEUS / "rules" / "stackprobe.yml").read_text()
    for metric in STACKPROBE_METRICS:
        if metric != "stackprobe_check_duration_seconds":  # a dashboard metric, not an alert
            assert metric in text, metric


# --- the collector ------------------------------------------------------------------------


def test_otelcol_validate_accepts_the_reference_collector_config() -> None:
    need_file(OTELCOL, "scripts/install-services otelcol")
    result = run(str(OTELCOL), "validate", f"--config=file:{DEPLOY / 'otelcol' / 'config.yaml'}")
    assert result.returncode == 0, result.stderr


def test_otelcol_validate_rejects_a_broken_copy(tmp_path: Path) -> None:
    need_file(OTELCOL, "scripts/install-services otelcol")
    doc = yaml.safe_load((DEPLOY / "otelcol" / "config.yaml").read_text())
    doc["service"]["pipelines"]["traces"]["exporters"].append("otlp/nowhere")
    broken = tmp_path / "config.yaml"
    broken.write_text(yaml.safe_dump(doc))
    result = run(str(OTELCOL), "validate", f"--config=file:{broken}")
    assert result.returncode != 0 and "otlp/nowhere" in result.stderr


def test_collector_pipeline_is_traces_to_tempo_and_span_metrics_to_prometheus() -> None:
    doc = yaml.safe_load((DEPLOY / "otelcol" / "config.yaml").read_text())
    pipelines = doc["service"]["pipelines"]
    assert doc["exporters"]["otlp/tempo"]["endpoint"] == "tempo:4317"
    assert set(pipelines["traces"]["exporters"]) == {"otlp/tempo", "spanmetrics"}
    assert "spanmetrics" in pipelines["metrics"]["receivers"]
    assert doc["connectors"]["spanmetrics"]["exemplars"]["enabled"] is True
    assert doc["exporters"]["prometheus"]["enable_open_metrics"] is True
    # in a container everything the other services reach binds 0.0.0.0
    assert doc["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].startswith("0.0.0.0:")
    assert doc["extensions"]["health_check"]["endpoint"].startswith("0.0.0.0:")


# --- consul -------------------------------------------------------------------------------


def test_consul_validate_accepts_the_reference_config() -> None:
    need_binary("consul", "scripts/install-services consul")
    result = run("consul", "validate", str(DEPLOY / "consul"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration is valid" in result.stdout


def test_consul_validate_rejects_a_broken_copy(tmp_path: Path) -> None:
    need_binary("consul", "scripts/install-services consul")
    shutil.copytree(DEPLOY / "consul", tmp_path / "consul")
    config = tmp_path / "consul" / "server.hcl"
    config.write_text(config.read_text() + "ui_config { enabled = true }\nnot_a_key = 1\n")
    assert run("consul", "validate", str(tmp_path / "consul")).returncode != 0


# --- tempo --------------------------------------------------------------------------------


def test_tempo_config_binds_otlp_on_all_interfaces_and_sets_retention() -> None:
    doc = yaml.safe_load((DEPLOY / "tempo" / "tempo.yaml").read_text())
    protocols = doc["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    retention = doc["compactor"]["compaction"]["block_retention"]
    stack = yaml.safe_load((DEPLOY / "stackprobe.yaml").read_text())
    assert stack["services"]["tempo"]["expectations"]["retention"] == retention


# --- grafana ------------------------------------------------------------------------------


def grafana_yaml(*parts: str) -> Any:
    return yaml.safe_load(GRAFANA.joinpath("provisioning", *parts).read_text())


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def datasource_uids() -> dict[str, str]:
    return {
        d["uid"]: d["type"] for d in grafana_yaml("datasources", "datasources.yml")["datasources"]
    }


def test_datasources_have_fixed_uids_and_point_at_compose_services() -> None:
    doc = grafana_yaml("datasources", "datasources.yml")
    assert doc["apiVersion"] == 1
    assert datasource_uids() == {"prometheus": "prometheus", "tempo": "tempo"}
    compose = load_compose(DEPLOY / "docker-compose.yml", env={})
    for ds in doc["datasources"]:
        host, _port = re.match(r"http://([^:/]+):(\d+)", ds["url"]).groups()  # type: ignore[union-attr]
        assert host in compose.services, ds["url"]
    prom = next(d for d in doc["datasources"] if d["uid"] == "prometheus")
    assert prom["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "tempo"


def test_dashboards_use_only_provisioned_datasources() -> None:
    uids = datasource_uids()
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for ref in [panel.get("datasource"), *(t.get("datasource") for t in panel["targets"])]:
                assert ref is not None and uids.get(ref["uid"]) == ref["type"], (
                    name,
                    panel["title"],
                )


def test_infrastructure_health_dashboard_covers_stackprobe_metrics() -> None:
    board = dashboards()["infrastructure-health.json"]
    assert board["title"] == "Infrastructure Health" and board["uid"]
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in STACKPROBE_METRICS:
        assert metric in exprs, metric
    provider = grafana_yaml("dashboards", "dashboards.yml")["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def promql_expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboards and Grafana alert rules, Grafana variables
    replaced by values (as Grafana does before sending the query)."""
    found: dict[str, str] = {}
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                if "expr" in target:
                    found[f"{name}: {panel['title']} {target['refId']}"] = target["expr"]
    for group in grafana_yaml("alerting", "alert-rules.yml")["groups"]:
        for rule in group["rules"]:
            for query in rule["data"]:
                if "expr" in query["model"]:
                    found[f"alert {rule['uid']}"] = query["model"]["expr"]
    replacements = {"$__rate_interval": "1m", "$__interval": "1m", "$service": ".*"}
    for key, expr in found.items():
        for var, value in replacements.items():
            expr = expr.replace(var, value)
        found[key] = expr
    return found


def test_dashboard_and_alert_queries_are_valid_promql(
    tmp_path: Path, prometheus_build: PrometheusBuild
) -> None:
    """promtool parses each expression (as a recording rule): a typo fails here, not in Grafana."""
    promtool = prometheus_build.paths()[1]
    exprs = promql_expressions()
    assert len(exprs) >= 15
    rules = {
        "groups": [
            {"name": "grafana", "rules": [{"record": f"grafana:query_{i}", "expr": e} for i, e in enumerate(exprs.values())]}
        ]
    }  # fmt: skip
    path = tmp_path / "grafana-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x", "expr": "sum(("}]}]})
    )
    assert run(promtool, "check", "rules", str(path)).returncode != 0


def test_alert_rules_use_known_datasources_and_a_contact_point_routes_them() -> None:
    uids = {*datasource_uids(), "__expr__"}
    groups = grafana_yaml("alerting", "alert-rules.yml")["groups"]
    titles = []
    for group in groups:
        for rule in group["rules"]:
            titles.append(rule["title"])
            refs = {q["refId"] for q in rule["data"]}
            assert rule["condition"] in refs
            assert {q["datasourceUid"] for q in rule["data"]} <= uids
    assert len(titles) == 3
    points = grafana_yaml("alerting", "contact-points.yml")["contactPoints"]
    policy = grafana_yaml("alerting", "notification-policies.yml")["policies"][0]
    assert policy["receiver"] in {p["name"] for p in points}
    compose = load_compose(DEPLOY / "docker-compose.yml", env={})
    assert "STACKPROBE_ALERT_WEBHOOK" in compose.services["grafana"].environment


# --- the stack as a whole -----------------------------------------------------------------


def test_prometheus_scrapes_the_compose_services_the_stack_file_expects() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    stack = yaml.safe_load((DEPLOY / "stackprobe.yaml").read_text())
    assert set(stack["services"]["prometheus"]["expectations"]["jobs"]) <= set(jobs)
    compose = load_compose(DEPLOY / "docker-compose.yml", env={})
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.split(":")[0]
                assert host == "localhost" or host in compose.services, target
    for rule_file in stack["services"]["prometheus"]["options"]["rule_files"]:
        assert (DEPLOY / rule_file).is_file()


def test_the_probe_job_is_blackbox_style_on_the_monitors_probe_endpoint() -> None:
    """Targets are service names: they become ?service=, `service` and `instance`, and the
    scrape goes to the monitor (its __tmp_monitor, else the host's)."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "stackprobe-probe")
    assert job["metrics_path"] == "/probe"
    assert job["authorization"]["credentials_file"] == "secrets/stackprobe-token"
    relabel = [(r.get("source_labels"), r["target_label"]) for r in job["relabel_configs"]]
    assert relabel[0] == (["__address__"], "__param_service")
    assert (["__param_service"], "service") in relabel
    assert [t for s, t in relabel if t == "__address__"] == ["__address__", "__address__"]
    assert job["file_sd_configs"][0]["files"] == ["targets/probe*.yml"]
    assert yaml.safe_load((PROMETHEUS / "targets" / "probe.yml").read_text()) == []


def test_the_dashboard_shows_probe_success_per_service_and_location() -> None:
    board = dashboards()["infrastructure-health.json"]
    titles = [p["title"] for p in board["panels"]]
    row = titles.index("Probes per location")
    after = board["panels"][row + 1 :]
    exprs = {p["title"]: p["targets"][0] for p in after}
    success = exprs["Probe success per location"]
    assert success["expr"].startswith('probe_success{job="stackprobe-probe"')
    assert "{{service}}" in success["legendFormat"] and "{{location}}" in success["legendFormat"]
    assert "by (service)" in exprs["Locations that see a service down"]["expr"]
