"""A resilience scenario, typed: steady state -> method -> rollbacks (Chaos Toolkit's model).

    name: redis-crash
    description: kill -9 Redis, restart it, count the acknowledged writes it lost
    procedure: [the steps a person follows to recover; the method carries them out]
    steady_state: [{probe: liveness, service: cache}]
    writer: {service: cache, rate: 50}            # acknowledged-write accounting (optional)
    method:
      - {action: kill, service: cache}            # a fault (injector by action, or `injector:`)
      - {action: observe, until: down, service: cache, within: 5s}
      - {action: start, service: cache}           # the recovery procedure's own steps
      - {action: observe, until: up, service: cache, within: 30s}
    rollbacks: [{action: start, service: cache}]  # always run: success, failure, Ctrl-C
    tolerances: {detect_s: 5, recover_s: 30, lost_writes: 0}

Every field is validated when the file loads; a problem reads `<file>: <field path>: <what>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from stackprobe.config import load_yaml
from stackprobe.durations import DurationText, parse_duration
from stackprobe.errors import ConfigError

_NAME = r"^[a-z0-9][a-z0-9-]*$"

# fault actions, and the actions that undo them (a rollback repeats the undo)
FAULTS: dict[str, str | None] = {
    "kill": "start",  # kill -9 (process), kill (docker)
    "stop": "start",
    "freeze": "thaw",  # SIGSTOP (process), pause (docker)
    "restart": None,
    "latency": "clear",  # toxiproxy: latency with jitter
    "timeout": "clear",  # toxiproxy: data held, then the connection closed
    "reset-peer": "clear",  # toxiproxy: connections reset (TCP RST)
    "bandwidth": "clear",  # toxiproxy: a bandwidth limit in KB/s
    "down": "up",  # toxiproxy: the proxy disabled (connections refused)
}
REMEDIES = ("start", "thaw", "clear", "up")
LEADER = "@leader"  # the member of `members` that leads the cluster (raft leader, Redis master)
FOLLOWER = "@follower"  # another member (the leader itself in a one-member "cluster")
ACTIONS = (*FAULTS, *REMEDIES)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tolerances(_Model):
    """What a run must stay within for the verdict to pass (the stack file may tighten it)."""

    detect_s: float | None = Field(default=None, gt=0)  # fault injected -> first failure seen
    recover_s: float | None = Field(default=None, gt=0)  # fault removed -> first success again
    lost_writes: int | None = Field(default=None, ge=0)  # acknowledged writes gone afterwards
    lost_ratio: float | None = Field(default=None, ge=0, le=1)  # lost / acknowledged
    refused_ratio: float | None = Field(default=None, ge=0, le=1)  # refused / attempted writes

    def merged(self, override: Tolerances | None) -> Tolerances:
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


class Probe(_Model):
    """A steady-state probe: a service's liveness, or one catalog check, must pass."""

    probe: Literal["liveness", "check"] = "liveness"
    service: str
    check: str | None = None  # a check id (`redis.sessions.session_lifecycle`) for probe: check
    max_latency_ms: float | None = Field(default=None, gt=0)  # liveness slower than this fails

    @field_validator("check")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is not None and value.count(".") != 2:
            raise ValueError(f"{value!r} is not a check id (kind.capability.name)")
        return value


class Fault(_Model):
    """Inject a fault or apply a remedy to one service."""

    action: Literal[
        "kill", "stop", "freeze", "restart", "latency", "timeout", "reset-peer", "bandwidth",
        "down", "start", "thaw", "clear", "up",
    ]  # fmt: skip
    service: str
    injector: Literal["process", "docker", "toxiproxy"] | None = None  # default: by action
    latency_ms: float = Field(default=200.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)
    timeout_ms: float = Field(default=0.0, ge=0)  # toxiproxy timeout: 0 = hold forever
    rate_kbps: int = Field(default=1, ge=0)  # toxiproxy bandwidth


class Observe(_Model):
    """Poll a service until it reaches a state, within a time budget; the timeline records it."""

    action: Literal["observe"]
    until: Literal["down", "up", "slow", "fast", "leader"]
    service: str
    within: DurationText = "30s"
    slow_ms: float = Field(default=100.0, gt=0)  # slow / fast: liveness latency against this


class Wait(_Model):
    action: Literal["wait"]
    duration: DurationText


class Verify(_Model):
    """A named verification from the catalog of verifiers (resilience/verify.py), e.g.
    `redis-role` (the service's replication role) or `rejoined` (a server is back in its
    cluster)."""

    action: Literal["verify"]
    verifier: str
    service: str
    expect: str | None = None
    within: DurationText = "30s"


def _step_tag(step: Any) -> str | None:
    action = step.get("action") if isinstance(step, dict) else getattr(step, "action", None)
    if action in ACTIONS:
        return "fault"
    return action if action in ("observe", "wait", "verify") else None


Step = Annotated[
    Annotated[Fault, Tag("fault")]
    | Annotated[Observe, Tag("observe")]
    | Annotated[Wait, Tag("wait")]
    | Annotated[Verify, Tag("verify")],
    Discriminator(
        _step_tag,
        custom_error_type="unknown_action",
        custom_error_message=f"action must be one of {', '.join((*ACTIONS, 'observe', 'wait', 'verify'))}",
    ),
]


class Writer(_Model):
    """Jepsen-style accounting: write at a steady rate for the whole method, record every write
    the service acknowledged, and after recovery count which of them are gone."""

    service: str
    rate: float = Field(default=50.0, gt=0, le=1000)  # writes per second
    # write through the whole method, or only from the first fault to the last remedy
    during: Literal["method", "outage"] = "method"


class Scenario(_Model):
    name: str = Field(pattern=_NAME)
    description: str
    capability: Literal["failover", "recovery"] = "recovery"
    procedure: list[str] = Field(min_length=1)  # the recovery procedure a person follows
    needs: str = ""  # what the stack must have, said when it has not (e.g. "sandbox up --ha")
    steady_state: list[Probe] = Field(min_length=1)
    # the service whose probes give the figures (default: the first fault's)
    watch: str | None = None
    members: list[str] = []  # a cluster's services: `@leader` is its leader, `@follower` another
    degraded_ms: float | None = Field(default=None, gt=0)  # a probe slower counts as failed
    # `$role` in a service name: the stack file's options.targets[role], else the service named
    # `role`, else the only service of the kind given here (`roles: {cache: redis}`)
    roles: dict[str, str] = {}
    writer: Writer | None = None
    method: list[Step] = Field(min_length=1)
    rollbacks: list[Fault] = []
    tolerances: Tolerances = Tolerances()
    timeout: DurationText = "120s"  # the whole scenario, rollbacks excluded

    @property
    def timeout_s(self) -> float:
        return parse_duration(self.timeout)

    def services(self) -> set[str]:
        """Every stack service the scenario names (`@leader`/`@follower` excluded)."""
        named = {p.service for p in self.steady_state} | {s.service for s in self.method if not isinstance(s, Wait)}  # fmt: skip
        named |= {r.service for r in self.rollbacks} | set(self.members)
        if self.writer:
            named.add(self.writer.service)
        if self.watch:
            named.add(self.watch)
        return named - {LEADER, FOLLOWER}


def parse_scenario(data: Any, where: str) -> Scenario:
    """A scenario from parsed YAML; ConfigError listing every problem as `<where>: <path>: ...`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: (top level): expected a mapping with name, method, ...")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [f"{where}: {_loc(err['loc'])}: {_message(err)}" for err in exc.errors()]
        raise ConfigError(problems[0], problems) from None


def load_scenario(path: Path) -> Scenario:
    """A user's scenario file (`stackprobe scenario run -f FILE`)."""
    return parse_scenario(load_yaml(path), str(path))


_TAGS = ("fault", "observe", "wait", "verify")


def _loc(loc: tuple[int | str, ...]) -> str:
    """The field path without pydantic's union tags: `method.2.latency_ms`."""
    return ".".join(str(p) for p in loc if p not in _TAGS) or "(top level)"


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    return str(err["msg"]).removeprefix("Value error, ")


def disrupted(scenario: Scenario) -> set[str]:
    """The services a scenario's faults act on (every member, for @leader / @follower)."""
    named: set[str] = set()
    for step in [*scenario.method, *scenario.rollbacks]:
        if isinstance(step, Fault):
            named |= set(scenario.members) if step.service in (LEADER, FOLLOWER) else {step.service}
    return named
