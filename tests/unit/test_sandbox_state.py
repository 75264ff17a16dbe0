"""The sandbox's own state files: damage reads as one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackprobe.errors import SandboxError
from stackprobe.sandbox.manager import Sandbox


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"redis.main": "6379"}'])
def test_a_damaged_ports_file_is_one_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "sandbox").mkdir()
    (tmp_path / "sandbox" / "ports.json").write_text(content)
    with pytest.raises(
        SandboxError, match=r"ports.json: unreadable .*remove it and run `stackprobe sandbox up`"
    ):
        Sandbox(root=tmp_path / "sandbox").status()
