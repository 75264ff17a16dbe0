"""Where stackprobe keeps its state: `$STACKPROBE_STATE_DIR`, else `./.stackprobe/`.

It holds `sandbox/` (the sandbox's stack file, configs, logs, pid files), `monitor/` (the
monitor's history) and `runs/` (every run's result), and `resilience/` (scenario journals).
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    return Path(os.environ.get("STACKPROBE_STATE_DIR") or ".stackprobe")
