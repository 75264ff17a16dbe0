"""The pytest plugin, tested the way pytest's own docs show: `pytester` runs pytest on test files.

The stacks point at the session sandbox's real Redis and Celery worker.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import redis
import yaml

from stackprobe.catalog import known_kinds
from tests.conftest import RunningSandbox, free_port

pytest_plugins = ["pytester"]


def write_stack(pytester: pytest.Pytester, services: dict[str, object]) -> Path:
    path = pytester.path / "stack.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "stack": "plugin-test", "services": services}))
    return path


def sandbox_services(sandbox: RunningSandbox, **cache_extra: object) -> dict[str, object]:
    """Only the sandbox's Redis and Celery worker: the items stay few and fast."""
    worker = sandbox.stack.service("worker")
    return {
        "cache": {"kind": "redis", "url": sandbox.redis_url, "links": {"celery": "worker"}}
        | cache_extra,
        "worker": {
            "kind": "celery",
            "url": worker.url,
            "endpoints": dict(worker.endpoints),
            "options": dict(worker.options),
        },
    }


@pytest.fixture
def stack(pytester: pytest.Pytester, sandbox: RunningSandbox) -> Path:
    return write_stack(pytester, sandbox_services(sandbox))


def matrix_row(output: str, service: str) -> list[str]:
    """The cells of one service's row in the printed coverage matrix."""
    row = next(line for line in output.splitlines() if line.startswith(f"│ {service} "))
    return [cell.strip() for cell in row.split("│")[2:-1]]


def test_catalog_items_are_named_check_id_and_service(
    pytester: pytest.Pytester, stack: Path
) -> None:
    result = pytester.runpytest(
        "--stackprobe", f"--stackprobe-config={stack}", "--collect-only", "-q"
    )
    assert result.ret == 0
    collected = {line for line in result.outlines if re.fullmatch(r"[a-z-]+\.\S+\[\w+\]", line)}
    expected = {f"{c.id}[cache]" for c in known_kinds()["redis"].checks} | {
        f"{c.id}[worker]" for c in known_kinds()["celery"].checks
    }
    assert collected == expected
    result.stdout.fnmatch_lines([f"*{len(expected)} tests collected*"])


def test_items_run_the_checks_select_by_marker_and_print_the_matrix(
    pytester: pytest.Pytester, stack: Path
) -> None:
    xml = pytester.path / "junit.xml"
    result = pytester.runpytest(
        "--stackprobe", f"--stackprobe-config={stack}", "-m", "sp_redis_connectivity or sp_celery_workers",
        "-v", f"--junitxml={xml}",
    )  # fmt: skip
    result.assert_outcomes(passed=2, deselected=len(known_kinds()["redis"].checks) - 1)
    result.stdout.fnmatch_lines(
        [
            "*redis.connectivity.ping?cache? PASSED*",
            "*celery.workers.ping?worker? PASSED*",
            "*stackprobe coverage*",
            "coverage 28.6% (2/7 capabilities) · stack plugin-test · run *",
        ]
    )
    output = result.stdout.str()
    assert matrix_row(output, "cache")[0] == "passed"
    assert matrix_row(output, "cache")[1:6] == ["not run"] * 5
    assert matrix_row(output, "worker") == ["passed", "100%"]
    assert f"stackprobe run -c {stack} --service cache --capability sessions" in output
    cases = ET.parse(xml).getroot().findall(".//testcase")
    assert sorted(c.get("name") or "" for c in cases) == [
        "celery.workers.ping[worker]",
        "redis.connectivity.ping[cache]",
    ]


def test_a_marked_user_test_changes_the_matrix_and_fixtures_clean_up(
    pytester: pytest.Pytester, stack: Path, sandbox: RunningSandbox
) -> None:
    names = pytester.path / "names.txt"
    pytester.makepyfile(
        test_mine=f"""
        import pathlib

        import pytest

        @pytest.mark.stackprobe(kind="redis", capability="sessions")
        def test_session_round_trip(redis_client):
            key = redis_client.key("session")
            assert key.startswith(redis_client.ns)
            redis_client.client.set(key, "user-1", px=60_000)
            assert redis_client.client.get(key) == b"user-1"
            assert redis_client.run(redis_client.aclient.exists(key)) == 1
            pathlib.Path({str(names)!r}).write_text(key)

        @pytest.mark.sp_redis_operations
        def test_fails():
            assert 1 + 1 == 3, "arithmetic is broken"
        """
    )
    result = pytester.runpytest(
        f"--stackprobe-config={stack}", "--stackprobe", "-k", "connectivity or test_mine"
    )
    result.assert_outcomes(
        passed=2, failed=1, deselected=len(known_kinds()["redis"].checks) - 1 + 1
    )
    output = result.stdout.str()
    # connectivity from the catalog, sessions from the user's test, operations failed
    assert matrix_row(output, "cache")[:3] == ["passed", "failed", "passed"]
    assert (
        "cache operations failed: pytest:test_mine.py::test_fails: AssertionError: arithmetic is broken\n"
        in output
    )
    key = names.read_text()
    assert re.fullmatch(r"stackprobe-\d{8}T\d{6}Z-[0-9a-f]{6}-[0-9a-f]{6}-session", key)
    client = redis.Redis.from_url(sandbox.redis_url)
    assert client.exists(key) == 0  # deleted by name after the test
    client.close()


def test_marked_tests_alone_make_a_matrix_and_fail_under_101_fails_the_session(
    pytester: pytest.Pytester, stack: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.stackprobe(kind="redis", capability="connectivity")
        def test_ping(redis_client):
            assert redis_client.client.ping() is True
        """
    )
    result = pytester.runpytest(f"--stackprobe-config={stack}", "--stackprobe-cov-fail-under=101")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "coverage 14.3% (1/7 capabilities)*",
            "stackprobe: coverage 14.3% is below --stackprobe-cov-fail-under 101%",
        ]
    )
    assert matrix_row(result.stdout.str(), "cache")[0] == "passed"
    assert (
        pytester.runpytest(f"--stackprobe-config={stack}", "--stackprobe-cov-fail-under=14").ret
        == 0
    )


def test_failed_check_is_a_test_failure_with_message_and_evidence(
    pytester: pytest.Pytester, sandbox: RunningSandbox
) -> None:
    stack = write_stack(pytester, sandbox_services(sandbox, expectations={"role": "slave"}))
    xml = pytester.path / "junit.xml"
    result = pytester.runpytest(
        "--stackprobe", f"--stackprobe-config={stack}", "-k", "connectivity", f"--junitxml={xml}"
    )
    result.assert_outcomes(failed=1, deselected=len(known_kinds()["redis"].checks) - 1 + 1)
    result.stdout.fnmatch_lines(
        [
            "*redis.connectivity.ping?cache?: PING answers*",
            "redis.connectivity.ping [cache] failed: role: expected 'slave' (expectations.role), saw 'master'",
            "evidence: {",
            '*"role": "master",*',
        ]
    )
    failure = ET.parse(xml).getroot().find(".//testcase/failure")
    assert failure is not None and "saw 'master'" in (failure.get("message") or "")
    assert matrix_row(result.stdout.str(), "cache")[0] == "failed"


def test_unreachable_service_errors_with_one_line_and_no_secret(pytester: pytest.Pytester) -> None:
    stack = write_stack(
        pytester,
        {"cache": {"kind": "redis", "url": f"redis://:pa55-w0rd@127.0.0.1:{free_port()}/0"}},
    )
    pytester.makepyfile(
        """
        def test_uses_redis(redis_client):
            raise AssertionError("never reached")
        """
    )
    result = pytester.runpytest(
        "--stackprobe", f"--stackprobe-config={stack}", "-k", "ping or uses_redis"
    )
    result.assert_outcomes(failed=1, errors=1, deselected=len(known_kinds()["redis"].checks) - 1)
    output = result.stdout.str()
    assert "redis.connectivity.ping [cache] error: redis: cannot connect to 127.0.0.1:" in output
    assert "cache (redis) is not usable: redis: cannot connect to 127.0.0.1:" in output
    assert "During handling" not in output and "pa55-w0rd" not in output


def test_failed_warning_is_xfail_and_disruptive_checks_skip(
    pytester: pytest.Pytester, bare_redis: int
) -> None:
    stack = write_stack(
        pytester, {"cache": {"kind": "redis", "url": f"redis://127.0.0.1:{bare_redis}/0"}}
    )
    result = pytester.runpytest(
        "--stackprobe", f"--stackprobe-config={stack}", "-k", "persistence", "-rxs"
    )
    result.assert_outcomes(passed=1, xfailed=1, deselected=len(known_kinds()["redis"].checks) - 2)
    result.stdout.fnmatch_lines(["XFAIL redis.persistence.configured?cache? - warning: *"])
    assert result.ret == 0


def test_inert_without_options_and_fixtures_skip_with_a_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_plain():
            assert True

        def test_redis(redis_client):
            raise AssertionError("never reached")
        """
    )
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    assert "stackprobe coverage" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        ["SKIPPED*no stack file: pass --stackprobe-config FILE or --stackprobe-sandbox*"]
    )


def test_fixtures_of_kinds_the_stack_lacks_skip_and_bad_markers_fail(
    pytester: pytest.Pytester, stack: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_consul(consul_client):
            raise AssertionError("never reached")

        def test_tempo(trace_store):
            raise AssertionError("never reached")

        @pytest.mark.stackprobe(kind="redis", capability="sesions")
        def test_typo():
            pass
        """
    )
    result = pytester.runpytest(f"--stackprobe-config={stack}", "-rsE")
    result.assert_outcomes(skipped=2, errors=1)
    output = result.stdout.str()
    assert re.search(
        r"consul_client: (the stack \S+ has no consul service|kind consul is not in)", output
    )
    assert re.search(
        r"trace_store: (the stack \S+ has no tempo or jaeger service|kind tempo or jaeger)", output
    )
    assert "@pytest.mark.stackprobe: redis has no capability 'sesions'" in output


def test_stackprobe_without_a_stack_is_a_usage_error(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKPROBE_STATE_DIR", str(tmp_path / "empty-state"))
    monkeypatch.delenv("STACKPROBE_CONFIG", raising=False)
    result = pytester.runpytest("--stackprobe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*stackprobe: no stack file: pass -c FILE*"])
    result = pytester.runpytest("--stackprobe", "--stackprobe-sandbox")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*stackprobe: no sandbox is running in *: run `stackprobe sandbox up` first"]
    )


def test_sandbox_option_uses_the_running_sandbox(
    pytester: pytest.Pytester, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACKPROBE_STATE_DIR", str(sandbox.state_dir))
    result = pytester.runpytest(
        "--stackprobe", "--stackprobe-sandbox", "-k", "redis and connectivity"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*stack sandbox*"])


@pytest.mark.skipif(
    importlib.util.find_spec("xdist") is None,
    reason="pytest-xdist is not installed (pip install pytest-xdist)",
)
def test_xdist_workers_share_one_stack_and_the_controller_prints_one_matrix(
    pytester: pytest.Pytester, stack: Path
) -> None:
    result = pytester.runpytest_subprocess(
        "--stackprobe", f"--stackprobe-config={stack}", "-n", "2", "-k", "not celery_queue"
    )
    result.assert_outcomes(passed=len(known_kinds()["redis"].checks))
    output = result.stdout.str()
    assert output.count("stackprobe coverage") == 1
    assert matrix_row(output, "cache") == ["passed"] * 3 + ["not run", "passed", "passed", "83.3%"]


def test_xdist_service_lock_keeps_an_exclusive_check_alone(tmp_path: Path) -> None:
    """On xdist workers, an exclusive check waits for the shared ones on its service (also
    those that only send traffic through it), and back."""
    import threading
    import time
    from types import SimpleNamespace
    from typing import Any, cast

    from stackprobe.pytest_plugin import _service_locks

    worker = cast(Any, SimpleNamespace(workerinput={"stackprobe_run_id": "r"}))
    run_id = f"test-{tmp_path.name}"
    events: list[str] = []
    inside = threading.Event()

    def exclusive() -> None:
        with _service_locks(worker, run_id, [("otel", True)]):
            events.append("exclusive in")
            inside.set()
            time.sleep(0.3)
            events.append("exclusive out")

    # a trace-store check: its own service, and shared on the collector its spans pass through
    with _service_locks(worker, run_id, [("otel", False), ("tracing", False)]):
        thread = threading.Thread(target=exclusive)
        thread.start()
        time.sleep(0.3)
        assert events == []  # held back while a check sending through it runs
        with _service_locks(worker, run_id, [("other", True)]):
            pass  # another service is not blocked
    assert inside.wait(5)
    with _service_locks(worker, run_id, [("otel", False)]):
        events.append("shared in")  # waits until the exclusive one is out
    thread.join(5)
    assert events == ["exclusive in", "exclusive out", "shared in"]
    for lock in Path(tempfile.gettempdir()).glob(f"stackprobe-{run_id}-*.lock"):
        lock.unlink()
