"""The seven built-in scenarios, written in the same YAML form users write their own in
(`stackprobe scenario run -f FILE`): resilience/scenarios/*.yaml."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

from stackprobe.resilience.model import Scenario, parse_scenario

ORDER = (
    "redis-crash",
    "redis-failover",
    "redis-latency",
    "consul-leader-loss",
    "collector-outage",
    "prometheus-restart",
    "trace-store-outage",
)


@cache
def builtin() -> dict[str, Scenario]:
    """Name -> scenario, in the documented order."""
    folder = resources.files("stackprobe.resilience") / "scenarios"
    found = {}
    for name in ORDER:
        text = (folder / f"{name}.yaml").read_text(encoding="utf-8")
        found[name] = parse_scenario(
            yaml.safe_load(text), f"stackprobe/resilience/scenarios/{name}.yaml"
        )
    return found
