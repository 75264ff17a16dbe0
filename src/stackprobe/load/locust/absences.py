"""Which workers are lost, as opposed to briefly silent.

Locust marks a worker missing after 3 s without a heartbeat and heals it when one arrives: a
worker starved of CPU on a busy machine comes back and says it is done, so only a long absence
counts as a lost worker. Free of Locust and gevent, so unit tests import it.
"""

from __future__ import annotations

MISSING_GRACE = 15.0


class Absences:
    """How long each worker has been missing, so a brief absence is not taken for a loss."""

    def __init__(self, grace: float = MISSING_GRACE) -> None:
        self.grace = grace
        self.since: dict[str, float] = {}

    def update(self, missing_now: set[str], now: float) -> set[str]:
        """The workers missing for at least the grace, given those Locust marks missing now."""
        for client_id in list(self.since):
            if client_id not in missing_now:
                del self.since[client_id]  # healed: its heartbeats are back
        for client_id in missing_now:
            self.since.setdefault(client_id, now)
        return {c for c, t in self.since.items() if now - t >= self.grace}
