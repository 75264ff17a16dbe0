"""The HTTP rule (stackprobe.http), kind by kind: the same answer class gives the same outcome
in every HTTP kind. A real local server gives each answer; a closed port gives "refused".

    refused, 401, 403          -> error   (the check could not talk to the service)
    404, 500, 200 not JSON     -> failed  (the service answered, not as documented)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackprobe.config import Stack, StackConfig
from stackprobe.runner import Runner, Selection, make_plan
from tests.standins._http import Answer, Request, Served

# kind -> (the capability whose checks talk to the service first, how its stack entry reads)
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "consul": ("cluster", {}),
    "prometheus": ("health", {}),
    "grafana": ("health", {"password": "pw"}),
    "arangodb": ("connectivity", {"password": "pw"}),
    "tempo": ("readiness", {}),
    "jaeger": ("readiness", {}),
    "otel-collector": ("health", {}),
}
CLASSES = {
    "refused": "error",
    "401": "error",
    "403": "error",
    "404": "failed",
    "500": "failed",
    "not-json": "failed",
}


class OneAnswer(Served):
    """Answers every request the same way."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def route(self, request: Request) -> Answer:
        return self.answer


def _answer(answer_class: str) -> Answer:
    if answer_class == "not-json":
        return Answer(200, b"<html><body>a proxy's error page</body></html>", "text/html")
    status = int(answer_class)
    return Answer(
        status, b'{"message":"no","error":"no"}' if status != 404 else b"404 page not found\n"
    )


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(params=list(CLASSES))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(answer class, base URL answering it)."""
    if request.param == "refused":
        yield request.param, _closed_port()
        return
    with OneAnswer(_answer(request.param)) as server:
        yield request.param, server.url


def _stack(kind: str, url: str, extra: dict[str, Any]) -> Stack:
    if kind == "otel-collector":
        entry: dict[str, Any] = {
            "kind": kind,
            "endpoints": {"health": f"{url}/", "metrics": f"{url}/metrics", "otlp_http": url},
        }
    else:
        entry = {"kind": kind, "url": url}
    config = StackConfig.model_validate({"services": {"svc": {**entry, **extra}}})
    return Stack(path=Path("stack.yaml"), config=config)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_same_answer_gives_the_same_outcome_in_every_http_kind(
    kind: str, served: tuple[str, str]
) -> None:
    answer_class, url = served
    capability, extra = KINDS[kind]
    plan = make_plan(_stack(kind, url, extra), Selection(capabilities=(capability,)))
    result = asyncio.run(Runner(plan, timeout=8).run())
    outcomes = {r.check: (r.outcome.value, r.message) for r in result.results}
    assert outcomes, kind
    expected = CLASSES[answer_class]
    assert {o for o, _ in outcomes.values()} == {expected}, outcomes
    for _, message in outcomes.values():
        assert message and "\n" not in message and "check crashed" not in message, message
        if answer_class in ("401", "403", "404", "500"):
            assert answer_class in message, message  # the status the service answered is named
