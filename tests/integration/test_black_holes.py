"""Services that accept connections and never answer (the classic hung server), and services
that refuse them: every kind ends with every check `error` and a one-line cause, bounded by
one wait per service, never one per check (issue 16).

The black hole is a local TCP listener that accepts every connection and never reads or
writes. Two paths are shown for each kind: through the liveness gate (the run's default: all
checks `error` at once, "no answer within N s"), and with the gate taken away, where each
check meets the hung server itself and must still end within its timeout plus the cleanup
budget, sync clients in threads included (Celery's), with `asyncio.run` itself returning in
that time (no thread waited for at exit).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackprobe.catalog import known_kinds
from stackprobe.loader import load_stack
from stackprobe.results import RunResult
from stackprobe.runner import Runner, Selection, make_plan
from tests.conftest import CliRunner
from tests.integration.helpers import write_stack

LIVENESS = 1.0  # the gate's probe budget in these tests (the default is 5 s)
CHECK_TIMEOUT = 1.5
CLEANUP = 1.0
SLACK = 2.5  # scheduling on a busy two-core machine


class BlackHole:
    """Accepts every TCP connection on 127.0.0.1 and never answers; holds them open."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # never read, never answered, never closed

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.close()


def refused_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def services_at(port: int) -> dict[str, dict[str, Any]]:
    """One service of every kind (but compose and stack), all pointing at `port`."""
    http = f"http://127.0.0.1:{port}"
    return {
        "cache": {"kind": "redis", "url": f"redis://127.0.0.1:{port}/0"},
        "worker": {"kind": "celery", "url": f"redis://127.0.0.1:{port}/1"},
        "discovery": {"kind": "consul", "url": http},
        "metrics": {"kind": "prometheus", "url": http},
        "otel": {
            "kind": "otel-collector",
            "endpoints": {
                "otlp_http": http,
                "otlp_grpc": f"127.0.0.1:{port}",
                "health": http,
                "metrics": http,
            },
        },
        "jaeger": {"kind": "jaeger", "url": http, "endpoints": {"otlp_http": http}},
        "traces": {"kind": "tempo", "url": http, "endpoints": {"otlp_http": http}},
        "dash": {"kind": "grafana", "url": http},
        "db": {"kind": "arangodb", "url": http},
    }


KINDS = {svc["kind"]: name for name, svc in services_at(1).items()}


def one_kind_stack(tmp_path: Path, port: int, kind: str) -> Path:
    """A stack with the one service of `kind` (trace stores and the collector bring what they
    link to, all at the same port, so their checks have their roles filled)."""
    every = services_at(port)
    wanted = {KINDS[kind]}
    if kind in ("otel-collector",):
        wanted |= {"metrics", "traces"}
    return write_stack(tmp_path, {n: every[n] for n in wanted})


def run_timed(path: Path, **runner: Any) -> tuple[RunResult, float]:
    """Run the stack's checks through the engine; (result, seconds `asyncio.run` took: the
    run and the loop's shutdown, threads included)."""
    plan = make_plan(load_stack(path), Selection())
    started = time.monotonic()
    result = asyncio.run(Runner(plan, **runner).run())
    return result, time.monotonic() - started


def assert_all_errors(result: RunResult, kind: str, cause: str) -> None:
    mine = [r for r in result.results if r.kind == kind and r.outcome.value != "skipped"]
    assert mine, f"no {kind} checks ran"
    wrong = [(r.check, r.outcome.value, r.message) for r in mine if r.outcome.value != "error"]
    assert not wrong, wrong
    for r in mine:
        assert "\n" not in r.message and r.message, r
        assert re.search(cause, r.message), (r.check, r.message)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_black_holed_service_gets_every_check_error_after_one_liveness_wait(
    tmp_path: Path, black_hole: BlackHole, kind: str
) -> None:
    """Through the gate: one probe per service, then every check `error` at once."""
    path = one_kind_stack(tmp_path, black_hole.port, kind)
    result, took = run_timed(path, liveness_timeout=LIVENESS)
    assert_all_errors(result, kind, r"^no answer within 1 s \(liveness probe\)$")
    # one wait for the service, not one per check (a kind has 4-14 checks)
    assert took < LIVENESS + SLACK, took


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_black_holed_service_without_the_gate_ends_every_check_within_its_budget(
    tmp_path: Path, black_hole: BlackHole, kind: str
) -> None:
    """Without the liveness gate each check meets the hung server itself: it ends `error`
    within its timeout plus the cleanup budget, and nothing (a client's thread) holds the
    loop's shutdown after it."""
    ungated = {
        name: dataclasses.replace(k, liveness=None) if name == kind else k
        for name, k in known_kinds().items()
    }
    path = one_kind_stack(tmp_path, black_hole.port, kind)
    result, took = run_timed(
        path,
        kinds=ungated,
        timeout=CHECK_TIMEOUT,
        cleanup_timeout=CLEANUP,
        concurrency=64,
        liveness_timeout=LIVENESS,
    )
    mine = [r for r in result.results if r.kind == kind and r.outcome.value != "skipped"]
    assert mine
    for r in mine:
        assert r.outcome.value in ("error", "failed"), (r.check, r.outcome, r.message)
        assert r.message and "\n" not in r.message, r
        assert r.duration_s <= CHECK_TIMEOUT + CLEANUP + SLACK, (r.check, r.duration_s)
    # exclusive checks run one after another on their service; everything else at once
    alone = sum(1 for spec in ungated[kind].checks if spec.exclusive)
    assert took < (1 + alone) * (CHECK_TIMEOUT + CLEANUP) + SLACK, took


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_service_refusing_connections_fails_fast_once(tmp_path: Path, kind: str) -> None:
    """Connection refused: every check `error` with the refusal, well inside one probe."""
    path = one_kind_stack(tmp_path, refused_port(), kind)
    result, took = run_timed(path)
    assert_all_errors(result, kind, r"(?i)refused|cannot connect|connect")
    assert took < 5.0, took


def test_the_stack_kind_names_every_black_holed_member_with_its_cause(
    tmp_path: Path, black_hole: BlackHole
) -> None:
    """The stack's own checks can run (their service is the whole): they fail, naming each
    member that gave no answer, within one probe budget."""
    services: dict[str, Any] = services_at(black_hole.port)
    services["stack"] = {"kind": "stack"}
    services["otel"]["links"] = {"trace_store": "traces"}
    services["db"]["depends_on"] = ["cache"]
    path = write_stack(tmp_path, services)
    result, took = run_timed(path, liveness_timeout=LIVENESS)
    by_check = {r.check: r for r in result.results if r.kind == "stack"}
    alive = by_check["stack.service-health.all_alive"]
    assert alive.outcome.value == "failed", alive
    assert alive.message.startswith("9 of 9 service(s) not alive"), alive.message
    for name in services_at(1):
        assert alive.evidence["services"][name]["alive"] is False
    deps = by_check["stack.dependencies.depends_on_up"]
    assert deps.outcome.value == "failed" and "db depend(s) on cache" in deps.message, deps
    for r in result.results:
        if r.kind != "stack":
            assert r.outcome.value in ("error", "skipped"), r
    # the probes answer within the stack's PROBE_TIMEOUT (5 s each, all at once); the flow
    # meets every hung hop itself: each stack check ends within its timeout + the cleanup budget
    assert alive.duration_s < 5.0 + SLACK and deps.duration_s < 5.0 + SLACK, (alive, deps)
    budgets = {s.id: (s.timeout or 10.0) + 5.0 for s in known_kinds()["stack"].checks}
    for r in by_check.values():
        assert r.duration_s <= budgets[r.check] + SLACK, (r.check, r.duration_s)
    assert took < max(budgets.values()) + SLACK, took


def test_run_over_a_black_holed_stack_of_eight_kinds_exits_1_within_20_s(
    tmp_path: Path, black_hole: BlackHole, cli: CliRunner
) -> None:
    """`stackprobe run` with its defaults (5 s liveness, 10 s check timeout): exit 1, every
    check `error` with one line, in one wait (issue 16: it took 107 s)."""
    every: dict[str, object] = dict(services_at(black_hole.port))
    del every["jaeger"]  # eight kinds: a trace store of each would need a link to choose
    path = write_stack(tmp_path, every)
    started = time.monotonic()
    done = cli("run", "-c", str(path), "--format", "json", timeout=60)
    took = time.monotonic() - started
    assert done.code == 1, done.stderr
    assert took < 20, took
    import json

    doc = json.loads(done.stdout)
    assert {r["kind"] for r in doc["results"]} >= set(KINDS) - {"jaeger"}
    ran = [r for r in doc["results"] if r["outcome"] != "skipped"]
    assert len(ran) > 40
    for r in ran:
        assert r["outcome"] == "error", r
        assert r["message"] and "\n" not in r["message"], r
        # celery's broker client gives up first (its 3 s socket timeout) and says so
        assert re.search(r"no answer within 5 s|Timeout reading from", r["message"]), r
    assert "Traceback" not in done.stderr
