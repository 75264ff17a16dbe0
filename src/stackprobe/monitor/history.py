"""Probe and flow history in SQLite (embedded, in the state dir): uptime and latency over
time, and each synthetic flow's outcome, failing hop and hop latencies."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
UPTIME_CACHE_S = 10.0
KEEP_RUNS = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS probes (
    ts REAL NOT NULL, service TEXT NOT NULL, ok INTEGER NOT NULL, latency_ms REAL, error TEXT
);
CREATE INDEX IF NOT EXISTS probes_service_ts ON probes (service, ts);
CREATE TABLE IF NOT EXISTS runs (ts REAL NOT NULL, run_id TEXT PRIMARY KEY, result TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS flows (
    ts REAL NOT NULL, ok INTEGER NOT NULL, duration_ms REAL, failing_hop TEXT, message TEXT,
    hops TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_ts ON flows (ts);
"""


@dataclass(frozen=True)
class FlowRecord:
    ts: float
    ok: bool
    duration_ms: float | None
    failing_hop: str | None
    message: str
    hops: list[dict[str, Any]]


@dataclass(frozen=True)
class Probe:
    ts: float
    ok: bool
    latency_ms: float | None
    error: str


class History:
    """Thread-safe: the prober writes from the event loop, the HTTP server reads."""

    def __init__(self, path: Path, retention_s: float = 7 * 86400) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retention_s = retention_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._last_prune = 0.0
        self._uptime_cache: dict[str, tuple[float, dict[str, float | None]]] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(
        self, service: str, ok: bool, latency_ms: float | None, error: str, ts: float | None = None
    ) -> None:
        now = time.time() if ts is None else ts
        with self._lock:
            self._db.execute(
                "INSERT INTO probes (ts, service, ok, latency_ms, error) VALUES (?, ?, ?, ?, ?)",
                (now, service, int(ok), latency_ms, error[:500]),
            )
            if now - self._last_prune > 60:
                self._db.execute("DELETE FROM probes WHERE ts < ?", (now - self.retention_s,))
                self._db.execute("DELETE FROM runs WHERE ts < ?", (now - self.retention_s,))
                self._last_prune = now

    def record_round(self, rows: list[tuple[str, bool, float | None, str]], ts: float) -> None:
        """One probe round in one transaction (one fsync, not one per service)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO probes (ts, service, ok, latency_ms, error) VALUES (?, ?, ?, ?, ?)",
                [(ts, name, int(ok), lat, err[:500]) for name, ok, lat, err in rows],
            )
            self._db.execute("COMMIT")
        if ts - self._last_prune > 60:
            self.record_prune(ts)

    def record_prune(self, now: float) -> None:
        with self._lock:
            self._db.execute("DELETE FROM probes WHERE ts < ?", (now - self.retention_s,))
            self._db.execute("DELETE FROM runs WHERE ts < ?", (now - self.retention_s,))
            self._db.execute("DELETE FROM flows WHERE ts < ?", (now - self.retention_s,))
            self._last_prune = now

    def record_flow(self, flow: FlowRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO flows (ts, ok, duration_ms, failing_hop, message, hops) VALUES (?, ?, ?, ?, ?, ?)",
                (flow.ts, int(flow.ok), flow.duration_ms, flow.failing_hop, flow.message[:1000],
                 json.dumps(flow.hops)),
            )  # fmt: skip

    def flows(self, limit: int = 30) -> list[FlowRecord]:
        """The last `limit` flows, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, ok, duration_ms, failing_hop, message, hops FROM flows ORDER BY ts DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [FlowRecord(ts, bool(ok), d, hop, msg or "", json.loads(hops))
                for ts, ok, d, hop, msg, hops in reversed(rows)]  # fmt: skip

    def record_run(self, run_id: str, result_json: str, ts: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO runs (ts, run_id, result) VALUES (?, ?, ?)",
                (time.time() if ts is None else ts, run_id, result_json),
            )
            # full results are for the page and /api/runs/latest: keep the last few only
            self._db.execute(
                "DELETE FROM runs WHERE run_id NOT IN (SELECT run_id FROM runs ORDER BY ts DESC LIMIT ?)",
                (KEEP_RUNS,),
            )

    def latest_run(self) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM runs ORDER BY ts DESC LIMIT 1").fetchone()
        return str(row[0]) if row else None

    def recent(self, service: str, limit: int = 60) -> list[Probe]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, ok, latency_ms, error FROM probes WHERE service = ? ORDER BY ts DESC LIMIT ?",
                (service, limit),
            ).fetchall()
        return [Probe(ts, bool(ok), lat, err or "") for ts, ok, lat, err in reversed(rows)]

    def uptime(self, service: str, now: float | None = None) -> dict[str, float | None]:
        """Percent of successful probes per window; None when the window has no probe.

        Cached for UPTIME_CACHE_S: over 7 days of 1 s probes the counts take long enough to
        delay the probes that share the monitor's event loop."""
        if now is None:
            cached = self._uptime_cache.get(service)
            if cached and time.monotonic() - cached[0] < UPTIME_CACHE_S:
                return cached[1]
        result = self._uptime(service, time.time() if now is None else now)
        if now is None:
            self._uptime_cache[service] = (time.monotonic(), result)
        return result

    def _uptime(self, service: str, now: float) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        with self._lock:
            for name, seconds in WINDOWS.items():
                total, ok = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(ok), 0) FROM probes WHERE service = ? AND ts >= ?",
                    (service, now - seconds),
                ).fetchone()
                out[name] = round(100.0 * ok / total, 3) if total else None
        return out

    def latency_percentiles(
        self, service: str, window_s: float = 3600, now: float | None = None
    ) -> dict[str, float | None]:
        """p50/p95/p99 of successful probes' latency (nearest rank) in the window."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT latency_ms FROM probes WHERE service = ? AND ts >= ? AND ok = 1 AND latency_ms IS NOT NULL "
                "ORDER BY latency_ms",
                (service, now - window_s),
            ).fetchall()
        values = [r[0] for r in rows]
        return {f"p{q}": _rank(values, q) for q in (50, 95, 99)}


def _rank(sorted_values: list[float], q: int) -> float | None:
    if not sorted_values:
        return None
    index = max(0, min(len(sorted_values) - 1, -(-q * len(sorted_values) // 100) - 1))
    return round(sorted_values[index], 3)
