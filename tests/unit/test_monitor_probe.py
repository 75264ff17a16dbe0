"""/probe's request parsing, budget, exposition and per-service limit; the held-connection
watch of the monitor (a close confirmed by a re-probe is down at once, a recycled one is not).

A test kind stands in for a service here (its liveness and held connection are switches);
the same paths against real Redis, Consul and Prometheus are in tests/integration/test_monitor.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stackprobe.check import CheckContext, CheckFailed, CheckSkipped, CheckSpec
from stackprobe.config import ServiceConfig, Stack, StackConfig
from stackprobe.kinds import Held, Kind, Target
from stackprobe.monitor import metrics, probe
from stackprobe.monitor.core import Monitor
from stackprobe.monitor.history import History
from stackprobe.monitor.state import Policy


@dataclass
class Switches:
    """What the test kind's service does: answer its probe, hold connections, close them."""

    alive: bool = True
    probe_delay: float = 0.0
    watches: int = 0
    refuse_hold: bool = False  # alive, but no connection can be held (no keep-alive)
    attempts: int = 0
    namespaces: list[str] = field(default_factory=list)  # ctx.ns of each check that passed
    close: asyncio.Event = field(default_factory=asyncio.Event)


class FakeHeld:
    def __init__(self, switches: Switches) -> None:
        self.switches = switches

    async def closed(self) -> str:
        await self.switches.close.wait()
        self.switches.close.clear()
        return "held connection closed: by the test"

    async def aclose(self) -> None:
        return None


def fake_kind(switches: Switches) -> Kind[Switches]:
    @asynccontextmanager
    async def connect(target: Target) -> AsyncIterator[Switches]:
        yield switches

    async def liveness(s: Switches) -> None:
        await asyncio.sleep(s.probe_delay)
        if not s.alive:
            raise CheckFailed("not alive (test switch)")

    async def watch(s: Switches) -> Held:
        s.attempts += 1
        if s.refuse_hold:
            raise ConnectionError("Connection: close (test switch)")
        if not s.alive:
            raise ConnectionRefusedError("refused (test switch)")
        s.watches += 1
        return FakeHeld(s)

    kind: Kind[Switches] = Kind(
        name="fake",
        description="test kind",
        capabilities=("alpha", "beta", "gamma"),
        connect=connect,
        liveness=liveness,
        watch=watch,
    )

    @kind.check("alpha", title="passes")
    async def passes(ctx: CheckContext[Switches]) -> str:
        ctx.client.namespaces.append(ctx.ns)
        return "fine"

    @kind.check("alpha", title="fails")
    async def fails(ctx: CheckContext[Switches]) -> str:
        raise CheckFailed("expected 1, saw 2 (s3cr3t)")

    @kind.check("alpha", title="disrupts", disruptive=True)
    async def disrupts(ctx: CheckContext[Switches]) -> str:
        raise AssertionError("a disruptive check ran from /probe")

    @kind.check("beta", title="only disruptive", disruptive=True)
    async def only_disruptive(ctx: CheckContext[Switches]) -> str:
        return "never"

    @kind.check("gamma", title="skips")
    async def skips(ctx: CheckContext[Switches]) -> str:
        raise CheckSkipped("nothing to see")

    return kind


@contextmanager
def monitor_of(tmp_path: Path, switches: Switches, **kw: Any) -> Iterator[Monitor]:
    svc = ServiceConfig.model_construct(
        kind="fake", url="fake://h", endpoints={}, password="s3cr3t", token=None, username=None,
        depends_on=[], disruption="forbidden", links={}, expectations={}, options={},
    )  # fmt: skip
    config = StackConfig.model_construct(version=1, stack="t", services={"svc": svc})
    stack = Stack(path=tmp_path / "t.yaml", config=config)
    history = History(tmp_path / "history.sqlite", 3600)
    try:
        yield Monitor(
            stack, history, policy=Policy(grace_s=0), kinds={"fake": fake_kind(switches)}, **kw
        )
    finally:
        history.close()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


# --- the budget ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, probe.DEFAULT_BUDGET_S), ("", probe.DEFAULT_BUDGET_S), ("10", 9.5), ("5.5", 5.0),
     ("0.6", 0.3), ("0.2", 0.1)],
)  # fmt: skip
def test_budget_is_the_scrape_timeout_less_a_margin_never_below_half(
    header: str | None, seconds: float
) -> None:
    assert math.isclose(probe.budget(header), seconds)


@pytest.mark.parametrize("header", ["soon", "-1", "0", "nan", "inf"])
def test_a_budget_header_that_is_not_a_positive_number_is_refused(header: str) -> None:
    with pytest.raises(probe.BadProbe, match="x-prometheus-scrape-timeout-seconds"):
        probe.budget(header)


# --- parsing -------------------------------------------------------------------------------


def test_requests_name_a_service_and_maybe_a_capability_with_checks_it_may_run(
    tmp_path: Path,
) -> None:
    with monitor_of(tmp_path, Switches()) as m:
        assert probe.parse(m, {"service": "svc"}) == probe.ProbeRequest("svc", None)
        alpha = probe.parse(m, {"service": "svc", "capability": "alpha"})
        assert [c.name for c in alpha.checks] == ["passes", "fails"]  # never the disruptive one
        cases = {
            "pass ?service=<name> (services: svc)": {},
            "unknown service 'nope' (services: svc)": {"service": "nope"},
            "unknown capability 'delta' for svc (fake: alpha, beta, gamma)": {
                "service": "svc", "capability": "delta"},
            "svc: capability beta has no check /probe may run (only disruptive or exclusive "
            "ones: the full run has them)": {"service": "svc", "capability": "beta"},
        }  # fmt: skip
        for message, params in cases.items():
            with pytest.raises(probe.BadProbe) as refused:
                probe.parse(m, params)
            assert str(refused.value) == message


def test_runnable_leaves_out_disruptive_and_exclusive_checks() -> None:
    async def fn(ctx: CheckContext[Any]) -> None:
        return None

    specs = [
        CheckSpec("k", "c", name, name, fn, disruptive=d, exclusive=e)
        for name, d, e in [("plain", False, False), ("disr", True, False), ("excl", False, True)]
    ]
    assert [s.name for s in probe.runnable(specs, "c")] == ["plain"]
    assert probe.runnable(specs, "other") == ()


# --- running and the exposition ------------------------------------------------------------


def run_probe(m: Monitor, params: dict[str, str], seconds: float = 2.0) -> probe.ProbeResult:
    async def go() -> probe.ProbeResult:
        try:
            return await probe.Prober(m).run(probe.parse(m, params), seconds)
        finally:
            await m.services.aclose()

    return asyncio.run(go())


def test_liveness_probe_success_and_failure_with_its_reason(tmp_path: Path) -> None:
    switches = Switches()
    with monitor_of(tmp_path, switches, location="eu-west") as m:
        ok = run_probe(m, {"service": "svc"})
        assert ok.success and ok.duration_s > 0 and not ok.checks
        got = samples(metrics.exposition(probe.registry_of(ok, m), "")[0])
        assert got[("probe_success", (("location", "eu-west"),))] == 1
        assert ("probe_duration_seconds", (("location", "eu-west"),)) in got
        switches.alive = False
        failed = run_probe(m, {"service": "svc"})
        assert not failed.success and failed.reason == "not alive (test switch)"
        got = samples(metrics.exposition(probe.registry_of(failed, m), "")[0])
        assert got[("probe_success", (("location", "eu-west"),))] == 0
        reason = (("location", "eu-west"), ("reason", "not alive (test switch)"))
        assert got[("stackprobe_probe_error_info", reason)] == 1


def test_a_probe_that_outlives_its_budget_answers_failure_in_time(tmp_path: Path) -> None:
    with monitor_of(tmp_path, Switches(probe_delay=5)) as m:
        result = run_probe(m, {"service": "svc"}, seconds=0.2)
    assert not result.success and result.reason == "no answer within 0.2 s"
    assert result.duration_s < 2  # answered at its budget, not after the 5 s the service takes


def test_capability_probe_reports_each_check_and_fails_on_one_failure(tmp_path: Path) -> None:
    with monitor_of(tmp_path, Switches()) as m:
        result = run_probe(m, {"service": "svc", "capability": "alpha"})
        text = metrics.exposition(probe.registry_of(result, m), "")[0]
    assert not result.success and result.reason.startswith("fake.alpha.fails: expected 1")
    got = samples(text)
    assert got[("stackprobe_check_status", (("capability", "alpha"), ("check", "fake.alpha.passes")))] == 1  # fmt: skip
    assert got[("stackprobe_check_status", (("capability", "alpha"), ("check", "fake.alpha.fails")))] == 0  # fmt: skip
    assert not [k for k in got if "disrupts" in str(k)]
    assert b"s3cr3t" not in text and b"***" in text  # the reason goes through the redaction


def test_a_capability_whose_checks_all_skipped_is_not_a_success(tmp_path: Path) -> None:
    with monitor_of(tmp_path, Switches()) as m:
        result = run_probe(m, {"service": "svc", "capability": "gamma"})
    assert (result.success, result.reason, result.checks) == (False, "every check was skipped", [])


def test_probes_beyond_the_per_service_limit_wait_then_answer_busy(tmp_path: Path) -> None:
    with monitor_of(tmp_path, Switches(probe_delay=0.8)) as m:

        async def go() -> list[probe.ProbeResult]:
            prober = probe.Prober(m, per_service=2)
            request = probe.parse(m, {"service": "svc"})
            budgets = (2.0, 2.0, 0.3, 2.0)  # the third cannot wait long enough, the fourth can
            try:
                return list(await asyncio.gather(*(prober.run(request, b) for b in budgets)))
            finally:
                await m.services.aclose()

        results = asyncio.run(go())
    assert [r.success for r in results] == [True, True, False, True]
    assert results[2].reason == "busy: 2 probes of svc already running for longer than 0.3 s"
    assert results[3].duration_s > 1.2  # it waited for a slot: never 3 at once


def test_metrics_carry_the_location_on_every_series(tmp_path: Path) -> None:
    with monitor_of(tmp_path, Switches(), location="lab") as m:
        body, _ = metrics.exposition(metrics.registry_for(m), "")
        without = Monitor(m.stack, m.history, kinds=m.kinds)
        plain, _ = metrics.exposition(metrics.registry_for(without), "")
    labels = [dict(k[1]) for k in samples(body)]
    assert labels and all(lab.get("location") == "lab" for lab in labels)
    assert all("location" not in dict(k[1]) for k in samples(plain))


# --- held connections ----------------------------------------------------------------------


def test_a_close_confirmed_by_the_re_probe_is_down_at_once(tmp_path: Path) -> None:
    switches = Switches()
    with monitor_of(tmp_path, switches, interval=60) as m:
        m.trackers["svc"].observe(True, 0, 0.001)
        assert m.trackers["svc"].alive is True

        async def go() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(m.watch("svc", stop))
            while switches.watches == 0:
                await asyncio.sleep(0.01)
            switches.alive = False
            switches.close.set()
            async with asyncio.timeout(2):  # long before the 60 s probe interval
                while m.trackers["svc"].alive is not False:
                    await asyncio.sleep(0.01)
            stop.set()
            await task
            await m.services.aclose()

        asyncio.run(go())
        probes = m.history.recent("svc", 10)
    assert [p.ok for p in probes] == [False, False]
    assert probes[0].error == "held connection closed: by the test"
    assert probes[1].error == "not alive (test switch)"
    assert m.statuses()["svc"].state.value == "down"


def test_a_close_the_re_probe_does_not_confirm_is_held_anew_and_not_counted(
    tmp_path: Path,
) -> None:
    switches = Switches()
    with monitor_of(tmp_path, switches, interval=60) as m:
        m.trackers["svc"].observe(True, 0, 0.001)

        async def go() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(m.watch("svc", stop))
            for _ in range(3):  # recycled three times: each time held again
                seen = switches.watches
                while switches.watches == seen:
                    await asyncio.sleep(0.01)
                switches.close.set()
            while switches.watches < 4:
                await asyncio.sleep(0.01)
            stop.set()
            await task
            await m.services.aclose()

        asyncio.run(go())
        assert m.held_closes == 3 and m.trackers["svc"].alive is True
        assert m.trackers["svc"].failures == 0 and m.history.recent("svc", 10) == []


def test_an_alive_service_that_refuses_to_be_held_is_asked_less_and_less_often(
    tmp_path: Path,
) -> None:
    switches = Switches(refuse_hold=True)
    with monitor_of(tmp_path, switches, interval=0.05) as m:
        m.trackers["svc"].observe(True, 0, 0.001)

        async def go() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(m.watch("svc", stop))
            await asyncio.sleep(1.6)  # 0.1 + 0.2 + 0.4 + 0.8 s of pauses: 5 attempts, not 32
            stop.set()
            await task
            await m.services.aclose()

        asyncio.run(go())
    assert 3 <= switches.attempts <= 6
    assert m.trackers["svc"].alive is True and m.held_closes == 0


def test_probes_at_once_name_what_their_checks_create_apart(tmp_path: Path) -> None:
    switches = Switches()
    with monitor_of(tmp_path, switches) as m:

        async def go() -> None:
            prober = probe.Prober(m)
            request = probe.parse(m, {"service": "svc", "capability": "alpha"})
            try:
                await asyncio.gather(prober.run(request, 2.0), prober.run(request, 2.0))
            finally:
                await m.services.aclose()

        asyncio.run(go())
    assert len(switches.namespaces) == 2 and len(set(switches.namespaces)) == 2
    assert all(ns.startswith("stackprobe-") for ns in switches.namespaces)
