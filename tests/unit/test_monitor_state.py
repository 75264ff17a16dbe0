"""The monitor's state machine: thresholds, grace period, flapping, dependency impact."""

from __future__ import annotations

from stackprobe.monitor.state import Policy, State, Tracker, evaluate, root_causes

POLICY = Policy(down_after=2, up_after=2, grace_s=5.0, flap_changes=4, flap_window_s=60.0)


def feed(
    tracker: Tracker, outcomes: str, start: float = 10.0, step: float = 1.0
) -> list[bool | None]:
    """Feed '+' (ok) / '-' (failed) probes one second apart; the verdict after each."""
    verdicts = []
    for i, c in enumerate(outcomes):
        tracker.observe(c == "+", start + i * step, 0.001, "" if c == "+" else "refused")
        verdicts.append(tracker.alive)
    return verdicts


def test_first_success_is_up_then_down_after_two_failures_and_up_after_two_successes() -> None:
    t = Tracker(POLICY, started_at=0.0)
    assert feed(t, "+--++") == [True, True, False, False, True]


def test_single_failures_and_single_successes_do_not_flip_the_verdict() -> None:
    t = Tracker(POLICY, started_at=0.0)
    assert feed(t, "+-+-+-+") == [True] * 7
    assert feed(t, "--+-", start=20) == [True, False, False, False]


def test_failures_in_the_grace_period_do_not_make_a_service_down() -> None:
    t = Tracker(POLICY, started_at=0.0)
    assert feed(t, "----", start=0.0) == [None, None, None, None]  # t = 0..3 s, inside 5 s grace
    assert feed(t, "-", start=6.0) == [False]  # the first failure after grace: 5 in a row


def test_a_service_alternating_is_unstable_and_settles_after_the_window() -> None:
    t = Tracker(POLICY, started_at=0.0)
    feed(t, "+--++--++--", start=10)
    assert len(t.changes) >= 4
    down = evaluate({"cache": t}, {}, {}, now=21.0)["cache"]
    assert (down.state, down.reason) == (State.DOWN, "refused (flapping: 5 changes recently)")
    feed(t, "++", start=21)
    statuses = evaluate({"cache": t}, {}, {}, now=23.0)
    assert statuses["cache"].state is State.UNSTABLE
    assert evaluate({"cache": t}, {}, {}, now=200.0)["cache"].state is not State.UNSTABLE


def test_root_cause_is_the_deepest_down_dependency() -> None:
    deps = {"app": ["worker"], "worker": ["cache"], "cache": [], "otel": ["tracing"], "tracing": []}
    assert root_causes("app", deps, {"cache"}) == ("cache",)
    assert root_causes("app", deps, {"worker", "cache"}) == ("cache",)
    assert root_causes("app", deps, {"worker"}) == ("worker",)
    assert root_causes("otel", deps, {"cache"}) == ()


def test_evaluate_states_down_impacted_degraded_unknown() -> None:
    up, down, new = Tracker(POLICY, 0.0), Tracker(POLICY, 0.0), Tracker(POLICY, 0.0)
    feed(up, "++")
    feed(down, "+--")
    trackers = {"cache": down, "worker": up, "metrics": up, "tracing": new}
    deps = {"worker": ["cache"], "metrics": [], "cache": [], "tracing": []}
    st = evaluate(trackers, deps, {"metrics": ["scrape-targets"]}, now=20.0)
    assert (st["cache"].state, st["cache"].reason) == (State.DOWN, "refused")
    assert (st["worker"].state, st["worker"].impacted_by) == (State.DEGRADED, ("cache",))
    assert st["worker"].reason == "impacted: cache down"
    assert (st["metrics"].state, st["metrics"].reason) == (
        State.DEGRADED,
        "failing in the last full run: scrape-targets",
    )
    assert st["tracing"].state is State.UNKNOWN


def test_loopback_hosts_need_no_token_and_others_do() -> None:
    import pytest

    from stackprobe.errors import ConfigError
    from stackprobe.monitor.server import require_token_beyond_loopback

    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "LOCALHOST", "127.0.0.2"):
        require_token_beyond_loopback(host, None)
    for host in ("0.0.0.0", "192.0.2.1", "example.com"):  # noqa: S104 - the refusals under test
        with pytest.raises(ConfigError, match="requires --token"):
            require_token_beyond_loopback(host, None)
    require_token_beyond_loopback("0.0.0.0", "t")  # noqa: S104
