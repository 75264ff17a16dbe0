"""Probe history in SQLite: uptime per window, latency percentiles, retention."""

from __future__ import annotations

from pathlib import Path

from stackprobe.monitor.history import History


def test_uptime_per_window_and_latency_percentiles(tmp_path: Path) -> None:
    h = History(tmp_path / "h.sqlite")
    now = 1_000_000.0
    for i in range(100):  # the last 100 minutes: 10 failures
        h.record(
            "cache",
            i % 10 != 0,
            float(i + 1) if i % 10 else None,
            "" if i % 10 else "down",
            ts=now - i * 60 - 30,
        )
    h.record("cache", True, 5.0, "", ts=now - 2 * 86400)  # two days ago: only in 7d
    up = h.uptime("cache", now=now)
    assert up["1h"] == 90.0  # 60 probes in the last hour, 6 failed
    assert up["24h"] == 90.0
    assert up["7d"] == round(100 * 91 / 101, 3)
    assert h.uptime("nobody", now=now) == {"1h": None, "24h": None, "7d": None}
    p = h.latency_percentiles("cache", window_s=3600, now=now)
    assert p == {
        "p50": 30.0,
        "p95": 58.0,
        "p99": 60.0,
    }  # latencies 2..60 without multiples of 10 +1
    h.close()


def test_old_probes_and_runs_are_pruned_after_retention(tmp_path: Path) -> None:
    h = History(tmp_path / "h.sqlite", retention_s=3600)
    h.record("cache", True, 1.0, "", ts=1000.0)
    h.record_run("old-run", '{"run": 1}', ts=1000.0)
    h.record("cache", True, 1.0, "", ts=1000.0 + 7200)  # triggers the prune
    assert [p.ts for p in h.recent("cache")] == [8200.0]
    assert h.latest_run() is None
    h.close()


def test_a_round_is_recorded_together_and_only_recent_runs_are_kept(tmp_path: Path) -> None:
    h = History(tmp_path / "h.sqlite")
    h.record_round([("cache", True, 1.5, ""), ("worker", False, None, "refused")], ts=100.0)
    assert [(p.ok, p.latency_ms) for p in h.recent("cache")] == [(True, 1.5)]
    assert [(p.ok, p.error) for p in h.recent("worker")] == [(False, "refused")]
    for i in range(30):
        h.record_run(f"run-{i}", f'{{"n": {i}}}', ts=1000.0 + i)
    assert h.latest_run() == '{"n": 29}'
    count = h._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert count == 20
    h.close()
