"""`stackprobe serve` as a user runs it, against real services.

The API test watches the session sandbox. The failure tests start a small sandbox of their
own (Redis and a Celery worker that depends on it), kill its Redis, and watch the monitor
(and, in headless Chromium, the page) turn it down within 3 s, name it as the root cause for
the worker, and bring both back after `sandbox up`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackprobe.sandbox.components.redis import CELERY_WORKER, REDIS
from stackprobe.sandbox.manager import Sandbox
from tests.conftest import RunningSandbox, free_port, need_binary


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5, **kw)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"{what} not seen within {timeout} s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    procs: list[subprocess.Popen[str]] = []

    def start(stack: Path, *extra: str) -> Served:
        port = free_port()
        env = {**os.environ, "STACKPROBE_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "stackprobe", "serve", "-c", str(stack), "--port", str(port), *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        served = Served(f"http://127.0.0.1:{port}", proc)

        def ready() -> bool:
            try:
                return served.get("/readyz").status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, proc.communicate()[1]
                return False

        wait_until(ready, 20, "monitor ready")
        return served

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=15)  # also closes the pipes
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_api_metrics_and_health_on_the_sandbox(
    sandbox: RunningSandbox, serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve(sandbox.sandbox.stack_file, "--full-interval", "3600")
    wait_until(lambda: served.get("/api/status").json()["all_up"], 10, "every sandbox service up")
    status = served.get("/api/status").json()
    assert set(status["services"]) == set(sandbox.stack.services)
    assert {s["state"] for s in status["services"].values()} <= {"up", "degraded"}
    assert served.get("/healthz").status_code == 200
    wait_until(lambda: served.get("/api/runs/latest").status_code == 200, 120, "first full run")
    run = served.get("/api/runs/latest").json()
    assert run["schema_version"] == 1 and run["results"]
    # the monitor's full run is saved like `stackprobe run`'s: `coverage` reads the same run
    coverage = subprocess.run(
        [sys.executable, "-m", "stackprobe", "coverage", "--format", "json"],
        env={**os.environ, "STACKPROBE_STATE_DIR": str(tmp_path / "state")},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(coverage.stdout)["run_id"] == run["run_id"]
    assert run["coverage"]["services"]["stack"]["capabilities"]["service-health"] == "passed"
    assert not [r for r in run["results"] if r["disruptive"] and r["outcome"] != "skipped"]
    metrics = served.get("/metrics").text
    for family in (
        'stackprobe_service_up{service="cache",kind="redis"} 1',
        'stackprobe_check_status{check="redis.connectivity.ping",service="cache",capability="connectivity"} 1',
        "stackprobe_check_duration_seconds{",
        'stackprobe_probe_latency_seconds{service="cache"}',
        "stackprobe_coverage_ratio ",
    ):
        assert family in metrics, family
    detail = served.get("/api/services/cache").json()
    assert (
        detail["kind"] == "redis"
        and detail["checks"]
        and detail["latency_percentiles_ms"]["p50"] is not None
    )
    history = served.get("/api/history", params={"service": "cache"}).json()
    assert history["probes"] and history["uptime_percent"]["1h"] is not None
    assert served.get("/api/services/nope").status_code == 404
    assert served.get("/api/history").status_code == 400


def test_token_is_required_for_api_and_page_when_set(
    sandbox: RunningSandbox, serve: Callable[..., Served]
) -> None:
    served = serve(sandbox.sandbox.stack_file, "--token", "s3cr3t-token", "--full-interval", "3600")
    assert served.get("/api/status").status_code == 401
    assert served.get("/", params={"token": "wrong"}).status_code == 401
    assert (
        served.get("/api/status", headers={"Authorization": "Bearer s3cr3t-token"}).status_code
        == 200
    )
    assert served.get("/", params={"token": "s3cr3t-token"}).status_code == 200
    assert served.get("/readyz").status_code == 200  # orchestrator probes stay open
    for path in ("/metrics", "/api/runs/latest", "/api/history?service=cache"):
        assert served.get(path).status_code == 401, path
        assert served.get(path, params={"token": "s3cr3t-token"}).status_code == 401, (
            path
        )  # header only
    assert served.get("/").headers["referrer-policy"] == "no-referrer"
    body = served.get("/api/status", headers={"Authorization": "Bearer s3cr3t-token"}).text
    assert "s3cr3t-token" not in body


def test_binding_beyond_loopback_without_token_is_refused(tmp_path: Path) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text("services:\n  cache: {kind: redis, url: 'redis://127.0.0.1:1/0'}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "stackprobe", "serve", "-c", str(stack), "--host", "0.0.0.0"],  # noqa: S104 - the refusal under test
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "--host 0.0.0.0: serving beyond loopback requires --token (or STACKPROBE_TOKEN); without one, bind to 127.0.0.1"
    )


@pytest.fixture
def small_sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    need_binary("redis-server", "scripts/install-services redis")
    box = Sandbox(root=tmp_path / "small", components=(REDIS, CELERY_WORKER))
    box.up()
    try:
        yield box
    finally:
        box.down()


def kill_redis(box: Sandbox) -> float:
    pid = int((box.root / "redis" / "pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def states(served: Served) -> dict[str, Any]:
    return dict(served.get("/api/status").json()["services"])


def test_killing_redis_turns_it_down_within_3s_and_back_up(
    small_sandbox: Sandbox, serve: Callable[..., Served]
) -> None:
    served = serve(small_sandbox.stack_file, "--full-interval", "3600", "--grace", "0")
    wait_until(lambda: served.get("/healthz").status_code == 200, 10, "all up")
    killed = kill_redis(small_sandbox)
    wait_until(lambda: states(served)["cache"]["state"] == "down", 3.0, "cache down")
    took = time.monotonic() - killed
    assert served.get("/healthz").status_code == 503
    wait_until(
        lambda: states(served)["worker"]["impacted_by"] == ["cache"],
        3.0 - took + 0.5,
        "worker impacted",
    )
    assert 'stackprobe_service_up{service="cache",kind="redis"} 0' in served.get("/metrics").text
    small_sandbox.up()
    wait_until(lambda: served.get("/healthz").status_code == 200, 10, "all up again")
    cache = states(served)["cache"]
    # alive again; "degraded" is right too when the first full run saw the outage
    assert cache["alive"] is True and cache["state"] in ("up", "degraded")


def test_page_in_headless_chromium_shows_down_and_root_cause(
    small_sandbox: Sandbox, serve: Callable[..., Served], tmp_path: Path
) -> None:
    need_binary("chromium", "scripts/install-services chromium")
    need_binary("chromedriver", "scripts/install-services chromium")
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    served = serve(small_sandbox.stack_file, "--full-interval", "3600", "--grace", "0")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1400",
                 f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=shutil.which("chromedriver"))
    )
    try:
        driver.get(served.url + "/")

        def attribute(css: str, name: str) -> str:
            """The page redraws every second: elements found may be replaced before being read."""
            try:
                found = driver.find_elements(By.CSS_SELECTOR, css)
                return (found[0].get_attribute(name) or "") if found else ""
            except StaleElementReferenceException:
                return ""

        def tile(name: str) -> str:
            return attribute(f'.tile[data-service="{name}"]', "data-state")

        wait_until(lambda: tile("cache") == "up" and tile("worker") == "up", 10, "tiles up")
        killed = kill_redis(small_sandbox)
        wait_until(lambda: tile("cache") == "down", 3.0, "cache tile down")

        def worker_impacted() -> bool:
            cause = attribute('.tile[data-service="worker"] [data-role="cause"]', "textContent")
            node = attribute('g[data-node="worker"]', "data-impacted")
            return "root cause: cache" in cause and node == "yes"

        wait_until(
            worker_impacted, max(0.5, 3.5 - (time.monotonic() - killed)), "worker impacted by cache"
        )
        shot = tmp_path / "monitor-redis-down.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("STACKPROBE_KEEP_SCREENSHOT"):
            shutil.copy(shot, os.environ["STACKPROBE_KEEP_SCREENSHOT"])
        small_sandbox.up()
        wait_until(lambda: tile("cache") in ("up", "degraded"), 15, "cache tile alive again")
    finally:
        driver.quit()
