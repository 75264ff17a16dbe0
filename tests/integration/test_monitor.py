"""`stackprobe serve` as a user runs it, against real services.

The API test watches the session sandbox. The failure tests start a small sandbox of their
own (Redis and a Celery worker that depends on it), kill its Redis, and watch the monitor
(and, in headless Chromium, the page) turn it down within 3 s, name it as the root cause for
the worker, and bring both back after `sandbox up`. The server tests run the monitor's
uvicorn server in-process over a Redis that is not there: half-open connections, the
connection cap, /metrics as prometheus-client parses it, and the app mounted in another.
The /probe tests answer blackbox-style on the session sandbox (and with its Redis stopped) and
to a real Prometheus running the reference stack's scrape job; the held-connection tests kill
Redis and Consul under a 5 s probe interval, which only the held connection can beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from stackprobe.errors import ConfigError
from stackprobe.http import hold_http
from stackprobe.loader import load_stack
from stackprobe.monitor import server as monitor_server
from stackprobe.monitor.core import Monitor
from stackprobe.monitor.history import History
from stackprobe.monitor.server import MonitorServer, create_app
from stackprobe.monitor.state import Policy
from stackprobe.sandbox.components import observability as obs
from stackprobe.sandbox.components.consul import CONSUL
from stackprobe.sandbox.components.redis import CELERY_WORKER, REDIS
from stackprobe.sandbox.manager import Sandbox
from tests.conftest import RunningSandbox, free_port, need_binary
from tests.integration.helpers import write_stack
from tests.integration.prometheus_instance import running_prometheus, wait_for
from tests.integration.test_observability import need_file


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5, **kw)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a /metrics answer in the text format, as prometheus-client parses it."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


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
    assert metric(metrics, "stackprobe_service_up", service="cache", kind="redis") == 1
    ping = {"check": "redis.connectivity.ping", "service": "cache", "capability": "connectivity"}
    assert metric(metrics, "stackprobe_check_status", **ping) == 1
    assert metric(metrics, "stackprobe_check_duration_seconds", **ping) > 0
    assert metric(metrics, "stackprobe_probe_latency_seconds", service="cache") > 0
    assert 0 < metric(metrics, "stackprobe_coverage_ratio") <= 1
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
    for path in (
        "/metrics",
        "/api/runs/latest",
        "/api/history?service=cache",
        "/probe?service=cache",
    ):
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
    assert (
        metric(served.get("/metrics").text, "stackprobe_service_up", service="cache", kind="redis")
        == 0
    )
    small_sandbox.up()
    wait_until(lambda: served.get("/healthz").status_code == 200, 10, "all up again")
    cache = states(served)["cache"]
    # alive again; "degraded" is right too when the first full run saw the outage
    assert cache["alive"] is True and cache["state"] in ("up", "degraded")


def chromium(tmp_path: Path) -> Any:
    """Headless Debian chromium through chromedriver (no browser download)."""
    need_binary("chromium", "scripts/install-services chromium")
    need_binary("chromedriver", "scripts/install-services chromium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(
        options=options, service=Service(executable_path=shutil.which("chromedriver"))
    )


def test_page_in_headless_chromium_shows_down_and_root_cause(
    small_sandbox: Sandbox, serve: Callable[..., Served], tmp_path: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    served = serve(small_sandbox.stack_file, "--full-interval", "3600", "--grace", "0")
    driver = chromium(tmp_path)
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


FLOW_INTERVAL = 2.0


def test_killing_the_worker_turns_the_flows_celery_hop_red_within_one_flow_interval(
    small_sandbox: Sandbox, serve: Callable[..., Served], tmp_path: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    served = serve(small_sandbox.stack_file, "--full-interval", "3600", "--grace", "0",
                   "--flow-interval", str(FLOW_INTERVAL))  # fmt: skip
    driver = chromium(tmp_path)
    try:
        driver.get(served.url + "/")

        def hop(name: str) -> str:
            try:
                found = driver.find_elements(
                    By.CSS_SELECTOR, f'#flowhops tr.hop[data-hop="{name}"]'
                )
                return (found[0].get_attribute("data-status") or "") if found else ""
            except StaleElementReferenceException:
                return ""

        wait_until(
            lambda: hop("celery") == "passed" and hop("redis") == "passed", 60, "flow hops green"
        )
        assert hop("consul") == "skipped"  # the small sandbox has no Consul: skipped, with why
        assert metric(served.get("/metrics").text, "stackprobe_flow_success") == 1
        small_sandbox.process("worker").kill()
        killed = time.monotonic()
        # the next flow starts within one interval and fails at once: no worker consumes
        wait_until(lambda: hop("celery") == "failed", FLOW_INTERVAL + 8, "celery hop red")
        took = time.monotonic() - killed
        failing = driver.find_element(By.ID, "flowfail").text
        assert failing.startswith("last failing hop: celery (worker)"), failing
        assert "no live Celery worker consumes queue 'celery'" in failing
        color = driver.find_element(
            By.CSS_SELECTOR, '#flowhops tr.hop[data-hop="celery"] td.status'
        )
        assert color.value_of_css_property("background-color") == "rgba(207, 34, 46, 1)"  # red
        shot = tmp_path / "monitor-flow-worker-killed.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("STACKPROBE_KEEP_FLOW_SCREENSHOT"):
            shutil.copy(shot, os.environ["STACKPROBE_KEEP_FLOW_SCREENSHOT"])
        flow = served.get("/api/flow").json()
        assert flow["last_failing_hop"]["hop"] == "celery"
        assert [f["ok"] for f in flow["history"]][-1] is False and True in [
            f["ok"] for f in flow["history"]
        ]
        assert metric(served.get("/metrics").text, "stackprobe_flow_success") == 0
        assert took < FLOW_INTERVAL + 8
    finally:
        driver.quit()


# --- the server in-process -------------------------------------------------------------------

NO_REDIS: dict[str, object] = {"cache": {"kind": "redis", "url": "redis://127.0.0.1:1/0"}}


@contextlib.contextmanager
def monitor_of(tmp_path: Path, services: dict[str, object] = NO_REDIS) -> Iterator[Monitor]:
    """A monitor (not probing yet, no grace) over a stack file with `services`."""
    history = History(tmp_path / "history.sqlite", 3600)
    stack = load_stack(write_stack(tmp_path, services))
    try:
        yield Monitor(stack, history, policy=Policy(grace_s=0), probe_timeout=0.2)
    finally:
        history.close()


@contextlib.asynccontextmanager
async def in_process(
    tmp_path: Path, services: dict[str, object] = NO_REDIS
) -> AsyncIterator[tuple[Monitor, MonitorServer]]:
    with monitor_of(tmp_path, services) as monitor:
        server = MonitorServer(monitor, "127.0.0.1", 0)
        await server.start()
        try:
            yield monitor, server
        finally:
            await server.close()


async def closed_within(reader: asyncio.StreamReader, started: float, limit: float) -> float:
    """Seconds from `started` until the server closed the connection (inf: still open)."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return float("inf")
    except ConnectionError:
        pass
    return time.monotonic() - started


def test_half_open_connections_are_dropped_while_requests_are_served(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[float], int]:
        async with in_process(tmp_path) as (_, server):
            opened = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(100)]
            for _, writer in opened:
                writer.write(b"GET /api/sta")  # half a request line, then nothing
            # and one kept-alive connection that was served once, then sends half a request
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            length = int(head.split("content-length: ")[1].split("\r\n")[0])
            await reader.readexactly(length)
            writer.write(b"GET /api/st")
            opened.append((reader, writer))
            started = time.monotonic()
            watches = [asyncio.create_task(closed_within(r, started, 10)) for r, _ in opened]
            async with httpx.AsyncClient(timeout=5) as client:
                status = (
                    await client.get(f"http://127.0.0.1:{server.port}/api/status")
                ).status_code
            closed = await asyncio.gather(*watches)
            for _, writer in opened:
                writer.close()
            return closed, status

    closed, status = asyncio.run(scenario())
    assert status == 200
    print(
        f"101 half-open connections closed by the server after {min(closed):.2f}-{max(closed):.2f} s"
    )
    assert max(closed) <= 8.0, sorted(closed)[-5:]


def test_connections_beyond_the_cap_are_closed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor_server, "MAX_CONNECTIONS", 10)

    async def scenario() -> list[float]:
        async with in_process(tmp_path) as (_, server):
            opened = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(15)]
            started = time.monotonic()
            closed = await asyncio.gather(*(closed_within(r, started, 1.0) for r, _ in opened))
            for _, writer in opened:
                writer.close()
            return closed

    closed = asyncio.run(scenario())
    assert sum(t < 1.0 for t in closed) == 5, closed


def test_oversized_heads_and_other_methods_are_refused(tmp_path: Path) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with in_process(tmp_path) as (_, server), httpx.AsyncClient(timeout=5) as client:
            url = f"http://127.0.0.1:{server.port}/api/status"
            big = await client.get(url, headers={"X-Filler": "x" * 20_000})
            post = await client.post(url)
            return big, post

    big, post = asyncio.run(scenario())
    assert (big.status_code, big.text) == (431, "request head too large")
    assert (post.status_code, post.text, post.headers["allow"]) == (
        405,
        "only GET is served",
        "GET",
    )
    assert post.headers["cache-control"] == "no-store"
    assert post.headers["x-content-type-options"] == "nosniff"


def _scrape(
    tmp_path: Path, services: dict[str, object], accept: str | None = None
) -> httpx.Response:
    """/metrics after two probe rounds and one full run against a Redis that is not there."""

    async def scenario() -> httpx.Response:
        async with in_process(tmp_path, services) as (monitor, server):
            await monitor.probe_round()
            await monitor.probe_round()
            await monitor.full_run()
            headers = {"Accept": accept} if accept else {}
            async with httpx.AsyncClient(timeout=5) as client:
                return await client.get(f"http://127.0.0.1:{server.port}/metrics", headers=headers)

    return asyncio.run(scenario())


def test_metrics_parse_with_prometheus_client(tmp_path: Path) -> None:
    response = _scrape(tmp_path, NO_REDIS)
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: f.type for name, f in families.items()} == {
        "stackprobe_service_up": "gauge",
        "stackprobe_service_state": "gauge",
        "stackprobe_probe_latency_seconds": "gauge",
        "stackprobe_check_status": "gauge",
        "stackprobe_check_duration_seconds": "gauge",
        "stackprobe_coverage_ratio": "gauge",
        "stackprobe_monitor_probe_rounds": "counter",  # the parser drops the counter's _total
    }
    assert "# TYPE stackprobe_monitor_probe_rounds_total counter" in text  # named as before
    assert metric(text, "stackprobe_monitor_probe_rounds_total") == 2
    assert metric(text, "stackprobe_service_up", service="cache", kind="redis") == 0
    assert metric(text, "stackprobe_service_state", service="cache", state="down") == 1
    assert not families["stackprobe_probe_latency_seconds"].samples  # no successful probe yet
    ping = {"check": "redis.connectivity.ping", "service": "cache", "capability": "connectivity"}
    assert metric(text, "stackprobe_check_status", **ping) == 0  # errored: nothing listens
    assert metric(text, "stackprobe_check_duration_seconds", **ping) >= 0
    assert metric(text, "stackprobe_coverage_ratio") == 0
    assert metric(text, "stackprobe_coverage_ratio", service="cache") == 0


def test_metric_label_values_are_redacted(tmp_path: Path) -> None:
    # a secret that happens to be the service's name is masked wherever it appears
    services: dict[str, object] = {
        "cache": {"kind": "redis", "url": "redis://127.0.0.1:1/0", "password": "cache"}
    }
    text = _scrape(tmp_path, services).text
    assert "cache" not in text
    assert metric(text, "stackprobe_service_up", service="***", kind="redis") == 0


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=1.0.0",
        # what Prometheus 2.42 sends when it scrapes
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ],
)
def test_openmetrics_is_served_when_the_scraper_asks(tmp_path: Path, accept: str) -> None:
    response = _scrape(tmp_path, NO_REDIS, accept)
    assert response.headers["content-type"].startswith(
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    assert response.text.endswith("# EOF\n")
    parsed = openmetrics_families(response.text)  # type: ignore[no-untyped-call]  # unannotated upstream
    families = {f.name: f for f in parsed}
    rounds = families["stackprobe_monitor_probe_rounds"]
    assert rounds.type == "counter"
    assert [(s.name, s.value) for s in rounds.samples] == [
        ("stackprobe_monitor_probe_rounds_total", 2)
    ]
    up = families["stackprobe_service_up"].samples
    assert [(s.labels, s.value) for s in up] == [({"service": "cache", "kind": "redis"}, 0)]


def test_the_app_mounts_in_another_asgi_app(tmp_path: Path) -> None:
    async def scenario(monitor: Monitor) -> dict[str, int]:
        await monitor.probe_round()
        app = Starlette(routes=[Mount("/health", app=create_app(monitor, token="s3cr3t"))])
        transport = httpx.ASGITransport(app=app)
        bearer = {"Authorization": "Bearer s3cr3t"}
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return {
                "page": (await client.get("/health/", params={"token": "s3cr3t"})).status_code,
                "page without token": (await client.get("/health/")).status_code,
                "api": (await client.get("/health/api/status", headers=bearer)).status_code,
                "api without token": (await client.get("/health/api/status")).status_code,
                "readyz": (await client.get("/health/readyz")).status_code,
                "unknown": (await client.get("/health/nope", headers=bearer)).status_code,
            }

    with monitor_of(tmp_path) as monitor:
        codes = asyncio.run(scenario(monitor))
    assert codes == {
        "page": 200,
        "page without token": 401,
        "api": 200,
        "api without token": 401,
        "readyz": 200,
        "unknown": 404,
    }


def test_a_port_in_use_is_a_one_line_config_error(tmp_path: Path) -> None:
    with monitor_of(tmp_path) as monitor, socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as exc:
            asyncio.run(MonitorServer(monitor, "127.0.0.1", port).start())
    assert str(exc.value).startswith(f"--host/--port: cannot listen on 127.0.0.1:{port}: ")
    assert "Address already in use" in str(exc.value) and "\n" not in str(exc.value)


def test_a_failing_view_answers_a_redacted_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services: dict[str, object] = {
        "cache": {"kind": "redis", "url": "redis://127.0.0.1:1/0", "password": "s3cr3t-pass"}
    }

    def broken() -> dict[str, Any]:
        raise RuntimeError("lost the password s3cr3t-pass")

    async def scenario(monitor: Monitor) -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(monitor, token=None))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/api/status")

    with monitor_of(tmp_path, services) as monitor:
        monkeypatch.setattr(monitor, "status_document", broken)
        response = asyncio.run(scenario(monitor))
    assert (response.status_code, response.text) == (500, "error: lost the password ***")
    assert response.headers["referrer-policy"] == "no-referrer"


def test_ctrl_c_stops_serve_with_130(tmp_path: Path, serve: Callable[..., Served]) -> None:
    served = serve(write_stack(tmp_path, NO_REDIS), "--full-interval", "3600")
    wait_until(lambda: served.get("/api/runs/latest").status_code == 200, 30, "first full run")
    served.proc.send_signal(signal.SIGINT)
    _, stderr = served.proc.communicate(timeout=15)
    assert served.proc.returncode == 130, stderr
    assert "Traceback" not in stderr


def test_ctrl_c_during_the_first_full_run_stops_serve_at_once(
    sandbox: RunningSandbox, serve: Callable[..., Served]
) -> None:
    """The first full run on the sandbox takes seconds: Ctrl-C inside it must not wait for the
    next full interval (an hour here) before the monitor stops."""
    served = serve(sandbox.sandbox.stack_file, "--full-interval", "3600")
    time.sleep(2)  # inside the first full run's checks (the sandbox's take about 6 s)
    assert served.get("/api/runs/latest").status_code == 404  # the first run is still going
    started = time.monotonic()
    served.proc.send_signal(signal.SIGINT)
    _, stderr = served.proc.communicate(timeout=30)
    assert served.proc.returncode == 130, stderr
    assert time.monotonic() - started < 20 and "Traceback" not in stderr


# --- /probe (the blackbox exporter's contract) and held connections ---------------------------

SCRAPE_TIMEOUT = "X-Prometheus-Scrape-Timeout-Seconds"


def probe_samples(text: str) -> dict[str, tuple[dict[str, str], float]]:
    """name (check id for stackprobe_check_status) -> (labels, value) of a /probe answer."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.labels.get("check", s.name) if s.name == "stackprobe_check_status" else s.name
            found[key] = (s.labels, float(s.value))
    return found


def test_probe_answers_success_on_the_sandbox_and_failure_in_time_with_redis_stopped(
    sandbox: RunningSandbox, serve: Callable[..., Served]
) -> None:
    served = serve(sandbox.sandbox.stack_file, "--full-interval", "3600", "--flow-interval", "0",
                   "--location", "lab")  # fmt: skip
    answer = served.get("/probe", params={"service": "cache"}, headers={SCRAPE_TIMEOUT: "3"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    got = probe_samples(answer.text)
    assert got["probe_success"] == ({"location": "lab"}, 1.0)
    assert got["probe_duration_seconds"][1] > 0
    # operations, not sessions: its sliding-expiry check times a 0.8 s TTL, too tight for a
    # busy machine running the monitor's first full run beside it
    operations = served.get("/probe", params={"service": "cache", "capability": "operations"})
    checks = {k: v for k, (labels, v) in probe_samples(operations.text).items() if "." in k}
    assert checks and set(checks.values()) == {1.0}, operations.text
    assert all(k.startswith("redis.operations.") for k in checks)
    assert probe_samples(operations.text)["probe_success"][1] == 1
    unknown = served.get("/probe", params={"service": "nope"})
    assert unknown.status_code == 400 and unknown.text.count("\n") == 1
    assert unknown.text.startswith("unknown service 'nope' (services: ")

    cache = sandbox.sandbox.process("cache")
    cache.stop()
    try:
        started = time.monotonic()
        answer = served.get("/probe", params={"service": "cache"}, headers={SCRAPE_TIMEOUT: "2"})
        took = time.monotonic() - started
        got = probe_samples(answer.text)
        assert answer.status_code == 200 and got["probe_success"] == ({"location": "lab"}, 0.0)
        assert "cannot connect" in got["stackprobe_probe_error_info"][0]["reason"]
        assert took < 2.0  # within the scrape timeout Prometheus sent
        operations = served.get("/probe", params={"service": "cache", "capability": "operations"},
                                headers={SCRAPE_TIMEOUT: "2"})  # fmt: skip
        assert probe_samples(operations.text)["probe_success"][1] == 0
    finally:
        cache.start()
        # the session's worker lost its broker: restart it, as `sandbox up` does after a Redis
        # restart, or the next tests' Celery checks meet a worker still reconnecting
        sandbox.sandbox.process("worker").restart()


def probe_job(monitor: str) -> dict[str, Any]:
    """The reference stack's stackprobe-probe job, pointed at `monitor`, targets listed inline."""
    shipped = Path(__file__).resolve().parents[2] / "deploy/compose/prometheus/prometheus.yml"
    config = yaml.safe_load(shipped.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "stackprobe-probe")
    del job["authorization"], job["file_sd_configs"]  # no token on loopback; targets inline
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": ["cache"]}])
    for rule in job["relabel_configs"]:
        if rule.get("replacement") == "host.docker.internal:8765":
            rule["replacement"] = monitor
    return dict(job)


def test_a_real_prometheus_scraping_probe_sees_probe_success_flip_when_redis_is_killed(
    small_sandbox: Sandbox, serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve(small_sandbox.stack_file, "--full-interval", "3600", "--flow-interval", "0",
                   "--location", "lab")  # fmt: skip
    monitor = served.url.removeprefix("http://")
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [probe_job(monitor)]}
    with running_prometheus(tmp_path, "prom", config) as (url, _):

        def query(expr: str) -> list[dict[str, Any]]:
            doc = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
            return list(doc["data"]["result"])

        def success_is(value: str) -> dict[str, str] | None:
            found = query('probe_success{service="cache"}')
            return found[0]["metric"] if found and found[0]["value"][1] == value else None

        labels = wait_for(url, "probe_success 1", lambda _: success_is("1"), timeout=30)
        assert labels["job"] == "stackprobe-probe" and labels["instance"] == "cache"
        assert labels["location"] == "lab"
        kill_redis(small_sandbox)
        wait_for(url, "probe_success 0", lambda _: success_is("0"), timeout=20)
        # a failed probe is an answer, not a failed scrape: the target stays up
        assert [r["value"][1] for r in query('up{job="stackprobe-probe"}')] == ["1"]
        small_sandbox.up()
        wait_for(url, "probe_success 1 again", lambda _: success_is("1"), timeout=30)


def test_a_held_connection_turns_a_killed_redis_down_at_once(
    small_sandbox: Sandbox, serve: Callable[..., Served]
) -> None:
    """With probes every 5 s, only the held connection can see the kill within the bound."""
    served = serve(small_sandbox.stack_file, "--full-interval", "3600", "--flow-interval", "0",
                   "--grace", "0", "--interval", "5")  # fmt: skip
    wait_until(lambda: served.get("/healthz").status_code == 200, 20, "all up")
    wait_until(
        lambda: served.get("/api/status").json()["held"] == ["cache", "worker"], 10, "both held"
    )
    killed = kill_redis(small_sandbox)
    while states(served)["cache"]["state"] != "down":
        assert time.monotonic() - killed < 3, "cache not down within 3 s"
        time.sleep(0.01)
    took = time.monotonic() - killed
    assert took < 0.5, f"cache down after {took:.2f} s"
    probes = served.get("/api/history", params={"service": "cache"}).json()["probes"]
    assert probes[-2]["error"].startswith("held connection closed: ")  # the close, then
    assert "cannot connect" in probes[-1]["error"]  # the re-probe that confirmed it
    # the worker's held connection is to its broker: it goes down with it, not 10 s later
    wait_until(lambda: states(served)["worker"]["state"] == "down", 2, "worker down")
    small_sandbox.up()
    wait_until(lambda: served.get("/healthz").status_code == 200, 20, "all up again")


def test_a_consul_kill_is_seen_through_its_held_keep_alive_connection(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    need_binary("consul", "scripts/install-services consul")
    box = Sandbox(root=tmp_path / "consul", components=(CONSUL,))
    box.up()
    try:
        served = serve(box.stack_file, "--full-interval", "3600", "--flow-interval", "0",
                       "--grace", "0", "--interval", "5")  # fmt: skip
        wait_until(lambda: states(served)["discovery"]["state"] == "up", 20, "consul up")
        wait_until(lambda: served.get("/api/status").json()["held"] == ["discovery"], 10, "held")
        killed = time.monotonic()
        box.process("consul").kill()
        while states(served)["discovery"]["state"] != "down":
            assert time.monotonic() - killed < 3, "discovery not down within 3 s"
            time.sleep(0.01)
        assert time.monotonic() - killed < 1.0  # probes alone: 5 s at the least
        probes = served.get("/api/history", params={"service": "discovery"}).json()["probes"]
        assert probes[-2]["error"] == "held connection closed by the server"
    finally:
        box.down()


def test_hold_http_sees_a_stopped_prometheus_close_its_keep_alive_connection(
    tmp_path: Path,
) -> None:
    config: dict[str, Any] = {"global": {"scrape_interval": "1s"}, "scrape_configs": []}

    async def held_until_stopped() -> tuple[bool, str, float]:
        with running_prometheus(tmp_path, "prom", config) as (url, _):
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:
                held = await hold_http(http, "/-/ready")
                closed = asyncio.ensure_future(held.closed())
                await asyncio.sleep(1.5)
                still_open = not closed.done()
        stopped = time.monotonic()  # running_prometheus stopped it on exit
        cause = await asyncio.wait_for(closed, 5)
        await held.aclose()
        return still_open, cause, time.monotonic() - stopped

    still_open, cause, after = asyncio.run(held_until_stopped())
    assert still_open  # idle, the connection stays up while Prometheus runs
    assert cause in (
        "held connection closed by the server",
        "held connection reset: Connection reset by peer",
    )
    assert after < 1.0


def alive(served: Served, service: str) -> bool:
    return states(served)[service]["alive"] is True


def test_a_killed_collector_and_prometheus_are_seen_through_held_connections(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    """The HTTP kinds' held keep-alive connections, each killed under a 5 s probe interval."""
    need_file(obs.CACHE_BIN / "jaeger", "scripts/install-services jaeger")  # the collector's store
    need_file(obs.CACHE_BIN / "otelcol-stackprobe", "scripts/install-services otelcol")
    need_binary("prometheus", "scripts/install-services prometheus")
    box = Sandbox(root=tmp_path / "obs", components=obs.COMPONENTS)
    box.up()
    try:
        served = serve(box.stack_file, "--full-interval", "3600", "--flow-interval", "0",
                       "--grace", "0", "--interval", "5")  # fmt: skip
        # Jaeger's query API answers `Connection: close` (v1.76 here): probed only
        watched = ["metrics", "otel"]
        wait_until(lambda: served.get("/api/status").json()["held"] == watched, 20, "both held")
        for service, component in (("otel", "otelcol"), ("metrics", "prometheus")):
            wait_until(partial(alive, served, service), 20, f"{service} up")
            killed = time.monotonic()
            box.process(component).kill()
            while states(served)[service]["state"] != "down":
                assert time.monotonic() - killed < 3, f"{service} not down within 3 s"
                time.sleep(0.01)
            assert time.monotonic() - killed < 1.0, service  # probes alone: 5 s at the least
            probes = served.get("/api/history", params={"service": service}).json()["probes"]
            assert probes[-2]["error"].startswith("held connection "), (service, probes[-2:])
            box.process(component).start()
    finally:
        box.down()
