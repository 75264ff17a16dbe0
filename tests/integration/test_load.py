"""`stackprobe load` against the sandbox's real services, a Toxiproxy of the test's own, and the
ArangoDB and Grafana stand-ins: honest figures, SLO verdicts, distributed workers, cleanup."""

from __future__ import annotations

import asyncio
import json
import os
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

from stackprobe.load.histogram import Histogram
from stackprobe.loader import load_stack
from stackprobe.results import RunResult
from stackprobe.runner import Runner, Selection, stack_plan
from stackprobe.services.stack_load import LoadRequest, load_spec
from tests.conftest import CliRunner, RunningSandbox, free_port
from tests.integration.helpers import run_stack, write_stack
from tests.standins.arangodb import ArangoStandin
from tests.standins.grafana import GrafanaStandin

TOXIPROXY = Path.home() / ".cache/stackprobe/bin/toxiproxy-server"
USER_KEYS = {"app:config": b"\x00\xffbinary", "app:counter": b"7", "stackprobe-notarun": b"user"}


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(sandbox.redis_url)
    yield c
    c.close()


def snapshot(c: redis.Redis) -> dict[bytes, Any]:
    return {
        k: c.dump(k) for k in c.keys("*") if isinstance(k, bytes) and not k.startswith(b"_kombu")
    }


def evidence(doc: dict[str, Any]) -> dict[str, Any]:
    (result,) = [r for r in doc["results"] if r["capability"] == "load"]
    return dict(result["evidence"])


def run_load(path: Path, service: str, sandbox: bool = True, **request: Any) -> RunResult:
    """One load through the real runner, in this process (what `stackprobe load` runs)."""
    stack = load_stack(path)
    req = LoadRequest(service=service, telemetry=False, **request)
    plan = stack_plan(
        stack,
        [load_spec(req, stack.service(service).kind)],
        Selection(allow_disruption=True, sandbox=sandbox),
    )
    return asyncio.run(Runner(plan).run())


# --- the done-when commands ----------------------------------------------------------------------


def test_2000_ops_per_second_reaches_the_rate_with_percentiles_and_windowed_verdicts(
    cli: CliRunner, sandbox: RunningSandbox, client: redis.Redis
) -> None:
    cli.use_sandbox(sandbox)
    for key, value in USER_KEYS.items():
        client.set(key, value)
    before = snapshot(client)
    res = cli("load", "cache", "--sandbox", "--rate", "2000", "--duration", "5", "--format", "json")
    doc = json.loads(res.stdout)
    e = evidence(doc)
    (result,) = doc["results"]
    assert res.code == (0 if result["outcome"] == "passed" else 1), res.stderr
    o = e["overall"]
    assert abs(o["rate"] - 2000) / 2000 <= 0.05, o
    assert o["attempts"] == 10_000 and o["target_rate"] == 2000
    assert 0 < o["p50_ms"] <= o["p90_ms"] <= o["p99_ms"] <= o["p999_ms"] <= o["max_ms"]
    assert e["slo"]["targets"] == {"p99_ms": 100.0, "error_rate": 0.001, "window": "5s"}
    assert len(e["windows"]) == 1 and e["slo"]["window_s"] == 5  # one 5 s window
    assert e["slo"]["passed"] == (not e["slo"]["breaches"])
    assert e["slo"]["passed"] == all(w["passed"] for w in e["windows"]) or any(
        b.startswith("overall") for b in e["slo"]["breaches"]
    )
    assert set(e["generator"]) >= {"bound", "reason", "rule", "processes", "queued"}
    assert doc["coverage"]["services"]["stack"]["capabilities"]["load"] == result["outcome"]
    assert snapshot(client) == before  # user data byte for byte, nothing of the run left
    assert client.keys(f"*{doc['run_id']}*") == []


def test_max_throughput_reports_its_rate_and_flags_the_generator(
    cli: CliRunner, sandbox: RunningSandbox
) -> None:
    cli.use_sandbox(sandbox)
    refused = cli("load", "cache", "--sandbox", "--max", "--duration", "2")
    assert refused.code == 2 and "--allow-disruption" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    res = cli("load", "cache", "--sandbox", "--max", "--duration", "2", "--allow-disruption",
              "--concurrency", "4", "--format", "json")  # fmt: skip
    assert res.code == 0, res.stderr
    (result,) = json.loads(res.stdout)["results"]
    e = result["evidence"]
    assert e["mode"] == "closed-loop maximum throughput" and e["overall"]["rate"] > 1000
    # one Python process against a C server on two cores: the generator is the bottleneck,
    # and says so instead of passing its own queueing off as Redis's latency
    assert e["generator"]["bound"] is True, e["generator"]
    assert "generator-bound" in result["message"] and "(max)" in result["message"]


def test_a_5ms_latency_toxic_is_seen_as_the_services_latency_and_fails_a_2ms_slo(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    if not TOXIPROXY.is_file():  # install-services builds it into its cache, not onto PATH
        message = f"{TOXIPROXY} is not installed: run scripts/install-services toxiproxy"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    api_port, proxy_port = free_port(), free_port()
    upstream = sandbox.redis_url.split("//")[1].split("/")[0]
    proc = subprocess.Popen(
        [str(TOXIPROXY), "-host", "127.0.0.1", "-port", str(api_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{api}/version", timeout=0.5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "toxiproxy did not start"
                time.sleep(0.05)
        httpx.post(f"{api}/proxies", json={"name": "redis", "listen": f"127.0.0.1:{proxy_port}", "upstream": upstream}).raise_for_status()  # fmt: skip
        httpx.post(f"{api}/proxies/redis/toxics", json={"type": "latency", "stream": "downstream", "attributes": {"latency": 5, "jitter": 0}}).raise_for_status()  # fmt: skip
        stack = write_stack(
            tmp_path,
            {"cache": {"kind": "redis", "url": f"redis://127.0.0.1:{proxy_port}/0",
                       "slo": {"p99_ms": 2, "window": "1s"}}},
        )  # fmt: skip
        result = run_load(stack, "cache", sandbox=False, rate=200, duration=3, concurrency=16)
    finally:
        proc.terminate()
        proc.wait(10)
    (r,) = result.results
    e = r.evidence
    assert r.outcome.value == "failed", r.message
    assert result.exit_code == 1
    assert e["overall"]["p50_ms"] >= 5.0 and e["service_time"]["p50_ms"] >= 5.0
    assert r.message.startswith("SLO breached: window 1 (0-1 s): p99_ms ≤ 2: saw ")
    assert all(not w["passed"] for w in e["windows"]) and len(e["windows"]) == 3


def test_two_workers_merge_their_histograms_into_one(
    cli: CliRunner, sandbox: RunningSandbox, client: redis.Redis
) -> None:
    cli.use_sandbox(sandbox)
    res = cli("load", "cache", "--sandbox", "--rate", "2000", "--duration", "5", "--workers", "2",
              "--format", "json", timeout=180)  # fmt: skip
    doc = json.loads(res.stdout)
    e = evidence(doc)
    assert res.code in (0, 1) and e["workers"] == {"expected": 2, "reported": 2, "lost": []}, (
        res.stderr
    )
    assert [p["name"] for p in e["generator"]["processes"]] == ["w0", "w1"]
    assert [p["issued"] for p in e["generator"]["processes"]] == [5000, 5000]
    merged = Histogram.decode(e["histogram"])
    assert merged.count == e["overall"]["ops"] == 10_000 - e["overall"]["errors"]
    assert abs(e["overall"]["rate"] - 2000) / 2000 <= 0.05
    assert client.keys(f"*{doc['run_id']}*") == []


def test_a_worker_that_dies_mid_run_is_reported_and_its_partial_seconds_kept(
    cli: CliRunner, sandbox: RunningSandbox, client: redis.Redis
) -> None:
    cli.use_sandbox(sandbox)
    port = free_port()
    main = subprocess.Popen(
        [sys.executable, "-m", "stackprobe", "load", "cache", "--sandbox", "--rate", "400",
         "--duration", "6", "--workers", "2", "--local-workers", "1",
         "--master-bind", f"127.0.0.1:{port}", "--format", "json"],
        env=cli.env(), cwd=cli.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    remote = subprocess.Popen(
        [sys.executable, "-m", "stackprobe", "load-worker", "--master", f"127.0.0.1:{port}", "--sandbox"],
        env=cli.env(), cwd=cli.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not client.keys("stackprobe-2*load-kv-*") and time.monotonic() < deadline:
            time.sleep(0.05)  # both workers joined and seeded their keys
        time.sleep(3)
        remote.kill()
        out, err = main.communicate(timeout=120)
    finally:
        remote.kill()
        main.kill()
    doc = json.loads(out)
    e = evidence(doc)
    assert e["workers"]["reported"] == 2 and len(e["workers"]["lost"]) == 1, err
    (result,) = doc["results"]
    assert main.returncode == 1 and result["outcome"] == "error"
    assert "1 of 2 worker(s) lost mid-run" in result["message"]
    (lost,) = e["workers"]["lost"]
    assert lost in e["lost_workers"]
    partial = [p for p in e["generator"]["processes"] if not p["complete"]]
    assert [p["name"] for p in partial] == [lost]
    # the survivor issued its whole share (1,200); what the lost one sent before is kept
    assert e["overall"]["attempts"] > 1200
    # the dead worker could not clean up: its keys carry the run prefix and a TTL
    left = client.keys(f"*{doc['run_id']}*")
    assert left and all(0 < int(client.pttl(k)) <= 600_000 for k in left)
    client.delete(*left)


def test_ctrl_c_stops_the_load_promptly_runs_cleanups_and_exits_130(
    cli: CliRunner, sandbox: RunningSandbox, client: redis.Redis
) -> None:
    cli.use_sandbox(sandbox)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackprobe", "load", "cache", "--sandbox", "--rate", "200",
         "--duration", "60", "--format", "json"],
        env=cli.env(), cwd=cli.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not client.keys("stackprobe-2*load-kv-*") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 10
    doc = json.loads(out)
    assert doc["interrupted"] is True
    assert client.keys(f"*{doc['run_id']}*") == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--rate", "-5"], "--rate: -5 is not in (0,"),
        (["--rate", "10", "--max"], "--rate and --max cannot be combined"),
        (["--duration", "2h"], "--duration: 2h is not between 0 and 3600 s"),
        (["--duration", "soon"], "--duration: 'soon' is not a duration"),
        (["--workload", "nope"], "--workload: redis has no workload 'nope' (known: get_set, session_touch, cache_aside)"),
        (["--compare", "/nonexistent.json"], "--compare /nonexistent.json: cannot read"),
        (["--rate", "5000"], "is disruptive: run it with --allow-disruption"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_and_exit_2(
    cli: CliRunner, sandbox: RunningSandbox, args: list[str], says: str
) -> None:
    cli.use_sandbox(sandbox)
    res = cli("load", "cache", "--sandbox", *args)
    assert res.code == 2, res.stderr
    assert says in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_an_unknown_service_or_a_kind_without_workload_is_exit_2(
    cli: CliRunner, sandbox: RunningSandbox
) -> None:
    cli.use_sandbox(sandbox)
    res = cli("load", "nosuch", "--sandbox")
    assert res.code == 2 and "SERVICE: no service 'nosuch'" in res.stderr
    res = cli("load", "worker", "--sandbox")
    assert res.code == 2 and "worker: kind celery has no load workload" in res.stderr


def test_a_baseline_flags_a_regression_percentile_by_percentile(
    cli: CliRunner, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    cli.use_sandbox(sandbox)
    base = tmp_path / "base.json"
    saved = cli(
        "load",
        "cache",
        "--sandbox",
        "--rate",
        "200",
        "--duration",
        "2",
        "--save-baseline",
        str(base),
    )
    assert saved.code == 0, saved.stderr
    document = json.loads(base.read_text())
    assert (
        document["workload"] == "get_set" and Histogram.decode(document["histogram"]).count == 400
    )
    fast = {**document, "overall": {**document["overall"], "p50_ms": 0.001, "p99_ms": 0.001}}
    base.write_text(json.dumps(fast))
    res = cli("load", "cache", "--sandbox", "--rate", "200", "--duration", "2", "--compare", str(base), "--format", "json")  # fmt: skip
    assert res.code == 1
    (result,) = json.loads(res.stdout)["results"]
    assert result["message"].startswith("regression against the baseline: p50_ms 0.001 → ")
    assert result["evidence"]["baseline"]["comparison"]["p99_ms"]["regressed"] is True
    slow = {**document, "overall": {k: (v * 1000 if k.endswith("_ms") else v) for k, v in document["overall"].items()}}  # fmt: skip
    base.write_text(json.dumps(slow))
    ok = cli(
        "load", "cache", "--sandbox", "--rate", "200", "--duration", "2", "--compare", str(base)
    )
    assert ok.code == 0, ok.stdout
    other = {**document, "workload": "cache_aside"}
    base.write_text(json.dumps(other))
    bad = cli(
        "load", "cache", "--sandbox", "--rate", "200", "--duration", "1", "--compare", str(base)
    )
    assert bad.code == 2 and bad.stderr.strip() == (
        f"--compare {base}: the baseline's workload is 'cache_aside', this run's is 'get_set'"
    )


# --- every workload on its kind's own client ---------------------------------------------------


REAL_WORKLOADS = [
    ("cache", "session_touch"),
    ("cache", "cache_aside"),
    ("discovery", "kv_read"),
    ("discovery", "kv_write"),
    ("discovery", "health_query"),
    ("metrics", "instant_query"),
    ("tracing", "lookup_by_id"),
    ("otel", "spans"),
]


@pytest.mark.parametrize(("service", "workload"), REAL_WORKLOADS)
def test_each_real_workload_runs_without_errors_and_leaves_nothing(
    sandbox: RunningSandbox, client: redis.Redis, service: str, workload: str
) -> None:
    before = snapshot(client)
    result = run_load(
        sandbox.sandbox.stack_file, service, workload=workload, rate=50, duration=1, concurrency=4
    )
    (r,) = result.results
    assert r.outcome.value == "passed", r.message
    assert r.evidence["overall"]["errors"] == 0 and r.evidence["overall"]["ops"] == 50
    assert r.evidence["workload"] == workload
    assert snapshot(client) == before
    if service == "discovery":
        url = sandbox.stack.service("discovery").url
        keys = httpx.get(f"{url}/v1/kv/stackprobe-", params={"keys": "true"})
        assert keys.status_code == 404 or [k for k in keys.json() if result.run_id in k] == []
        services = httpx.get(f"{url}/v1/agent/services").json()
        assert [s for s in services if result.run_id in s] == []


def test_the_standin_workloads_run_and_leave_the_standins_as_they_were(tmp_path: Path) -> None:
    """ArangoDB and Grafana cannot run here: their workloads run against the stand-ins."""
    with ArangoStandin(password="pw") as arango, GrafanaStandin(tokens=("tok",)) as grafana:
        grafana.add_datasource("prom", "Prometheus", "prometheus", "http://prom:9090", is_default=True)  # fmt: skip
        stack = write_stack(
            tmp_path,
            {
                "graphdb": {"kind": "arangodb", "url": arango.url, "password": "pw"},
                "dash": {"kind": "grafana", "url": grafana.url, "token": "tok"},
            },
        )
        before = arango.snapshot()
        for service, workload in (
            ("graphdb", "filtered_aql"),
            ("graphdb", "traversal"),
            ("dash", "panel_query"),
        ):
            result = run_load(stack, service, sandbox=False, workload=workload, rate=20, duration=1, concurrency=2)  # fmt: skip
            (r,) = result.results
            assert r.outcome.value == "passed", (workload, r.message)
            assert r.evidence["overall"]["errors"] == 0 and r.evidence["overall"]["ops"] == 20
        assert arango.snapshot() == before


def test_the_load_is_exported_live_through_the_collector_to_prometheus(
    cli: CliRunner, sandbox: RunningSandbox
) -> None:
    cli.use_sandbox(sandbox)
    res = cli("load", "cache", "--sandbox", "--rate", "100", "--duration", "3", "--format", "json")
    doc = json.loads(res.stdout)
    e = evidence(doc)
    assert e["telemetry"]["exported"] is True and e["telemetry"]["exports"] >= 3, e["telemetry"]
    assert e["telemetry"]["failed"] == 0
    prometheus = sandbox.stack.service("metrics").url
    query = f'stackprobe_load_rate{{run_id="{doc["run_id"]}",service="cache",workload="get_set"}}'
    deadline = time.monotonic() + 20
    while True:
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}).json()
        if answer["data"]["result"]:
            break
        assert time.monotonic() < deadline, f"{query} never reached Prometheus"
        time.sleep(0.5)
    assert float(answer["data"]["result"][0]["value"][1]) > 0


def test_a_run_holds_every_declared_slo_under_a_short_load(sandbox: RunningSandbox) -> None:
    stack = load_stack(sandbox.sandbox.stack_file)
    assert stack.service("cache").slo is not None  # the sandbox declares one

    result = run_stack(sandbox.sandbox.stack_file, capabilities=("load",))
    (r,) = [r for r in result.results if r.check == "stack.load.slo_smoke"]
    assert r.outcome.value == "passed", r.message
    assert r.evidence["services"]["cache"]["overall"]["ops"] == 100
    assert result.coverage.services["stack"].capabilities["load"] == "passed"


def test_slo_fields_are_validated_at_load_with_their_paths(cli: CliRunner, tmp_path: Path) -> None:
    stack = tmp_path / "stack.yaml"
    stack.write_text(yaml.safe_dump({"services": {"cache": {
        "kind": "redis", "url": "redis://127.0.0.1:1/0",
        "slo": {"p99": 5, "error_rate": 2, "window": "1500ms", "workloads": {"get_sett": {}}},
    }}}))  # fmt: skip
    res = cli("config", "check", "-c", str(stack))
    assert res.code == 2
    assert res.stderr.splitlines() == [
        f"{stack}: services.cache.slo.error_rate: Input should be less than or equal to 1 (got 2)",
        f"{stack}: services.cache.slo.window: '1500ms' must be a whole number of seconds, at least 1s",
        f"{stack}: services.cache.slo.p99: unknown field (did you mean 'p99_ms'?)",
    ]
    stack.write_text(yaml.safe_dump({"services": {"cache": {
        "kind": "redis", "url": "redis://127.0.0.1:1/0", "slo": {"workloads": {"get_sett": {}}}}}}))  # fmt: skip
    res = cli("config", "check", "-c", str(stack))
    assert res.code == 2 and res.stderr.strip() == (
        f"{stack}: services.cache.slo.workloads.get_sett: kind redis has no workload 'get_sett' "
        "(known: get_set, session_touch, cache_aside)"
    )
