"""Per-service health state from a stream of probe outcomes, and dependency impact.

A service is `unknown` until its first verdict, `down` after `down_after` consecutive failed
probes, `up` again after `up_after` consecutive successes; failures during the start-up grace
period do not count. A service whose state changed `flap_changes` times within
`flap_window` seconds is shown `unstable`. `degraded` means alive but a capability failed in
the last full run, a dependency is down (then the root cause is named), or its recent probes
are slow (the median of the last `slow_probes` above `slow_ms`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    UNKNOWN = "unknown"
    UNSTABLE = "unstable"


@dataclass(frozen=True)
class Policy:
    down_after: int = 2
    up_after: int = 2
    grace_s: float = 5.0
    flap_changes: int = 4
    flap_window_s: float = 60.0
    slow_ms: float | None = 100.0  # None: latency never degrades a service
    slow_probes: int = 3


@dataclass
class Tracker:
    """The liveness verdict of one service, driven by probe outcomes."""

    policy: Policy
    started_at: float
    alive: bool | None = None  # None until the first verdict
    failures: int = 0
    successes: int = 0
    last_error: str = ""
    last_latency_s: float | None = None
    changes: deque[float] = field(default_factory=deque)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=16))

    def observe(self, ok: bool, at: float, latency_s: float | None = None, error: str = "") -> bool:
        """Record one probe; True when the liveness verdict changed."""
        self.last_latency_s = latency_s
        if ok and latency_s is not None:
            self.latencies.append(latency_s)
        if ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0
            self.last_error = error
        in_grace = at - self.started_at < self.policy.grace_s
        verdict = self.alive
        if ok and (self.alive is None or self.successes >= self.policy.up_after):
            verdict = True
        elif not ok and not in_grace and self.failures >= self.policy.down_after:
            verdict = False
        if verdict == self.alive:
            return False
        if self.alive is not None:
            self.changes.append(at)
        self.alive = verdict
        return True

    def slow(self) -> float | None:
        """The median of the recent probe latencies (ms) when it is above the policy's bar."""
        if self.policy.slow_ms is None or len(self.latencies) < self.policy.slow_probes:
            return None
        recent = sorted(list(self.latencies)[-self.policy.slow_probes :])
        median = recent[len(recent) // 2] * 1000
        return round(median, 1) if median > self.policy.slow_ms else None

    def unstable(self, now: float) -> bool:
        while self.changes and now - self.changes[0] > self.policy.flap_window_s:
            self.changes.popleft()
        return len(self.changes) >= self.policy.flap_changes


@dataclass(frozen=True)
class ServiceStatus:
    state: State
    alive: bool | None
    reason: str = ""
    impacted_by: tuple[str, ...] = ()  # root causes: dependencies that are down


def root_causes(
    service: str, depends_on: Mapping[str, list[str]], down: set[str]
) -> tuple[str, ...]:
    """The down services at the bottom of `service`'s dependency chains (not itself)."""
    causes: set[str] = set()
    seen: set[str] = set()

    def walk(name: str) -> None:
        for dep in depends_on.get(name, []):
            if dep in seen:
                continue
            seen.add(dep)
            below_down = [d for d in depends_on.get(dep, []) if d in down]
            if dep in down and not below_down:
                causes.add(dep)
            walk(dep)

    walk(service)
    return tuple(sorted(causes))


def evaluate(
    trackers: Mapping[str, Tracker],
    depends_on: Mapping[str, list[str]],
    failing_capabilities: Mapping[str, list[str]],
    now: float,
) -> dict[str, ServiceStatus]:
    """Every service's state from its tracker, its dependencies and the last full run."""
    down = {name for name, t in trackers.items() if t.alive is False}
    statuses = {}
    for name, tracker in trackers.items():
        causes = root_causes(name, depends_on, down)
        if tracker.alive is None:
            status = ServiceStatus(State.UNKNOWN, None, "no verdict yet", causes)
        elif tracker.alive is False:  # down wins over unstable: it is what needs action now
            flapping = (
                f" (flapping: {len(tracker.changes)} changes recently)"
                if tracker.unstable(now)
                else ""
            )
            status = ServiceStatus(State.DOWN, False, tracker.last_error + flapping, causes)
        elif tracker.unstable(now):
            status = ServiceStatus(
                State.UNSTABLE, True, f"{len(tracker.changes)} state changes recently", causes
            )
        elif causes:
            status = ServiceStatus(
                State.DEGRADED, True, f"impacted: {', '.join(causes)} down", causes
            )
        elif (slow := tracker.slow()) is not None:
            status = ServiceStatus(
                State.DEGRADED,
                True,
                f"slow: median of the last {tracker.policy.slow_probes} probes {slow} ms "
                f"(above {tracker.policy.slow_ms:g} ms)",
            )
        elif failing_capabilities.get(name):
            caps = ", ".join(failing_capabilities[name])
            status = ServiceStatus(State.DEGRADED, True, f"failing in the last full run: {caps}")
        else:
            status = ServiceStatus(State.UP, True)
        statuses[name] = status
    return statuses
