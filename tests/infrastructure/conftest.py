"""Point the stackprobe pytest plugin at the session sandbox.

The tests in this folder are written the way a user of the plugin writes them: they ask for
`redis_client`, `consul_client`, `trace_store`, ... and mark what they prove with
`@pytest.mark.stackprobe(kind=..., capability=...)`. A user points the plugin at a stack with
`--stackprobe-config FILE` or `--stackprobe-sandbox`; this suite overrides the one fixture the
plugin reads the stack file from, so it runs against the sandbox that tests/conftest.py starts.
A kind the sandbox lacks (ArangoDB, Grafana, Tempo, Compose) makes its fixture skip, with the
reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunningSandbox


@pytest.fixture(scope="session")
def stackprobe_stack_file(sandbox: RunningSandbox) -> Path:
    return sandbox.sandbox.stack_file
