"""What a sandbox component is: a real service started from an installed binary.

A component knows its binary, how to install it, its command line, how to tell it is ready
(by polling, never by sleeping a fixed time), and what it adds to the sandbox's stack file.
Each module under `sandbox/components/` defines `COMPONENTS`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Layout:
    """Where one component lives: its directory and its ports."""

    dir: Path
    ports: dict[str, int]  # every port of every component, by "<component>.<name>"

    def port(self, component: str, name: str = "main") -> int:
        return self.ports[f"{component}.{name}"]


@dataclass(frozen=True)
class Component:
    name: str
    binary: str
    install: str
    port_names: tuple[str, ...]
    command: Callable[[Layout], list[str]]
    ready: Callable[[Layout], bool]
    services: Callable[[Layout], dict[str, dict[str, Any]]]
    requires: tuple[str, ...] = ()
    # restart when a component it requires restarted (a client stuck in a reconnect back-off);
    # off for what only needs its requirements to start first
    restart_with_requires: bool = True
    stop_timeout: float = 10.0  # seconds after SIGTERM before SIGKILL

    def find_binary(self) -> str | None:
        return shutil.which(self.binary) if "/" not in self.binary else self.binary
