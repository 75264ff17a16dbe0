"""Real Prometheus servers of the tests' own: a config and rule files written by the test,
started through the sandbox machinery (ready by polling /-/ready, stopped by the test)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stackprobe.sandbox.component import Component, Layout
from stackprobe.sandbox.components import observability as obs
from stackprobe.sandbox.manager import Sandbox
from tests.conftest import need_binary


def prometheus(
    tmp_path: Path, name: str, config: dict[str, Any], rules: dict[str, Any] | None = None
) -> tuple[Sandbox, Component]:
    """A Prometheus with `config` (targets may name SELF) and rule files {file name: content}
    (a dict is written as YAML, a str as it is); not started yet."""

    def command(layout: Layout) -> list[str]:
        layout.dir.mkdir(parents=True, exist_ok=True)
        if rules is not None:
            for file, content in rules.items():
                text = content if isinstance(content, str) else yaml.safe_dump(content)
                (layout.dir / file).write_text(text)
            config["rule_files"] = [str(layout.dir / file) for file in rules]
        for job in config.get("scrape_configs", []):
            job["static_configs"] = [
                {
                    "targets": [
                        t.replace("SELF", f"127.0.0.1:{layout.port('prometheus')}")
                        for t in sc["targets"]
                    ]
                }
                for sc in job["static_configs"]
            ]
        (layout.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        return [
            "prometheus", f"--config.file={layout.dir / 'prometheus.yml'}", f"--storage.tsdb.path={layout.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{layout.port('prometheus')}",
        ]  # fmt: skip

    component = dataclasses.replace(obs.PROMETHEUS, command=command, requires=())
    return Sandbox(root=tmp_path / name, components=(component,)), component


@contextmanager
def running_prometheus(
    tmp_path: Path, name: str, config: dict[str, Any], rules: dict[str, Any] | None = None
) -> Iterator[tuple[str, Path]]:
    """(URL, directory of its files) of a started Prometheus; stopped on exit."""
    need_binary("prometheus", "scripts/install-services prometheus")
    box, component = prometheus(tmp_path, name, config, rules)
    box.up()
    try:
        layout = box.layout(component)
        yield f"http://127.0.0.1:{layout.port('prometheus')}", layout.dir
    finally:
        box.down()


def service_entry(box: Sandbox, component: Component) -> dict[str, Any]:
    """The stack-file entry of a Prometheus started by `prometheus()`, without sandbox links."""
    svc = component.services(box.layout(component))["metrics"]
    svc.pop("depends_on"), svc.pop("links")
    return dict(svc)


def wait_for(url: str, what: str, ready: Any, timeout: float = 20) -> Any:
    """Poll `ready(url)` (no fixed sleep) until it returns something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ready(url)
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"Prometheus at {url}: {what} not seen within {timeout:g} s")


def rules_of(url: str) -> list[dict[str, Any]]:
    groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    return [r for g in groups for r in g["rules"]]
