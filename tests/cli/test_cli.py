"""The CLI as a user runs it: a separate process, real arguments, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import redis

from stackprobe.catalog import all_checks, known_kinds
from stackprobe.sandbox.components import all_components
from stackprobe.sandbox.manager import Sandbox
from tests.conftest import CliRunner, RunningSandbox, free_port


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


def test_version_and_help_document_exit_codes(cli: CliRunner) -> None:
    res = cli("--version")
    assert (res.code, res.stdout.strip()) == (0, "stackprobe 0.1.0")
    res = cli("run", "--help")
    assert res.code == 0 and "130 interrupted" in " ".join(res.stdout.split())


def test_list_shows_every_check(cli: CliRunner) -> None:
    res = cli("list")
    assert res.code == 0
    for spec in all_checks():
        assert spec.id in res.stdout


def test_config_check_prints_one_line_per_problem_and_exits_2(
    cli: CliRunner, tmp_path: Path
) -> None:
    bad = tmp_path / "stack.yaml"
    bad.write_text(
        "services:\n  cache: {kind: redis, url: 'redis://h:1/0', pasword: x}\n  db: {kind: arangodbx, url: 'http://h'}\n"
    )
    res = cli("config", "check", "-c", str(bad))
    assert res.code == 2
    lines = res.stderr.strip().splitlines()
    assert lines == [
        f"{bad}: services.cache.pasword: unknown field (did you mean 'password'?)",
        f"{bad}: services.db.kind: unknown kind 'arangodbx'; known kinds: {', '.join(known_kinds())}",
    ]
    good = tmp_path / "good.yaml"
    good.write_text("services:\n  cache: {kind: redis, url: 'redis://h:1/0'}\n")
    res = cli("config", "check", "-c", str(good))
    assert res.code == 0 and "ok" in res.stdout


def test_usage_errors_exit_2_with_one_clear_line(cli: CliRunner, tmp_path: Path) -> None:
    res = cli("run", "--sandbox")
    assert res.code == 2
    assert "no sandbox is running" in res.stderr and "stackprobe sandbox up" in res.stderr
    res = cli("run", "--sandbox", "-c", "x.yaml")
    assert (res.code, res.stderr.strip()) == (
        2,
        "--sandbox and -c/--config cannot be combined: pick one stack",
    )
    res = cli("run", "--format", "xml")
    assert res.code == 2 and "xml" in res.stderr
    stack = tmp_path / "s.yaml"
    stack.write_text("services:\n  cache: {kind: redis, url: 'redis://h:1/0'}\n")
    res = cli("run", "-c", str(stack), "--service", "nope")
    assert (res.code, res.stderr.strip()) == (
        2,
        f"--service: no service 'nope' in {stack} (services: cache)",
    )
    no_traceback(res.stdout, res.stderr)


def test_run_json_on_the_sandbox_passes_every_redis_capability(
    cli: CliRunner, sandbox: RunningSandbox
) -> None:
    cli.use_sandbox(sandbox)
    res = cli("run", "--sandbox", "--format", "json")
    assert res.code == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == 1 and doc["summary"]["failed"] == doc["summary"]["error"] == 0
    cache = doc["coverage"]["services"]["cache"]
    assert cache["percent"] == 100.0
    assert set(cache["capabilities"].values()) == {"passed"} and len(cache["capabilities"]) == 6
    assert (sandbox.state_dir / "runs" / f"{doc['run_id']}.json").is_file()
    stack = doc["coverage"]["services"]["stack"]  # the stack-level row, on for the sandbox
    assert stack["kind"] == "stack"
    assert (
        stack["capabilities"]["service-health"] == stack["capabilities"]["dependencies"] == "passed"
    )


def test_run_text_and_junit_output(cli: CliRunner, sandbox: RunningSandbox, tmp_path: Path) -> None:
    cli.use_sandbox(sandbox)
    res = cli("run", "--sandbox", "--kind", "redis", "--capability", "connectivity")
    assert res.code == 0
    assert "cache (redis 7" in res.stdout and "redis.connectivity.ping" in res.stdout
    assert "1 passed, 0 failed, 0 error, 0 skipped" in res.stdout
    out = tmp_path / "report.xml"
    res = cli("run", "--sandbox", "--format", "junit", "-o", str(out), "--capability", "sessions")
    assert res.code == 0 and res.stdout == ""
    assert "3 passed" in res.stderr
    cases = ET.parse(out).getroot().findall("./testsuite/testcase")
    assert {c.get("classname") for c in cases} == {"cache"} and len(cases) == 3


def test_stopped_redis_exits_1_with_one_line_errors_and_no_secret(
    cli: CliRunner, tmp_path: Path
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(
        f"services:\n  cache: {{kind: redis, url: 'redis://:pa55-w0rd@127.0.0.1:{free_port()}/0'}}\n"
    )
    res = cli("run", "-c", str(stack), "--format", "json")
    assert res.code == 1
    no_traceback(res.stdout, res.stderr)
    assert "pa55-w0rd" not in res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert {r["outcome"] for r in doc["results"]} == {"error"}
    assert all("\n" not in r["message"] and r["message"] for r in doc["results"])


def test_ctrl_c_runs_cleanups_and_exits_130(cli: CliRunner, sandbox: RunningSandbox) -> None:
    cli.use_sandbox(sandbox)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackprobe", "run", "--sandbox", "--capability", "sessions", "--format", "json"],
        env=cli.env(), cwd=cli.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = redis.Redis.from_url(sandbox.redis_url)
    deadline = time.monotonic() + 20
    while not client.keys("stackprobe-2*session*") and time.monotonic() < deadline:
        time.sleep(0.02)  # wait until the run has created sessions
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["interrupted"] is True
    assert client.keys(f"*{doc['run_id']}*") == []
    client.close()


def test_sandbox_up_twice_down_and_missing_binary(tmp_path: Path) -> None:
    runner = CliRunner(state_dir=tmp_path / "state", cwd=tmp_path)
    try:
        first = runner("sandbox", "up")
        assert first.code == 0, first.stderr
        pids = (tmp_path / "state/sandbox/redis/pid").read_text()
        again = runner("sandbox", "up")
        assert again.code == 0 and "already running" in again.stderr
        assert (tmp_path / "state/sandbox/redis/pid").read_text() == pids
        status = runner("sandbox", "status")
        assert status.code == 0 and status.stdout.count("ready") == len(all_components())
        pid = int(pids.split()[0])
        # Redis stopped: every check errors with a one-line cause, exit 1, no traceback
        os.kill(pid, signal.SIGTERM)
        while (
            Path(f"/proc/{pid}").exists()
            and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
        ):
            time.sleep(0.02)
        res = runner("run", "--sandbox", "--format", "json")
        assert res.code == 1
        no_traceback(res.stdout, res.stderr)
        doc = json.loads(res.stdout)
        on_redis = [r for r in doc["results"] if r["kind"] in ("redis", "celery")]
        assert {r["outcome"] for r in on_redis} == {"error"}
        assert all(r["message"].startswith("redis: cannot connect to 127.0.0.1:") for r in on_redis)
        # `up` restarts what died, and the worker that depends on it
        again = runner("sandbox", "up")
        assert again.code == 0 and "celery-worker: stopped" in again.stderr
        assert runner("run", "--sandbox").code == 0
        pids = (tmp_path / "state/sandbox/redis/pid").read_text()
        pid = int(pids.split()[0])
        down = runner("sandbox", "down")
        assert down.code == 0 and f"{len(all_components())} process(es)" in down.stdout
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )
    finally:  # a failure above must not leave the whole sandbox running
        Sandbox(root=tmp_path / "state" / "sandbox").down()
    assert runner("sandbox", "status").code == 1
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    missing = runner("sandbox", "up", PATH=str(empty))
    assert missing.code == 2
    wanted = next(c for c in all_components() if "/" not in c.binary)  # found on PATH
    assert missing.stderr.strip() == (
        f"stackprobe: {wanted.binary} is not installed: run {wanted.install}"
    )
    assert os.environ.get("PATH")  # the test's own PATH is untouched
