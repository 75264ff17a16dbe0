"""Which metrics an alert rule reads, for the dead-rule finding."""

from __future__ import annotations

import pytest

from stackprobe.services.prometheus import metric_selectors


@pytest.mark.parametrize(
    ("expr", "selectors"),
    [
        ("max(stackprobe_canary_value) > 100", {'{__name__="stackprobe_canary_value"}'}),
        (
            'sum by (job) (rate(http_requests_total{code=~"5.."}[5m])) / ignoring(code) group_left '
            "sum(rate(http_requests_total[5m])) > 0.1 and on(job) up == 1",
            {'{__name__="http_requests_total"}', '{__name__="up"}'},
        ),
        ('sum(rate({__name__=~"x_failed(_total)?"}[1m])) > 0', {'{__name__=~"x_failed(_total)?"}'}),
        ('absent(up{job="api"}) == 1', set()),  # fires when up is missing: never dead for it
        ("absent_over_time(heartbeat[5m]) or lag_seconds > 30", {'{__name__="lag_seconds"}'}),
    ],
)
def test_metric_selectors(expr: str, selectors: set[str]) -> None:
    assert metric_selectors(expr) == selectors
