"""Real Prometheus servers of the tests' own: a config and rule files written by the test,
started through the sandbox machinery (ready by polling /-/ready, stopped by the test)."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stackprobe.sandbox.component import Component, Layout
from stackprobe.sandbox.components import observability as obs
from stackprobe.sandbox.manager import Sandbox
from tests.conftest import need_binary

SHIMS = Path(tempfile.gettempdir()) / f"stackprobe-prometheus-shims-{os.getuid()}"


@dataclass(frozen=True)
class PrometheusBuild:
    """One Prometheus installed here: its binaries (a bare name is looked up on PATH)."""

    id: str  # test id: prometheus2, prometheus3
    major: int
    prometheus: str
    promtool: str
    install: str
    flags: tuple[str, ...] = ()  # added to every server's command line

    def paths(self) -> tuple[str, str]:
        """(prometheus, promtool) paths; fails in CI and skips elsewhere when missing."""
        found = []
        for binary in (self.prometheus, self.promtool):
            path = shutil.which(binary)
            if path is None:
                need_binary(Path(binary).name, self.install)  # fails or skips
            assert path is not None
            found.append(path)
        return found[0], found[1]

    def version(self, tool: str = "prometheus") -> str:
        """`prometheus --version`'s (or promtool's) version, e.g. 2.42.0 or 3.16.0."""
        path = self.paths()[0 if tool == "prometheus" else 1]
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        match = re.search(rf"{tool}, version (\S+)", out.stdout + out.stderr)
        assert match, out.stdout + out.stderr
        return match.group(1)


BUILDS = (
    PrometheusBuild("prometheus2", 2, "prometheus", "promtool", "scripts/install-services prometheus"),
    PrometheusBuild(
        "prometheus3", 3, str(obs.CACHE_BIN / "prometheus3"), str(obs.CACHE_BIN / "promtool3"),
        "scripts/install-services prometheus3",
        # 3.x moved holt_winters to double_exponential_smoothing, behind this flag
        ("--enable-feature=promql-experimental-functions",),
    ),
)  # fmt: skip


def checked(build: PrometheusBuild) -> PrometheusBuild:
    """`build` after checking that its prometheus and promtool are of its major version."""
    for tool, path in zip(("prometheus", "promtool"), build.paths(), strict=True):
        version = build.version(tool)
        assert version.split(".")[0] == str(build.major), f"{path} is {version}"
    return build


def promtool_on_path(build: PrometheusBuild, monkeypatch: pytest.MonkeyPatch) -> None:
    """`build`'s promtool first on PATH as `promtool` (what stackprobe's promtool checks run)
    for one test: monkeypatch restores PATH after it."""
    target = build.paths()[1]
    shims = SHIMS / build.id
    shims.mkdir(parents=True, exist_ok=True)
    link = shims / "promtool"
    if not link.is_symlink() or str(link.readlink()) != target:  # atomic: runs may share it
        fresh = shims / f".promtool.{os.getpid()}"
        fresh.unlink(missing_ok=True)
        fresh.symlink_to(target)
        fresh.replace(link)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ.get('PATH', '')}")
    assert shutil.which("promtool") == str(link)


def prometheus(
    tmp_path: Path,
    name: str,
    config: dict[str, Any],
    rules: dict[str, Any] | None = None,
    build: PrometheusBuild = BUILDS[0],
) -> tuple[Sandbox, Component]:
    """A Prometheus of `build` with `config` (targets may name SELF) and rule files {file
    name: content} (a dict is written as YAML, a str as it is); not started yet."""
    binary = build.paths()[0]
    # a copy: SELF is replaced per server (a shared CONFIG once kept the first server's port,
    # so every later server of a module scraped that one, or nothing once it stopped)
    config = copy.deepcopy(config)

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
            binary, f"--config.file={layout.dir / 'prometheus.yml'}", f"--storage.tsdb.path={layout.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{layout.port('prometheus')}", *build.flags,
        ]  # fmt: skip

    component = dataclasses.replace(obs.PROMETHEUS, binary=binary, command=command, requires=())
    return Sandbox(root=tmp_path / name, components=(component,)), component


@contextmanager
def running_prometheus(
    tmp_path: Path,
    name: str,
    config: dict[str, Any],
    rules: dict[str, Any] | None = None,
    build: PrometheusBuild = BUILDS[0],
) -> Iterator[tuple[str, Path]]:
    """(URL, directory of its files) of a started Prometheus of `build`; stopped on exit."""
    box, component = prometheus(tmp_path, name, config, rules, build)
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
