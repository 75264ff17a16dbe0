"""What a CI job after `docker compose up` needs (issue 14), against real services: `--wait`
and `stackprobe wait` on a sandbox still starting and on a dead service; the log of a failing
service in every report format, with a secret in that log redacted; the GitHub job summary
and the failures grouped per service at the end of the CI text output.

The Docker log source runs on the Docker Engine API stand-in (tests/standins/docker.py: no
engine runs here); the sandbox and file sources read real Redis logs.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml

from stackprobe.loader import load_stack
from stackprobe.report import RENDERERS
from stackprobe.results import RunResult
from stackprobe.runner import Runner, Selection, make_plan
from tests.conftest import CliRunner, RunningSandbox, free_port, need_binary
from tests.standins.docker import Container, DockerStandin

SECRET = "s3cr3t-ci-7f2b9d"  # the password of the test's Redis; must never reach a report
FORMATS = ("text", "json", "junit", "html", "markdown")


def redis_command(client: redis.Redis, *args: str) -> Any:
    """A raw command (DEBUG LOG, ACL SETUSER as written): redis-py 8 leaves execute_command
    untyped."""
    return cast(Any, client).execute_command(*args)


def write(tmp_path: Path, services: dict[str, Any]) -> Path:
    path = tmp_path / "stackprobe.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "stack": "ci", "services": services}))
    return path


# --- waiting -------------------------------------------------------------------------------


def test_run_started_with_sandbox_up_waits_for_it_and_passes(cli: CliRunner) -> None:
    """`stackprobe sandbox up & stackprobe run --sandbox --wait 60s`: the run is started
    first (so it surely finds no sandbox yet), `sandbox up` as soon as it says it waits."""
    need_binary("redis-server", "scripts/install-services redis")
    need_binary("consul", "scripts/install-services consul")

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "stackprobe", *args], cwd=cli.cwd, env=cli.env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    run = start("run", "--sandbox", "--wait", "60s", "--format", "json", "-o", "r.json")
    up: subprocess.Popen[str] | None = None
    try:
        assert run.stderr is not None
        first = run.stderr.readline()
        assert first.startswith("wait: sandbox: waiting: no sandbox running in "), first
        up = start("sandbox", "up")
        up_out, up_err = up.communicate(timeout=120)
        assert up.returncode == 0, up_out + up_err
        _, rest = run.communicate(timeout=300)
        assert run.returncode == 0, rest + (cli.cwd / "r.json").read_text()
        result = RunResult.load(cli.cwd / "r.json")
        waited = {n: s.waited_s for n, s in result.services.items() if n != "stack"}
        assert all(w is not None for w in waited.values()), waited
        for name, seconds in waited.items():  # the shape; the figure within rounding
            said = re.search(rf"wait: {name}: ready after (\d+(?:\.\d+)?) s", rest)
            assert said and abs(float(said.group(1)) - (seconds or 0)) <= 0.1, rest
        # it really waited: the worker starts last, after everything it needs is ready (on a
        # busy machine `sandbox up` can be done before the services' first probe: then none
        # printed "waiting", and the worker is still the last one ready)
        assert (waited["worker"] or 0) >= max(w or 0 for n, w in waited.items() if n != "worker")
    finally:
        for proc in (run, up):
            if proc is not None and proc.poll() is None:
                proc.kill()
        cli("sandbox", "down")


def test_a_dead_service_gets_its_checks_error_after_the_wait(
    cli: CliRunner, tmp_path: Path
) -> None:
    stack = write(
        tmp_path, {"cache": {"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"}}
    )
    started = time.monotonic()
    run = cli("run", "-c", str(stack), "--wait", "3s", "--format", "json", "-o", "r.json")
    took = time.monotonic() - started
    assert run.code == 1, run.stderr
    assert "wait: cache: waiting: " in run.stderr and "refused" in run.stderr, run.stderr
    result = RunResult.load(tmp_path / "r.json")
    assert result.results and {r.outcome.value for r in result.results} == {"error"}
    # "after 3 s" on an idle machine, "after 4 s" on a busy one: the shape
    assert all(re.match(r"not ready after \d+ s: ", r.message) for r in result.results), [
        r.message for r in result.results
    ]
    assert "refused" in result.results[0].message
    # the 3 s count from the command's start: loading the stack file comes out of them (0.2 s
    # on a busy machine), so the wait itself is a little shorter
    assert 2.5 <= (result.services["cache"].waited_s or 0) < 5 and took < 30

    alone = cli("wait", "-c", str(stack), "--timeout", "2s")
    assert alone.code == 1, alone.stderr
    assert re.search(r"cache: not ready after \d+ s: ", alone.stderr), alone.stderr
    assert "0 of 1 service(s) ready" in alone.stdout


def test_wait_alone_exits_0_when_every_service_is_alive(
    cli: CliRunner, sandbox: RunningSandbox
) -> None:
    cli.use_sandbox(sandbox)
    done = cli("wait", "--sandbox", "--timeout", "30s")
    assert done.code == 0, done.stderr
    assert "wait: cache: ready after" in done.stderr
    assert f"{len(sandbox.stack.services) - 1} of {len(sandbox.stack.services) - 1}" in done.stdout


def test_wait_refuses_a_duration_without_unit(cli: CliRunner, tmp_path: Path) -> None:
    stack = write(tmp_path, {"cache": {"kind": "redis", "url": "redis://127.0.0.1:1/0"}})
    bad = cli("run", "-c", str(stack), "--wait", "90")
    assert bad.code == 2 and bad.stderr.strip().startswith("--wait: '90' is not a duration")
    assert "Traceback" not in bad.stderr


# --- the log of a failing service ----------------------------------------------------------


@pytest.fixture
def secret_redis(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(stack file, log) of a Redis of this test's own with a password, logging to a file
    the stack file names in `logs:` (relative to it), where SET is denied (so checks that
    write fail) and the password was written into its log by Redis itself."""
    need_binary("redis-server", "scripts/install-services redis")
    port = free_port()
    log = tmp_path / "redis.log"
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--logfile", str(log),
         "--requirepass", SECRET, "--enable-debug-command", "local"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, password=SECRET, socket_timeout=2)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        redis_command(client, "DEBUG", "LOG", f"app connected with password {SECRET}")
        redis_command(client, "ACL", "SETUSER", "default", "-set")
        stack = write(tmp_path, {"cache": {
            "kind": "redis", "url": f"redis://:{SECRET}@127.0.0.1:{port}/0",
            "logs": {"file": "redis.log"},
        }})  # fmt: skip
        yield stack, log
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_a_failing_check_shows_the_log_in_every_format_with_the_secret_redacted(
    cli: CliRunner, tmp_path: Path, secret_redis: tuple[Path, Path]
) -> None:
    stack, log = secret_redis
    summary = tmp_path / "summary.md"
    for fmt in FORMATS:
        run = cli("run", "-c", str(stack), "--format", fmt, "-o", f"report.{fmt}",
                  "--log-lines", "20", CI="true", GITHUB_STEP_SUMMARY=str(summary))  # fmt: skip
        assert run.code == 1, run.stderr
        report = (tmp_path / f"report.{fmt}").read_text()
        assert "Ready to accept connections" in report, (fmt, report[-2000:])
        assert "app connected with password" in report, fmt
        assert SECRET not in report + run.stderr, fmt
        assert f"file {log}" in report, fmt
    junit = (tmp_path / "report.junit").read_text()
    assert "<system-out>log of cache (file " in junit
    assert "<details" in (tmp_path / "report.html").read_text()
    assert "<details><summary>Last " in (tmp_path / "report.markdown").read_text()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["services"]["cache"]["logs"]["lines"]) <= 20

    # `stackprobe report`: the last saved run again, as HTML, without running it again
    again = cli("report", "--format", "html", "-o", "again.html")
    assert again.code == 0, again.stderr
    html = (tmp_path / "again.html").read_text()
    assert "app connected with password ***" in html and SECRET not in html
    (tmp_path / "foreign.json").write_text('{"not": "a run"}')
    foreign = cli("report", str(tmp_path / "foreign.json"))
    assert foreign.code == 2 and len(foreign.stderr.strip().splitlines()) == 1, foreign.stderr

    # GITHUB_STEP_SUMMARY: every run appended its verdict and its failures
    text = summary.read_text()
    assert text.count("### ❌ stackprobe FAILED: ci") == len(FORMATS), text
    assert "| cache | `redis." in text and "no permissions to run the 'set' command" in text, text
    assert SECRET not in text


def test_ci_text_output_ends_with_failures_per_service_and_rerun_commands(
    cli: CliRunner, secret_redis: tuple[Path, Path]
) -> None:
    stack, _ = secret_redis
    run = cli("run", "-c", str(stack), "--log-lines", "3", CI="true")
    assert run.code == 1
    tail = run.stdout[run.stdout.index("failures by service (") :]
    assert tail.splitlines()[1] == "  cache (redis):", tail
    assert "no permissions to run the 'set' command" in tail
    assert f"rerun: stackprobe run -c {stack} --service cache --capability " in tail
    assert "last 3 lines of the log of cache (file " in run.stdout
    assert SECRET not in run.stdout + run.stderr

    quiet = cli("run", "-c", str(stack), "--log-lines", "0", CI="false")
    assert quiet.code == 1 and "of the log of" not in quiet.stdout
    assert "failures by service" not in quiet.stdout  # not CI


def test_the_sandbox_redis_log_is_shown_for_a_failing_sandbox_check(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    """The sandbox source: the log file of the process the sandbox runs. A user of the test's
    own (ACL, removed afterwards) may not SET, so the write checks fail for real; a line with
    its password is appended to the sandbox Redis log as an application would write it."""
    user = f"stackprobe-ci-{free_port()}"
    admin = redis.Redis.from_url(sandbox.redis_url)
    redis_command(admin, "ACL", "SETUSER", user, "on", f">{SECRET}", "~*", "&*", "+@all", "-set")
    log = sandbox.sandbox.process("cache").log
    with log.open("a") as out:
        out.write(f"app: connecting as {user}:{SECRET}\n")
    try:
        doc = yaml.safe_load(sandbox.sandbox.stack_file.read_text())
        doc["services"]["cache"]["url"] = sandbox.redis_url.replace("://", f"://{user}:{SECRET}@")
        path = tmp_path / "stackprobe.yaml"
        path.write_text(yaml.safe_dump(doc))
        plan = make_plan(load_stack(path), Selection(services=("cache",)))
        result = asyncio.run(Runner(plan, processes=sandbox.sandbox, log_lines=30).run())
    finally:
        redis_command(admin, "ACL", "DELUSER", user)
        admin.close()
    assert result.exit_code == 1
    logs = result.services["cache"].logs
    assert logs is not None and logs.source == f"sandbox log {log}"
    assert f"app: connecting as {user}:***" in logs.lines, logs.lines[-5:]
    for fmt in FORMATS:
        report = RENDERERS[fmt](result, False)
        assert f"app: connecting as {user}:" in report, fmt
        assert SECRET not in report, fmt


# --- Docker Engine logs (stand-in) ----------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[DockerStandin]:
    short = Path(tempfile.mkdtemp(prefix="sp-docker-", dir="/tmp"))
    standin = DockerStandin(short / "docker.sock")
    try:
        with standin:
            yield standin
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_a_compose_service_log_comes_from_the_docker_engine(
    tmp_path: Path, engine: DockerStandin
) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("name: shop\nservices:\n  redis:\n    image: redis:7.4\n")
    dead = free_port()
    box = engine.add(Container("shop", "redis", "redis:7.4"))
    box.log = [(1, "1:M 01 Dec 2026 * Ready to accept connections tcp"),
               (2, f"1:M # warning: password {SECRET} in the environment"),
               (1, "1:signal-handler Received SIGTERM scheduling shutdown...")]  # fmt: skip
    stack = write(tmp_path, {
        "app": {"kind": "compose", "url": str(compose), "options": {"docker_host": engine.host}},
        "cache": {"kind": "redis", "url": f"redis://:{SECRET}@127.0.0.1:{dead}/0",
                  "container": "redis"},
    })  # fmt: skip
    plan = make_plan(load_stack(stack), Selection(services=("cache",)))
    result = asyncio.run(Runner(plan, log_lines=2).run())
    logs = result.services["cache"].logs
    assert logs is not None and logs.source == f"docker logs redis ({box.id[:12]})"
    assert logs.lines == [
        "1:M # warning: password *** in the environment",  # stderr frame, redacted
        "1:signal-handler Received SIGTERM scheduling shutdown...",
    ]
    assert "GET /containers/" + box.id + "/logs" in engine.requests


def test_a_tty_container_log_is_read_raw(tmp_path: Path, engine: DockerStandin) -> None:
    from stackprobe.compose.engine import DockerEngine

    box = engine.add(Container("shop", "redis", "redis:7.4", tty=True))
    box.log = [(1, "one"), (1, "two"), (1, "three")]

    async def read() -> list[str]:
        async with DockerEngine.open(engine.host) as docker:
            return await docker.logs(box.id, 2)

    assert asyncio.run(read()) == ["two", "three"]


# --- the CI jobs README documents -----------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_ci_jobs_parse_and_run_the_documented_commands(cli: CliRunner) -> None:
    """The GitHub Actions and GitLab CI jobs are valid YAML that start the reference stack,
    run with --wait and JUnit, render the HTML from that run and upload both; every
    stackprobe option they use is one the CLI accepts (`--help` lists it)."""
    section = README.read_text().split("## In CI", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    assert len(blocks) == 2
    github, gitlab = (yaml.safe_load(b) for b in blocks)
    steps = github["jobs"]["infrastructure"]["steps"]
    runs = [s.get("run", "") for s in steps]
    script = gitlab["infrastructure"]["script"]
    for commands in (runs, script):
        text = "\n".join(commands)
        assert "docker compose -f deploy/compose/docker-compose.yml up -d" in text
        assert (
            "stackprobe run -c deploy/compose/stackprobe.yaml --wait 120s --format junit -o report.xml"
            in text
        )
        assert "stackprobe report --format html -o report.html" in text
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"].split() == ["report.xml", "report.html"]
    assert gitlab["infrastructure"]["artifacts"]["reports"]["junit"] == "report.xml"
    for verb, options in (
        ("run", ("--wait", "--format", "-o", "-c")),
        ("report", ("--format", "-o")),
    ):
        helped = cli(verb, "--help")
        assert helped.code == 0 and all(o in helped.stdout for o in options), helped.stdout
