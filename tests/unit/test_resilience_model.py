"""Resilience scenarios without services: the model and its errors, role resolution, the
figures read from probes, the journal, and the built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackprobe.catalog import all_checks, known_kinds
from stackprobe.check import CheckSkipped
from stackprobe.config import Stack, StackConfig
from stackprobe.errors import ConfigError
from stackprobe.resilience import timeline as tl
from stackprobe.resilience.builtin import ORDER, builtin
from stackprobe.resilience.journal import Journal, unfinished
from stackprobe.resilience.model import Verify, disrupted, load_scenario
from stackprobe.resilience.roles import resolve


def test_seven_built_in_scenarios_each_a_disruptive_stack_check_with_its_procedure() -> None:
    scenarios = builtin()
    assert tuple(scenarios) == ORDER and len(ORDER) == 7
    stack_checks = {c.name: c for c in known_kinds()["stack"].checks}
    check_ids = {c.id for c in all_checks()}
    for name, scenario in scenarios.items():
        spec = stack_checks[name.replace("-", "_")]
        assert spec.disruptive and spec.capability == scenario.capability
        assert (
            scenario.procedure
            and scenario.steady_state
            and scenario.tolerances.model_dump(exclude_none=True)
        )
        for step in scenario.method:
            if isinstance(step, Verify) and step.verifier == "check":
                assert step.expect in check_ids, (name, step.expect)


def test_a_scenario_file_with_mistakes_names_every_field(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: My_Scenario\ndescription: x\nprocedure: []\nsteady_state: [{service: cache, probe: ping}]\n"
        "method:\n  - {action: kill, service: cache, sevrice: x}\n  - {action: teleport, service: cache}\n"
        "  - {action: observe, until: down, service: cache, within: soon}\n"
        "tolerances: {recover_s: -1}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    problems = info.value.problems
    assert f"{path}: name: String should match pattern '^[a-z0-9][a-z0-9-]*$'" in problems
    assert (
        f"{path}: procedure: List should have at least 1 item after validation, not 0" in problems
    )
    assert any(
        p.startswith(f"{path}: steady_state.0.probe: Input should be 'liveness' or 'check'")
        for p in problems
    )
    assert f"{path}: method.0.sevrice: unknown field" in problems
    assert any(
        p.startswith(f"{path}: method.1: action must be one of kill, stop, freeze")
        for p in problems
    )
    assert (
        f"{path}: method.2.within: 'soon' is not a duration like 500ms, 90s, 30m, 1h, 2d or 1m30s"
        in problems
    )
    assert f"{path}: tolerances.recover_s: Input should be greater than 0" in problems


def _stack(**services: dict[str, object]) -> Stack:
    return Stack(path=Path("s.yaml"), config=StackConfig.model_validate({"services": services}))


def test_roles_resolve_by_target_then_name_then_the_only_service_of_their_kind() -> None:
    crash = builtin()["redis-crash"]
    by_kind = resolve(crash, _stack(sessions={"kind": "redis", "url": "redis://h/0"}), {})
    assert {s.service for s in by_kind.steady_state} == {"sessions"} and disrupted(by_kind) == {
        "sessions"
    }
    two = _stack(
        a={"kind": "redis", "url": "redis://h/0"}, b={"kind": "redis", "url": "redis://h/1"}
    )
    with pytest.raises(
        CheckSkipped,
        match=r"several redis services \(a, b\): name it in the stack service's options.targets.cache",
    ):
        resolve(crash, two, {})
    assert disrupted(resolve(crash, two, {"cache": "b"})) == {"b"}
    leader = resolve(builtin()["consul-leader-loss"], _stack(one={"kind": "consul", "url": "http://c"}), {
        "ha-consul-1": "one", "ha-consul-2": "one", "ha-consul-3": "one"})  # fmt: skip
    assert leader.members == ["one"] and disrupted(leader) == {"one"}


def _samples(*pattern: tuple[float, bool]) -> list[tl.Sample]:
    return [tl.Sample(t, ok, 1.0 if ok else None) for t, ok in pattern]


def _timeline(injected: float, removed: float | None) -> tl.Timeline:
    t = tl.Timeline()
    t.mark(tl.INJECTED, at=injected)
    if removed is not None:
        t.mark(tl.REMOVED, at=removed)
    return t


def test_figures_of_a_crash_restarted_by_the_procedure() -> None:
    samples = _samples(
        (0.9, True), (1.05, False), (1.5, False), (2.0, False), (2.6, True), (2.7, True)
    )
    assert tl.measure(_timeline(1.0, 2.2), samples) == {
        "time_to_detect_s": 0.05, "time_to_recover_s": 0.4, "outage_s": 1.55}  # fmt: skip


def test_a_probe_that_passes_during_the_outage_is_not_recovery() -> None:
    samples = _samples((1.1, False), (1.6, True), (1.7, False), (2.5, False), (3.1, True))
    figures = tl.measure(_timeline(1.0, 3.0), samples)
    assert figures["time_to_recover_s"] == 0.1 and figures["outage_s"] == 2.0


def test_a_failover_recovers_before_the_fault_is_removed() -> None:
    """The watched service is not the one killed: recovery counts from the fault."""
    samples = _samples((1.2, False), (2.0, False), (3.4, True), (5.0, True))
    figures = tl.measure(_timeline(1.0, 6.0), samples, by_remedy=False)
    assert figures == {"time_to_detect_s": 0.2, "time_to_recover_s": 2.4, "outage_s": 2.2}


def test_no_failure_means_no_figures_and_no_recovery_says_so() -> None:
    assert tl.measure(_timeline(1.0, 2.0), _samples((1.5, True)))["time_to_detect_s"] is None
    never = tl.measure(_timeline(1.0, 2.0), _samples((1.5, False), (2.5, False)))
    assert never["time_to_detect_s"] == 0.5 and never["time_to_recover_s"] is None


def test_a_journal_without_its_end_lists_the_faults_not_remedied(tmp_path: Path) -> None:
    killed = Journal(tmp_path, "20261201T000000Z-aaaaaa", "redis-crash")
    killed.write("fault", action="kill", service="cache", injector="process", undo="start")
    killed.write("fault", action="latency", service="cache", injector="toxiproxy", undo="clear")
    killed.write("remedy", action="start", service="cache")
    done = Journal(tmp_path, "20261201T000001Z-bbbbbb", "redis-crash")
    done.write("fault", action="kill", service="cache", injector="process", undo="start")
    done.end([])
    (left,) = unfinished(tmp_path)
    assert left.path == killed.path and [f["action"] for f in left.faults] == ["latency"]


def test_a_verifier_that_never_answers_fails_its_step_within_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One attempt cannot outlast the step's `within` (a check verifier's own timeout is longer,
    a frozen server never answers): the step fails saying so, not at the scenario's timeout."""
    import asyncio

    from stackprobe.check import CheckFailed
    from stackprobe.resilience import engine
    from stackprobe.resilience.verify import VERIFIERS

    async def hangs(*_: object) -> str:
        await asyncio.sleep(3600)
        return "never"

    monkeypatch.setitem(VERIFIERS, "hangs", hangs)
    run = object.__new__(engine._Run)  # only what _verify reads: no services needed
    run.resolved, run.state, run.ctx, run.timeline = {}, {}, None, tl.Timeline()  # type: ignore[assignment]
    step = Verify(action="verify", verifier="hangs", service="cache", within="0.2s")
    with pytest.raises(
        CheckFailed, match=r"^verify hangs on cache within 0.2s: no answer in time$"
    ):
        asyncio.run(asyncio.wait_for(run._verify(step), engine.VERIFY_ATTEMPT_MIN + 2))
