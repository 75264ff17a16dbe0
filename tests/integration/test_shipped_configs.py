"""Every config the sandbox ships is accepted by the real binary that will load it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from stackprobe.sandbox.component import Layout
from stackprobe.sandbox.components import observability as obs
from tests.integration.prometheus_instance import PrometheusBuild
from tests.integration.test_observability import need_file

PORTS = {
    f"{c.name}.{p}": 20000 + i
    for i, (c, p) in enumerate((c, p) for c in obs.COMPONENTS for p in c.port_names)
}


def layout(tmp_path: Path, component: str) -> Layout:
    (tmp_path / component).mkdir(exist_ok=True)
    return Layout(dir=tmp_path / component, ports=PORTS)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_otelcol_validate_accepts_the_sandbox_collector_config(tmp_path: Path) -> None:
    binary = obs.CACHE_BIN / "otelcol-stackprobe"
    need_file(binary, "scripts/install-services otelcol")
    config = tmp_path / "otelcol.yaml"
    config.write_text(yaml.safe_dump(obs.otelcol_config(layout(tmp_path, "otelcol"))))
    result = run(str(binary), "validate", f"--config=file:{config}")
    assert result.returncode == 0, result.stderr


def test_otelcol_validate_rejects_a_broken_config(tmp_path: Path) -> None:
    """The validation above can fail: a pipeline naming an undefined exporter is refused."""
    binary = obs.CACHE_BIN / "otelcol-stackprobe"
    need_file(binary, "scripts/install-services otelcol")
    doc = obs.otelcol_config(layout(tmp_path, "otelcol"))
    doc["service"]["pipelines"]["traces"]["exporters"].append("otlp_grpc/nowhere")
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(doc))
    result = run(str(binary), "validate", f"--config=file:{config}")
    assert result.returncode != 0 and "otlp_grpc/nowhere" in result.stderr


def test_jaeger_validate_accepts_the_sandbox_jaeger_config(tmp_path: Path) -> None:
    binary = obs.CACHE_BIN / "jaeger"
    need_file(binary, "scripts/install-services jaeger")
    config = tmp_path / "jaeger.yaml"
    config.write_text(yaml.safe_dump(obs.jaeger_config(layout(tmp_path, "jaeger"))))
    result = run(str(binary), "validate", f"--config=file:{config}")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("what", ["config", "rules"])
def test_promtool_accepts_the_sandbox_prometheus_files(
    tmp_path: Path, what: str, prometheus_build: PrometheusBuild
) -> None:
    promtool = prometheus_build.paths()[1]  # 2.42 and 3.x
    place = layout(tmp_path, "prometheus")
    (place.dir / "rules.yml").write_text(yaml.safe_dump(obs.prometheus_rules()))
    (place.dir / "prometheus.yml").write_text(yaml.safe_dump(obs.prometheus_config(place)))
    target = place.dir / ("prometheus.yml" if what == "config" else "rules.yml")
    result = run(promtool, "check", what, str(target))
    assert result.returncode == 0, result.stdout + result.stderr
