"""The flow's pieces that need no service: roles, the open-loop seam, percentiles, verdicts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from stackprobe.check import CheckFailed
from stackprobe.errors import ConfigError
from stackprobe.flow import (
    FlowOptions,
    FlowResult,
    Hop,
    open_loop,
    percentiles,
    resolve_roles,
    verdict,
)
from stackprobe.loader import load_stack
from tests.integration.helpers import write_stack

SERVICES: dict[str, object] = {
    "a-cache": {"kind": "redis", "url": "redis://127.0.0.1:1/0"},
    "b-cache": {"kind": "redis", "url": "redis://127.0.0.1:2/0", "links": {"celery": "pool"}},
    "pool": {"kind": "celery", "url": "redis://127.0.0.1:2/0"},
    "otel": {"kind": "otel-collector", "endpoints": {"otlp_http": "http://127.0.0.1:4318"},
             "links": {"trace_store": "tempo-b"}},
    "tempo-a": {"kind": "tempo", "url": "http://127.0.0.1:3200"},
    "tempo-b": {"kind": "tempo", "url": "http://127.0.0.1:3201"},
}  # fmt: skip


def test_roles_default_to_the_only_service_follow_links_and_name_the_option_when_ambiguous(
    tmp_path: Path,
) -> None:
    stack = load_stack(write_stack(tmp_path, SERVICES))
    roles = resolve_roles(stack, list(stack.services), FlowOptions(), "services.stack")
    assert roles.names["collector"] == "otel"
    assert roles.names["trace_store"] == "tempo-b"  # the collector's link, though two exist
    assert roles.missing["cache"] == (
        "several redis services (a-cache, b-cache): name one in services.stack.options.flow.cache"
    )
    assert roles.missing["consul"] == "no consul service configured"
    chosen = resolve_roles(stack, list(stack.services), FlowOptions(cache="b-cache"), "s")
    assert chosen.names["cache"] == "b-cache" and chosen.names["worker"] == "pool"  # its link


def test_a_flow_role_naming_a_service_of_the_wrong_kind_is_a_config_error(tmp_path: Path) -> None:
    services = {**SERVICES, "stack": {"kind": "stack", "options": {"flow": {"cache": "otel"}}}}
    with pytest.raises(ConfigError) as caught:
        load_stack(write_stack(tmp_path, services))
    assert (
        "services.stack.options.flow.cache: 'otel' is a otel-collector service, not redis"
        in str(caught.value)
    )


def test_open_loop_starts_flows_on_schedule_and_counts_latency_from_the_intended_start() -> None:
    starts: list[float] = []

    async def flow(i: int) -> int:
        starts.append(time.monotonic())
        await asyncio.sleep(0.1)
        return i

    begun = time.monotonic()
    timed = asyncio.run(open_loop(20, 0.5, flow, max_in_flight=1))
    assert [value for _, value in timed] == list(range(10))
    # one at a time, 0.1 s each, due every 0.05 s: the backlog shows in the latency
    assert timed[0][0] < 0.15 and timed[-1][0] > 0.5
    assert starts[0] - begun < 0.05


def test_open_loop_does_not_wait_for_slow_flows_when_there_is_room() -> None:
    async def flow(i: int) -> int:
        await asyncio.sleep(0.3)
        return i

    started = time.monotonic()
    timed = asyncio.run(open_loop(10, 1.0, flow))
    assert len(timed) == 10 and time.monotonic() - started < 1.5
    assert max(latency for latency, _ in timed) < 0.45


def test_percentiles_come_from_hdrhistogram_within_its_precision() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms: nearest rank gives p50 = 50 ms
    got = percentiles(values)
    want = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert got.keys() == want.keys()
    assert all(abs(got[k] - v) <= v * 0.001 for k, v in want.items()), got
    assert percentiles([]) == {}


def test_the_verdict_names_the_first_broken_hop() -> None:
    hops = [
        Hop("consul", "discovery", "passed", 8.0, "ok"),
        Hop("celery", "worker", "failed", None, "expected a result, saw none"),
        Hop("trace", "tracing", "failed", None, "later"),
    ]
    with pytest.raises(CheckFailed) as caught:
        verdict(FlowResult(0, "ab" * 16, hops, 10.0))
    assert str(caught.value) == "flow broke at the celery hop (worker): expected a result, saw none"
