"""The load engine without a service: histograms merge exactly, the schedule is open loop and
coordinated-omission corrected, the generator says when it is the bottleneck, SLO windows,
baselines, and the verdict rules."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest

from stackprobe.check import CheckFailed
from stackprobe.config import Slo, SloTargets
from stackprobe.errors import ConfigError
from stackprobe.load.analysis import analyse
from stackprobe.load.baseline import read_baseline, regressions, require_comparable
from stackprobe.load.engine import Profile, Tick, run_load
from stackprobe.load.histogram import Histogram, merged
from stackprobe.load.locust.absences import Absences
from stackprobe.load.slo import judge
from stackprobe.load.timeline import Second, Timeline
from stackprobe.services.stack_load import GeneratorBound, verdict


def samples(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(-8, 1.2) for _ in range(n)]


# --- histograms --------------------------------------------------------------------------------


def test_merged_worker_histograms_equal_one_histogram_of_every_sample() -> None:
    values = samples(30_000, 1)
    everything = Histogram()
    workers = [Histogram() for _ in range(3)]
    for i, v in enumerate(values):
        everything.record(v)
        workers[i % 3].record(v)
    # what travels between processes is the encoding; merging it is exact, bucket by bucket
    merged_total = merged([w.encode() for w in workers])
    assert merged_total.counts() == everything.counts()
    assert merged_total.summary() == everything.summary()


def test_timelines_of_workers_merge_second_by_second_exactly() -> None:
    values = samples(12_000, 2)
    everything = Histogram()
    per_worker: list[Timeline] = [Timeline(), Timeline()]
    for w, timeline in enumerate(per_worker):
        for second in range(3):
            h = Histogram()
            chunk = values[(w * 3 + second) * 2000 : (w * 3 + second + 1) * 2000]
            for v in chunk:
                h.record(v)
                everything.record(v)
            timeline.seconds[second] = Second(ops=len(chunk), latency=h.encode())
    master = Timeline()
    for timeline in per_worker:  # as the Locust master adds what each worker sent
        for second, record in timeline.seconds.items():
            master.add_second(second, Second.from_json(json.loads(json.dumps(record.to_json()))))
    assert master.histogram().counts() == everything.counts()
    assert master.counts()[0] == len(values)


def test_fast_percentiles_are_hdrhistograms_own() -> None:
    h = Histogram()
    for v in samples(5000, 3):
        h.record(v)
    for p in (0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        assert h.value_ms(p) == round(h.hdr.get_value_at_percentile(p) / 1000, 3)


# --- the engine ----------------------------------------------------------------------------------


def run(lanes: list, profile: Profile, ticks: list[Tick] | None = None) -> Timeline:  # type: ignore[type-arg]
    return asyncio.run(
        run_load(lanes, profile, on_tick=ticks.append if ticks is not None else None)
    )


def test_open_loop_issues_exactly_rate_times_duration_and_reaches_the_rate() -> None:
    async def op() -> None:
        await asyncio.sleep(0.001)

    ticks: list[Tick] = []
    profile = Profile(rate=400, duration=1.5, concurrency=8)
    timeline = run([op] * 8, profile, ticks)
    a = analyse(timeline, profile, None)
    assert timeline.generators[0].issued == 600
    assert a.overall["ops"] == 600 and a.overall["errors"] == 0
    assert abs(a.overall["rate"] - 400) / 400 < 0.05
    assert ticks and ticks[-1].total_ops == 600


def test_a_stall_counts_for_every_operation_queued_behind_it() -> None:
    """Coordinated omission: one 300 ms stall at 100 ops/s delays ~30 operations. Measured from
    their intended start they all show it; the service time shows it once."""
    state = {"n": 0}

    async def op() -> None:
        state["n"] += 1
        await asyncio.sleep(0.3 if state["n"] == 20 else 0.0005)

    profile = Profile(rate=100, duration=1.5, concurrency=1)
    a = analyse(run([op], profile), profile, None)
    latency = Histogram.decode(a.evidence["histogram"])
    slow = sum(c for v, c in latency.counts().items() if v > 100_000)
    assert slow >= 15, f"only {slow} operations show the stall"
    assert a.evidence["service_time"]["p90_ms"] < 50  # without waiting, only one was slow
    assert a.evidence["generator"]["queued"] >= 15
    assert a.generator.limited_by == "concurrency"


def test_a_generator_that_burns_its_cpu_says_it_is_the_bottleneck() -> None:
    def burn() -> None:
        until = time.perf_counter() + 0.002
        while time.perf_counter() < until:
            pass

    async def op() -> None:
        burn()  # the generator's own work: 2 ms of CPU per operation at 1,000 ops/s

    profile = Profile(rate=1000, duration=0.5, concurrency=4)
    a = analyse(run([op] * 4, profile), profile, None)
    assert a.generator.bound and "was busy" in a.generator.reason
    assert a.rate_short
    with pytest.raises(GeneratorBound, match=r"generator-bound .*rate asked for was not reached"):
        verdict(a, profile, [])


def test_closed_loop_measures_throughput_for_the_duration() -> None:
    async def op() -> None:
        await asyncio.sleep(0)

    profile = Profile(rate=None, duration=0.5, concurrency=2)
    a = analyse(run([op] * 2, profile), profile, None)
    assert a.evidence["mode"] == "closed-loop maximum throughput"
    assert a.overall["ops"] > 100 and a.overall["target_rate"] is None
    assert 0.45 < a.overall["duration_s"] < 1.5
    assert a.generator.bound  # nothing but the generator's own loop was busy
    assert "(max)" in verdict(a, profile, [])


def test_errors_are_counted_by_kind_and_not_timed_as_successes() -> None:
    state = {"n": 0}

    async def op() -> None:
        state["n"] += 1
        if state["n"] % 4 == 0:
            raise ConnectionError("connection refused")

    profile = Profile(rate=200, duration=0.5, concurrency=2)
    a = analyse(run([op] * 2, profile), profile, SloTargets(error_rate=0.01))
    assert a.overall["errors"] == 25 and a.overall["ops"] == 75
    assert a.evidence["error_kinds"] == {"ConnectionError: connection refused": 25}
    assert a.slo_passed is False


# --- SLO windows ---------------------------------------------------------------------------------


def timeline_of(per_second: list[list[float]]) -> Timeline:
    timeline = Timeline()
    for i, values in enumerate(per_second):
        h = Histogram()
        for v in values:
            h.record(v)
        timeline.seconds[i] = Second(ops=len(values), latency=h.encode() if values else "")
    return timeline


def test_a_breach_in_one_window_fails_although_the_whole_run_meets_the_bound() -> None:
    fast, slow = [0.001] * 1000, [0.001] * 970 + [0.050] * 30
    timeline = timeline_of([fast, fast, slow, fast, fast, fast])  # the spike is in second 2
    profile = Profile(rate=1000, duration=6, concurrency=4)
    a = analyse(timeline, profile, SloTargets(p99_ms=5, window="2s"))
    assert [w["passed"] for w in a.evidence["windows"]] == [True, False, True]
    assert a.evidence["windows"][1]["breaches"] == ["p99_ms ≤ 5: saw 50.015"]
    assert not any(b.startswith("overall") for b in a.breaches)  # 30 of 6000: p99 is fast
    assert a.slo_passed is False
    with pytest.raises(CheckFailed, match=r"SLO breached: window 2 \(2-4 s\): p99_ms ≤ 5"):
        verdict(a, profile, [])


def test_a_short_trailing_window_joins_the_one_before() -> None:
    timeline = Timeline()
    assert timeline.windows(10, 25.0) == [(0, 10.0), (10, 20.0), (20, 25.0)]
    assert timeline.windows(10, 24.0) == [(0, 10.0), (10, 24.0)]
    assert timeline.windows(10, 5.0) == [(0, 5.0)]


def test_slo_bounds_report_what_was_seen() -> None:
    targets = SloTargets(p50_ms=1, max_ms=10, error_rate=0.001, min_rate=100)
    figures = {"ops": 90, "errors": 10, "attempts": 100, "error_rate": 0.1, "rate": 50,
               "p50_ms": 2.0, "max_ms": 5.0}  # fmt: skip
    assert judge(targets, figures).breaches == [
        "p50_ms ≤ 1: saw 2",
        "error_rate ≤ 0.001: saw 0.1 (10 of 100)",
        "min_rate ≥ 100 ops/s: saw 50",
    ]
    assert judge(targets, {"ops": 0, "rate": 0}).breaches[0] == "p50_ms ≤ 1: no operation completed"


def test_a_workloads_own_bounds_replace_the_services() -> None:
    slo = Slo(p99_ms=5, error_rate=0.01, window="5s", workloads={"get_set": SloTargets(p99_ms=2)})
    own = slo.for_workload("get_set")
    assert (own.p99_ms, own.error_rate, own.window) == (2, 0.01, "5s")
    assert slo.for_workload("cache_aside").p99_ms == 5


def test_a_breach_while_the_generator_was_bound_is_an_error_unless_service_time_breaches_too() -> (
    None
):
    def burn_op(ms: float):  # type: ignore[no-untyped-def]
        async def op() -> None:
            until = time.perf_counter() + ms / 1000
            while time.perf_counter() < until:
                pass

        return op

    profile = Profile(rate=None, duration=0.3, concurrency=1)
    a = analyse(run([burn_op(0.2)], profile), profile, SloTargets(p99_ms=0.05))
    assert a.generator.bound and a.slo_passed is False and a.service_slo_passed is False
    with pytest.raises(CheckFailed, match="SLO breached"):  # even with no wait it is too slow
        verdict(a, profile, [])
    b = analyse(run([burn_op(0.2)], profile), profile, SloTargets(p99_ms=1000))
    assert b.slo_passed and "generator-bound" in verdict(b, profile, [])


# --- baselines -----------------------------------------------------------------------------------


def test_a_regression_is_flagged_percentile_by_percentile(tmp_path: Path) -> None:
    base = {"stackprobe_baseline": 1, "kind": "redis", "workload": "get_set",
            "mode": "open-loop constant rate",
            "overall": {"p50_ms": 0.2, "p90_ms": 0.4, "p99_ms": 1.0, "p999_ms": 2.0, "error_rate": 0.0}}  # fmt: skip
    now = {"p50_ms": 0.21, "p90_ms": 0.41, "p99_ms": 1.6, "p999_ms": 2.1, "error_rate": 0.0}
    found, table = regressions(base, now, 0.25)
    assert found == ["p99_ms 1 → 1.6 ms (+60%, threshold 25%)"]
    assert table["p50_ms"]["regressed"] is False
    path = tmp_path / "base.json"
    path.write_text(json.dumps(base))
    assert read_baseline(path)["workload"] == "get_set"
    with pytest.raises(
        ConfigError, match="the baseline's workload is 'get_set', this run's is 'cache_aside'"
    ):
        require_comparable(path, base, "redis", "cache_aside", "open-loop constant rate")
    path.write_text('{"something": "else"}')
    with pytest.raises(ConfigError, match="not a stackprobe load baseline"):
        read_baseline(path)


def test_throughput_regresses_when_it_drops(tmp_path: Path) -> None:
    base = {"mode": "closed-loop maximum throughput", "overall": {"rate": 10_000, "error_rate": 0}}
    found, _ = regressions(base, {"rate": 6000, "error_rate": 0}, 0.25)
    assert found == ["throughput 10000 → 6000 ops/s (-40%, threshold -25%)"]


# --- the HTML report ------------------------------------------------------------------------------


def test_the_html_report_draws_a_loads_percentiles_rate_and_windows_self_contained() -> None:
    from stackprobe.check import Outcome
    from stackprobe.coverage import compute
    from stackprobe.report.html import render_html
    from stackprobe.results import CheckResult, RunResult, ServiceInfo, summarize

    fast, slow = [0.001] * 1000, [0.001] * 900 + [0.020] * 100
    profile = Profile(rate=1000, duration=4, concurrency=4)
    a = analyse(timeline_of([fast, slow, fast, fast]), profile, SloTargets(p99_ms=5, window="2s"))
    results = [
        CheckResult(
            check="stack.load.cache_get_set", service="stack", kind="stack", capability="load",
            outcome=Outcome.FAILED, duration_s=4.2, message="SLO breached",
            evidence={**a.evidence, "service": "cache", "workload": "get_set"},
        )
    ]  # fmt: skip
    result = RunResult(
        stackprobe="0.1.0", run_id="20261125T115700Z-a1b2c3", stack="s",
        started_at="2026-11-25T11:57:00+00:00", services={"stack": ServiceInfo(kind="stack")},
        duration_s=4.3, summary=summarize(results), results=results,
        coverage=compute({"stack": ("stack", ("load",))}, results),
    )  # fmt: skip
    html = render_html(result)
    section = html[html.index('<section id="load">') : html.index('<section id="services">')]
    assert section.count('<svg class="load"') == 2
    assert "p99.9" in section and "SLO p99 ≤ 5 ms" in section and "target 1000 ops/s" in section
    assert "1 (0–2 s)" in section and "p99_ms ≤ 5: saw 20.015" in section
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script src" not in html and "<link" not in html


def test_the_reference_dashboards_load_row_reads_the_metrics_the_load_exports() -> None:
    from stackprobe.load.telemetry import METRICS

    board = json.loads(
        (
            Path(__file__).parents[2]
            / "deploy/compose/grafana/dashboards/infrastructure-health.json"
        ).read_text()
    )
    titles = [p["title"] for p in board["panels"]]
    row = titles.index("Load")
    assert board["panels"][row]["type"] == "row"
    exprs = " ".join(t["expr"] for p in board["panels"][row + 1 :] for t in p["targets"])
    for metric in METRICS:
        assert metric in exprs, metric


def test_a_worker_missing_briefly_is_not_lost_and_a_long_absence_is() -> None:
    absences = Absences(grace=15.0)
    assert absences.update({"a"}, now=100.0) == set()
    assert absences.update({"a"}, now=110.0) == set()  # silent 10 s: maybe starved of CPU
    assert absences.update(set(), now=111.0) == set()  # healed: its heartbeats are back
    assert absences.update({"a"}, now=112.0) == set()  # a new absence starts its own count
    assert absences.update({"a", "b"}, now=127.0) == {"a"}
    assert absences.update({"a", "b"}, now=142.0) == {"a", "b"}
