"""The monitor's state as Prometheus metrics, through prometheus-client.

A collector reads the monitor at each scrape; each server gets its own registry (never the
process-wide default one), rendered in the Prometheus text format 0.0.4, or in OpenMetrics
when the scraper's Accept header asks for it. Label values go through the stack's redaction.
With `serve --location NAME` every series carries `location="NAME"` (so do /probe's).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from stackprobe.check import Outcome
from stackprobe.monitor.core import Monitor


class MonitorCollector(Collector):
    """stackprobe_* families from the monitor's trackers, statuses and last full run."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        yield from with_location(self._families(), self.monitor.location)

    def _families(self) -> Iterator[Metric]:
        m = self.monitor
        label = m.redactor.text
        statuses = m.statuses()
        up = GaugeMetricFamily(
            "stackprobe_service_up",
            "1 when the service's liveness verdict is up, else 0",
            labels=["service", "kind"],
        )
        state = GaugeMetricFamily(
            "stackprobe_service_state",
            "1 for the service's current state (up, degraded, down, unknown, unstable)",
            labels=["service", "state"],
        )
        for name, status in statuses.items():
            up.add_metric(
                [label(name), label(m.stack.service(name).kind)], 1 if status.alive else 0
            )
            state.add_metric([label(name), label(status.state.value)], 1)
        latency = GaugeMetricFamily(
            "stackprobe_probe_latency_seconds",
            "latency of the last successful liveness probe",
            labels=["service"],
        )
        for name, tracker in m.trackers.items():
            if tracker.last_latency_s is not None:
                latency.add_metric([label(name)], round(tracker.last_latency_s, 6))
        yield from (up, state, latency)

        run = m.latest_run
        check_labels = ["check", "service", "capability"]
        check_status = GaugeMetricFamily(
            "stackprobe_check_status",
            "1 when the check passed in the last full run, 0 when it failed or errored",
            labels=check_labels,
        )
        duration = GaugeMetricFamily(
            "stackprobe_check_duration_seconds",
            "duration of the check in the last full run",
            labels=check_labels,
        )
        coverage = GaugeMetricFamily(
            "stackprobe_coverage_ratio",
            "covered capabilities / capabilities, overall and per service, in the last full run",
            labels=["service"],
        )
        if run:
            for r in run.results:
                if r.outcome is Outcome.SKIPPED:
                    continue
                values = [label(r.check), label(r.service), label(r.capability)]
                check_status.add_metric(values, 1 if r.outcome is Outcome.PASSED else 0)
                duration.add_metric(values, round(r.duration_s, 6))
            coverage.add_metric([], round(run.coverage.percent / 100, 4))  # overall: no label
            for name, cov in run.coverage.services.items():
                coverage.add_metric([label(name)], round(cov.percent / 100, 4))
        yield from (check_status, duration, coverage)
        yield from self._flow()
        # exposed as stackprobe_monitor_probe_rounds_total: the exposition appends _total
        yield CounterMetricFamily(
            "stackprobe_monitor_probe_rounds",
            "liveness probe rounds since the monitor started",
            value=m.rounds,
        )

    def _flow(self) -> Iterator[Metric]:
        """The last synthetic flow: each hop's latency (and `total`), and whether it passed."""
        flow = self.monitor.latest_flow
        if flow is None:
            return
        duration = GaugeMetricFamily(
            "stackprobe_flow_duration_seconds",
            "latency of each hop of the last synthetic flow (hop=total: the whole flow)",
            labels=["hop"],
        )
        for hop in flow.evidence.get("hops") or []:
            if isinstance(hop.get("latency_ms"), int | float):
                duration.add_metric([str(hop["hop"])], round(hop["latency_ms"] / 1000, 6))
        total = flow.evidence.get("duration_ms")
        if isinstance(total, int | float):
            duration.add_metric(["total"], round(total / 1000, 6))
        yield duration
        yield GaugeMetricFamily(
            "stackprobe_flow_success",
            "1 when the last synthetic flow passed every hop it ran, else 0",
            value=1 if flow.outcome is Outcome.PASSED else 0,
        )


def with_location(families: Iterable[Metric], location: str | None) -> Iterator[Metric]:
    """`families` with a `location` label on every sample (unchanged when it is None)."""
    for family in families:
        if location is not None:
            family.samples = [
                s._replace(labels={**s.labels, "location": location}) for s in family.samples
            ]
        yield family


def registry_for(monitor: Monitor) -> CollectorRegistry:
    """A private registry holding only this monitor's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(monitor))
    return registry


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """(body, content type): OpenMetrics when `accept` asks for it, else text format 0.0.4."""
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
