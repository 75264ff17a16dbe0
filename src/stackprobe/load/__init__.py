"""Load: bounded load against one service, honest latency, SLO verdicts, baselines.

    engine.py      open-loop constant arrival rate (latency from each operation's intended
                   start: coordinated-omission corrected) and closed-loop maximum throughput,
                   the generator's own schedule lag and CPU share, the generator-bound rule
    histogram.py   HdrHistogram (PyPI `hdrhistogram`) in microseconds, encoded to merge exactly
    timeline.py    per-second histograms and counts, merged across workers, cut into windows
    slo.py         the verdict per window and overall against a service's `slo:`
    baseline.py    --save-baseline / --compare, percentile by percentile
    telemetry.py   the load's rate, errors and latency as OTLP metrics through the collector
    workloads/     one definition per kind, on that kind's own client
    distributed.py --workers: Locust master and workers as processes (Locust is imported only
                   there, never in an asyncio process)

This package sits at the kinds layer: it uses the kinds' clients and helpers, never the
engine (connect, runner, loader); the stack-level check is `services/stack_load.py` and the
CLI verb `load/commands.py`.
"""
