"""The processes of a distributed load, on Locust's distributed runner (master and workers).

Only these processes import Locust, and they import it without gevent's monkey patching
(`LOCUST_SKIP_MONKEY_PATCH=1`, set here before Locust is imported): Locust's own machinery
(ZeroMQ through `zmq.green`, heartbeats, the user greenlet) runs in gevent in the main
thread, while each worker runs stackprobe's asyncio engine, with the kind's own client, in a
real thread beside it. A patched standard library would turn that thread and the event
loop's selector into greenlets; the CLI's own process never imports Locust at all.

    master.py   started by `stackprobe load --workers N`: waits for the workers, sends each
                its share of the profile, starts one Locust user per worker, merges the
                per-second histograms they send (encoded HdrHistograms as Locust messages)
                and prints progress and the merged timeline as JSON lines
    worker.py   `stackprobe load-worker --master HOST:PORT -c stack.yaml` (also started
                locally by `--workers`): opens the service from its own stack file
    user.py     the Locust user both sides know: one per worker, running the share
"""

from __future__ import annotations

import os

os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")

MSG_PROFILE = "stackprobe_profile"  # master -> worker: its share of the profile
MSG_SECOND = "stackprobe_second"  # worker -> master: one second's counts and encoded histogram
MSG_DONE = "stackprobe_done"  # worker -> master: its generator view, after its cleanups
MSG_FAILED = "stackprobe_failed"  # worker -> master: it could not run (one line)
