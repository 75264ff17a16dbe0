"""Resilience scenarios against a real HA sandbox of the module's own (`sandbox up --ha --proxy
cache`): a Redis primary, replica and three Sentinels, a three-server Consul cluster, Jaeger on
badger, Toxiproxy in front of the cache, and the light sandbox's services. Faults are real:
processes killed (-9), stopped and started through the sandbox process API, latency through a
real Toxiproxy. Each scenario passes here, fails where it should, and leaves nothing broken,
also after Ctrl-C and after kill -9 of stackprobe followed by `scenario restore`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from stackprobe.loader import load_stack
from stackprobe.resilience.builtin import builtin
from stackprobe.resilience.commands import _spec
from stackprobe.runner import Runner, Selection, stack_plan
from stackprobe.sandbox.manager import Sandbox
from tests.conftest import CliRunner, need_binary

SEVEN = (
    "redis-crash", "redis-failover", "redis-latency", "consul-leader-loss",
    "collector-outage", "prometheus-restart", "trace-store-outage",
)  # fmt: skip


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The state dir of a running HA sandbox with Toxiproxy in front of `cache`."""
    for binary, install in (
        ("redis-sentinel", "redis"),
        ("consul", "consul"),
        ("prometheus", "prometheus"),
    ):
        need_binary(binary, f"scripts/install-services {install}")
    state = tmp_path_factory.mktemp("ha-state")
    box = Sandbox(root=state / "sandbox")
    box.set_profile(ha=True, proxies=("cache",))
    try:
        box.up()
        yield state
    finally:
        box.down()


@pytest.fixture
def hacli(ha: Path, tmp_path: Path) -> CliRunner:
    return CliRunner(state_dir=ha, cwd=tmp_path)


def sandbox_healthy(state: Path) -> list[str]:
    """What is not right with the sandbox: components not ready within a few seconds (a readiness
    probe opens a new client: a Celery ping's first answer takes ~0.3 s), frozen ones, toxics."""
    box = Sandbox(root=state / "sandbox")
    problems = [f"{p.name} frozen" for p in box.processes().values() if p.frozen()]
    deadline = time.monotonic() + 10
    while True:
        not_ready = [f"{p.name} not ready" for p in box.processes().values() if not p.ready()]
        if not not_ready or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    problems += not_ready
    stack = load_stack(box.stack_file)
    ref = stack.service("cache").toxiproxy
    assert ref is not None
    proxy = httpx.get(f"{ref.api}/proxies/{ref.proxy}", timeout=5).json()
    problems += [f"toxic {t['name']} left" for t in proxy.get("toxics") or []]
    if not proxy.get("enabled"):
        problems.append("proxy left disabled")
    return sorted(set(problems))


def by_check(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["check"].rsplit(".", 1)[1].replace("_", "-"): r for r in doc["results"]}


def test_the_ha_sandbox_is_real_and_its_stack_file_names_every_part(ha: Path) -> None:
    stack = load_stack(ha / "sandbox" / "stackprobe.yaml")
    assert {
        "ha-cache",
        "ha-cache-a",
        "ha-cache-b",
        "ha-consul-1",
        "ha-consul-2",
        "ha-consul-3",
    } <= set(stack.services)
    sentinels = str(stack.service("ha-cache").endpoints["sentinels"]).split(",")
    assert len(sentinels) == 3
    host, port = sentinels[0].split(":")
    master = redis.Redis(host=host, port=int(port)).sentinel_get_master_addr_by_name(
        "stackprobe-ha"
    )
    assert master is not None
    consul = httpx.get(f"{stack.service('ha-consul-1').url}/v1/status/peers", timeout=5).json()
    assert len(consul) == 3
    assert stack.service("cache").toxiproxy is not None
    assert stack.service("tracing").options["config_file"].endswith("jaeger-badger.yaml")


@pytest.mark.timeout(900)  # seven scenarios take about 90 s; a hang is cut at 600 s with its log
def test_every_scenario_passes_on_the_ha_sandbox_with_its_figures(
    hacli: CliRunner, ha: Path, tmp_path: Path
) -> None:
    report = tmp_path / "scenarios.json"
    before = journals(ha)
    try:
        res = hacli(
            "scenario",
            "run",
            "--all",
            "--sandbox",
            "--allow-disruption",
            "--format",
            "json",
            "-o",
            str(report),
            timeout=600,
        )
    except pytest.fail.Exception as exc:  # the journals say which step of which scenario hung
        tails = {p.name: p.read_text().splitlines()[-12:] for p in sorted(journals(ha) - before)}
        pytest.fail(f"{exc}\njournals: {json.dumps(tails, indent=1)}")
    assert "[7/7] scenario " in res.stderr, res.stderr  # one line per scenario off a terminal
    (journal,) = journals(ha) - before  # one per run: every timeline mark, as it happened
    marks = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sum(m.get("what") == "steady state verified again" for m in marks) == len(SEVEN)
    doc = json.loads(report.read_text())
    results = by_check(doc)
    assert res.code == 0, {n: (r["outcome"], r["message"]) for n, r in results.items()}
    assert set(results) == set(SEVEN)
    for name, r in results.items():
        ev = r["evidence"]
        assert r["outcome"] == "passed", (name, r["message"])
        assert ev["time_to_detect_s"] is not None and ev["time_to_recover_s"] is not None, name
        assert ev["timeline"][0]["event"] == "steady state verified", name
        assert "steady state verified again" in {e["event"] for e in ev["timeline"]}, name
        if "writes" in ev:
            assert ev["writes"]["acknowledged"] > 0 and ev["writes"]["lost"] == 0, (
                name,
                ev["writes"],
            )
    assert results["redis-failover"]["evidence"]["verified"] == {}  # roles checked by verify steps
    assert doc["coverage"]["services"]["stack"]["capabilities"]["failover"] == "passed"
    assert doc["coverage"]["services"]["stack"]["capabilities"]["recovery"] == "passed"
    assert sandbox_healthy(ha) == []


def test_redis_crash_with_persistence_off_counts_the_lost_writes_and_fails(ha: Path) -> None:
    stack = load_stack(ha / "sandbox" / "stackprobe.yaml")
    cache = redis.Redis.from_url(str(stack.service("cache").url))
    cache.config_set("appendonly", "no")  # the restart reads the command line again: AOF on
    cache.config_set("save", "")
    plan = stack_plan(
        stack, [_spec(builtin()["redis-crash"])], Selection(allow_disruption=True, sandbox=True)
    )
    (r,) = asyncio.run(Runner(plan).run()).results
    assert r.outcome.value == "failed", r.message
    lost = r.evidence["writes"]["lost"]
    assert lost > 0 and f"{lost} acknowledged write(s) lost, tolerance 0" in r.message
    assert r.evidence["writes"]["lost_writes"]  # which ones, for the person reading it
    assert sandbox_healthy(ha) == []


def test_consul_leader_loss_on_a_single_server_reports_no_new_leader(ha: Path) -> None:
    """The same scenario pointed at the light sandbox's one dev-mode agent: nobody can take over."""
    box = Sandbox(root=ha / "sandbox")
    doc = yaml.safe_load(box.stack_file.read_text())
    doc["services"]["stack"] = {"kind": "stack", "options": {"targets": {
        "ha-consul-1": "discovery", "ha-consul-2": "discovery", "ha-consul-3": "discovery"}}}  # fmt: skip
    single = box.root / "single-consul.yaml"  # beside the sandbox's own: its processes are ours
    single.write_text(yaml.safe_dump(doc))
    plan = stack_plan(
        load_stack(single),
        [_spec(builtin()["consul-leader-loss"])],
        Selection(allow_disruption=True, sandbox=True),
    )
    (r,) = asyncio.run(Runner(plan).run()).results
    assert r.outcome.value == "failed"
    assert r.message.startswith("verify consul-leader on discovery within 15s:"), r.message
    assert sandbox_healthy(ha) == []


def test_a_stack_that_does_not_allow_disruption_is_refused(
    hacli: CliRunner, ha: Path, tmp_path: Path
) -> None:
    stack = tmp_path / "staging.yaml"
    doc = yaml.safe_load((ha / "sandbox" / "stackprobe.yaml").read_text())
    stack.write_text(yaml.safe_dump(doc))  # the same services, but not the sandbox: forbidden
    res = hacli("scenario", "run", "redis-crash", "-c", str(stack), "--allow-disruption")
    assert res.code == 2
    assert res.stderr.strip() == (
        f"{stack}: services.cache.disruption is not 'allowed': scenario redis-crash would break it "
        "(set disruption: allowed, or use the sandbox)"
    )


def start_scenario(hacli: CliRunner, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stackprobe", "scenario", "run", *args, "--sandbox", "--allow-disruption"],
        cwd=hacli.cwd, env=hacli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_fault(state: Path, since: set[Path], timeout: float = 30) -> Path:
    """The new journal, once it records a fault."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in set((state / "resilience").glob("*.jsonl")) - since:
            if '"event": "fault"' in path.read_text():
                return path
        time.sleep(0.05)
    pytest.fail("no fault was journalled")


def journals(state: Path) -> set[Path]:
    return set((state / "resilience").glob("*.jsonl"))


@pytest.mark.parametrize("scenario", ["redis-latency", "redis-crash"])
def test_ctrl_c_during_the_fault_rolls_back_and_exits_130(
    hacli: CliRunner, ha: Path, scenario: str
) -> None:
    before = journals(ha)
    proc = start_scenario(hacli, scenario)
    wait_for_fault(ha, before)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert sandbox_healthy(ha) == []


def test_kill_9_during_a_fault_then_restore_repairs_it(
    hacli: CliRunner, ha: Path, tmp_path: Path
) -> None:
    """A run killed while a toxic is installed and Redis is frozen leaves both; `restore`
    reads its journal and repairs them, and only then is the journal closed."""
    mine = tmp_path / "freeze-and-slow.yaml"
    mine.write_text(yaml.safe_dump({
        "name": "freeze-and-slow", "description": "slow the cache and freeze the HA primary",
        "procedure": ["wait"], "steady_state": [{"service": "cache"}],
        "method": [
            {"action": "latency", "service": "cache", "latency_ms": 300},
            {"action": "freeze", "service": "ha-cache-a"},
            {"action": "wait", "duration": "60s"},
        ],
    }))  # fmt: skip
    before = journals(ha)
    proc = start_scenario(hacli, "-f", str(mine))
    journal = wait_for_fault(ha, before)
    deadline = time.monotonic() + 20
    while journal.read_text().count('"event": "fault"') < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.kill()
    proc.communicate(timeout=10)
    left = sandbox_healthy(ha)
    assert "ha-redis-a frozen" in left and any(p.startswith("toxic stackprobe-") for p in left), (
        left
    )
    res = hacli("scenario", "restore", "--sandbox")
    assert res.code == 0, res.stdout + res.stderr
    assert "ha-redis-a (ha-cache-a): was frozen; sent SIGCONT" in res.stderr
    assert sandbox_healthy(ha) == []
    assert json.loads(journal.read_text().splitlines()[-1])["event"] == "end"
    again = hacli("scenario", "restore", "--sandbox")  # nothing left to repair
    assert again.code == 0 and "journal" not in again.stderr


def test_the_monitor_shows_the_cache_degraded_under_latency(hacli: CliRunner, ha: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "stackprobe", "serve", "--sandbox", "--port", str(port), "--full-interval", "3600", "--grace", "0"],
        cwd=hacli.cwd, env=hacli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    states: set[str] = set()
    try:
        url = f"http://127.0.0.1:{port}/api/status"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2).json()["services"]["cache"]["state"] == "up":
                    break
            except (httpx.HTTPError, KeyError):
                pass
            time.sleep(0.2)
        scenario = start_scenario(hacli, "redis-latency")
        reason = ""
        while scenario.poll() is None:
            cache = httpx.get(url, timeout=5).json()["services"]["cache"]
            states.add(cache["state"])
            if cache["state"] == "degraded":
                reason = cache["reason"]
            time.sleep(0.2)
        _, said = scenario.communicate(timeout=30)
        assert scenario.returncode == 0, said
    finally:
        serve.send_signal(signal.SIGINT)
        serve.communicate(timeout=30)
    assert "degraded" in states and reason.startswith("slow: median of the last 3 probes"), (
        states,
        reason,
    )


def test_the_html_report_draws_the_timeline(hacli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "crash.html"
    res = hacli(
        "scenario",
        "run",
        "redis-crash",
        "--sandbox",
        "--allow-disruption",
        "--format",
        "html",
        "-o",
        str(out),
        timeout=300,
    )
    assert res.code == 0, res.stderr
    html = out.read_text()
    assert '<svg class="timeline"' in html and "first success again" in html
    assert "recovery procedure" in html and "time to recover" in html
    text = hacli("scenario", "run", "redis-crash", "--sandbox", "--allow-disruption", timeout=300)
    assert (
        "scenario redis-crash [passed]" in text.stdout
        and "fault injected  kill -9 redis" in text.stdout
    )
