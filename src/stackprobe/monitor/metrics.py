"""The monitor's state in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from stackprobe.check import Outcome
from stackprobe.monitor.core import Monitor


def _labels(**labels: str) -> str:
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def render(monitor: Monitor) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])

    statuses = monitor.statuses()
    family("stackprobe_service_up", "gauge", "1 when the service's liveness verdict is up, else 0")
    for name, status in statuses.items():
        kind = monitor.stack.service(name).kind
        lines.append(
            f"stackprobe_service_up{_labels(service=name, kind=kind)} {1 if status.alive else 0}"
        )
    family(
        "stackprobe_service_state",
        "gauge",
        "1 for the service's current state (up, degraded, down, unknown, unstable)",
    )
    for name, status in statuses.items():
        lines.append(f"stackprobe_service_state{_labels(service=name, state=status.state.value)} 1")
    family(
        "stackprobe_probe_latency_seconds", "gauge", "latency of the last successful liveness probe"
    )
    for name, tracker in monitor.trackers.items():
        if tracker.last_latency_s is not None:
            lines.append(
                f"stackprobe_probe_latency_seconds{_labels(service=name)} {tracker.last_latency_s:.6f}"
            )
    run = monitor.latest_run
    family(
        "stackprobe_check_status",
        "gauge",
        "1 when the check passed in the last full run, 0 when it failed or errored",
    )
    family(
        "stackprobe_check_duration_seconds", "gauge", "duration of the check in the last full run"
    )
    status_lines, duration_lines = [], []
    for r in run.results if run else []:
        if r.outcome is Outcome.SKIPPED:
            continue
        labels = _labels(check=r.check, service=r.service, capability=r.capability)
        status_lines.append(
            f"stackprobe_check_status{labels} {1 if r.outcome is Outcome.PASSED else 0}"
        )
        duration_lines.append(f"stackprobe_check_duration_seconds{labels} {r.duration_s:.6f}")
    # families must be contiguous: put each family's samples right after its own header
    at = lines.index("# TYPE stackprobe_check_status gauge") + 1
    lines[at:at] = status_lines
    lines.extend(duration_lines)
    family(
        "stackprobe_coverage_ratio",
        "gauge",
        "covered capabilities / capabilities, overall and per service, in the last full run",
    )
    if run:
        lines.append(f"stackprobe_coverage_ratio {run.coverage.percent / 100:.4f}")
        for name, cov in run.coverage.services.items():
            lines.append(
                f"stackprobe_coverage_ratio{_labels(service=name)} {cov.percent / 100:.4f}"
            )
    family(
        "stackprobe_monitor_probe_rounds_total",
        "counter",
        "liveness probe rounds since the monitor started",
    )
    lines.append(f"stackprobe_monitor_probe_rounds_total {monitor.rounds}")
    return "\n".join(lines) + "\n"
