"""What differs on Prometheus 3 in the dead-rule findings, on the values 3.x really stores."""

from __future__ import annotations

from stackprobe.services.prometheus import _float_twin_hint
from stackprobe.services.promql import Matcher

# le values of prometheus_http_request_duration_seconds_bucket on a real 3.16 and 2.42
LE_3 = ["+Inf", "0.1", "0.2", "0.4", "1.0", "120.0", "20.0", "3.0", "60.0", "8.0"]
LE_2 = ["+Inf", "0.1", "0.2", "0.4", "1", "120", "20", "3", "60", "8"]


def test_le_written_for_2x_on_a_3x_server_says_what_3x_stores() -> None:
    hint = _float_twin_hint(Matcher("le", "=", "1"), LE_3)
    assert hint == 'le="1" selects nothing: this Prometheus stores le="1.0" (3.x normalises le to a float)'  # fmt: skip
    assert _float_twin_hint(Matcher("quantile", "=", "1"), ["0.5", "1.0"]) is not None


def test_no_hint_when_the_value_is_simply_absent_or_not_a_float_label() -> None:
    assert _float_twin_hint(Matcher("le", "=", "5"), LE_3) is None  # no 5 at all: a plain miss
    assert _float_twin_hint(Matcher("le", "=", "1.0"), LE_2) is not None  # and the other way
    assert _float_twin_hint(Matcher("code", "=", "200"), ["200.0"]) is None
    assert _float_twin_hint(Matcher("le", "=~", "1"), LE_3) is None
    assert _float_twin_hint(Matcher("le", "=", "fast"), LE_3) is None
