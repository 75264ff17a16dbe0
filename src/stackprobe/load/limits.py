"""The bounds and defaults of a load (a leaf module: the CLI reads them without loading the
engine)."""

from __future__ import annotations

# ops/s: above a workload's low rate (or with --max) a load is disruptive (DESIGN rule 3).
# 100 ops/s for every kind, except what a kind declares (Redis: 2,000 ops/s, a few percent
# of what one Redis core serves)
LOW_RATE = 100.0
DEFAULT_CONCURRENCY = 16
MAX_DURATION = 3600.0  # seconds: a load is bounded in time
MAX_RATE = 1_000_000.0
DEFAULT_THRESHOLD = 0.25  # --max-regression: a percentile 25 % above the baseline's
