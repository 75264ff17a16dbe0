"""One-shot jobs and long-running services, told apart the way Compose users tell them apart.

A one-shot job (an init container that fixes ownership, a migration, a topic-creation job)
runs, exits 0 and stays exited: it needs no healthcheck, keeps no data and has nothing for
stackprobe to check. It is recognised by what Compose files say:

- a dependent waits for it with `condition: service_completed_successfully`;
- it is not restarted (`restart: "no"`, the default, or `on-failure`) and its command finishes:
  a known finite tool (`chown`, `kafka-topics --create`, `mc`, `curl`, `redis-cli SET ...`,
  `psql`, `flyway migrate`, ...), run directly, through the image's own entrypoint
  (`minio/mc`, `curlimages/curl`, `flyway/flyway`...) or as the last step of an `sh -c` script
  with no endless loop, `sleep infinity` or `tail -f`;
- `restart: "no"` written out together with `healthcheck: {disable: true}`.

`restart: always` or `unless-stopped` makes any service long-running. Every verdict carries
why, so a finding can say it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stackprobe.compose.images import PROFILES, profile_name, split_image, split_words
from stackprobe.compose.model import ComposeFile, Service

_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh"})
_FINITE = frozenset(
    """chown chmod chgrp mkdir cp mv rm ln touch echo printf true tar unzip gzip gunzip sed cat
    install envsubst test exit kafka-topics kafka-topics.sh kafka-configs kafka-configs.sh
    kafka-acls kafka-acls.sh kafka-storage kafka-storage.sh mc curl wget psql mysql mongosh
    mongo mongoimport mongorestore cqlsh flyway migrate alembic liquibase aws gsutil
    terraform influx rabbitmqadmin createdb pg_restore update-ca-certificates
    setfacl""".split()  # noqa: SIM905 - a word list reads best
)
# tools that finish unless told to stay (a server or a watch mode)
_FINITE_UNLESS = {
    "redis-cli": frozenset(
        {"monitor", "subscribe", "psubscribe", "ssubscribe", "--stat", "--latency"}
    ),
    "valkey-cli": frozenset(
        {"monitor", "subscribe", "psubscribe", "ssubscribe", "--stat", "--latency"}
    ),
    "consul": frozenset({"agent", "monitor", "watch", "connect"}),
    "vault": frozenset({"server", "agent", "proxy"}),
    "rpk": frozenset({"redpanda", "start"}),
    "python": frozenset(),
    "python3": frozenset(),
    "node": frozenset(),
}
_PY_JOBS = re.compile(
    r"\b(manage\.py\s+(migrate|collectstatic|loaddata|createsuperuser)|-m\s+alembic|alembic\s+upgrade|db\s+upgrade|seed|migrat)"
)
_ENDLESS = re.compile(
    r"\bwhile\s+(true|:|\[\s*1\s*\])\b(?!.*\bbreak\b)|\bsleep\s+(infinity|inf)\b|\btail\s+-[fF]\b|\bwait\b\s*$"
)
# images whose entrypoint is a finite tool: the command is only its arguments
_JOB_ENTRYPOINTS = {
    "curlimages/curl": "curl",
    "minio/mc": "mc",
    "flyway/flyway": "flyway",
    "migrate/migrate": "migrate",
    "liquibase/liquibase": "liquibase",
    "amazon/aws-cli": "aws",
    "hashicorp/terraform": "terraform",
}
_SEPARATORS = re.compile(r"\s*(?:;|&&|\|\||\||\n)\s*")


@dataclass(frozen=True)
class Lifecycle:
    one_shot: bool
    why: str  # "dependents wait for it to complete", "restart: always keeps it running", ...


def _program_finite(argv: list[str]) -> bool:
    if not argv:
        return False
    program = argv[0].rsplit("/", 1)[-1]
    if program in _FINITE:
        return True
    if program in ("python", "python3", "node", "npm", "npx", "flask", "php", "bundle", "rails"):
        return bool(_PY_JOBS.search(" ".join(argv)))
    unless = _FINITE_UNLESS.get(program)
    return unless is not None and len(argv) > 1 and not unless & {a.lower() for a in argv[1:]}


def _script_finite(script: str) -> bool:
    """An `sh -c` script: finite when no step loops forever and its last step finishes."""
    if _ENDLESS.search(script):
        return False
    steps = [s for s in _SEPARATORS.split(script.strip()) if s and s not in ("done", "fi")]
    last = re.sub(r"^(exec|do|then|else)\s+", "", steps[-1]) if steps else "true"
    return _program_finite(split_words(last))


def finite_command(svc: Service) -> str | None:
    """The command, shown short, when it is one that finishes; None otherwise."""
    argv = split_words(svc.entrypoint) + split_words(svc.command)
    if svc.entrypoint is None and svc.image:
        repo, _, _ = split_image(svc.image)
        tool = _JOB_ENTRYPOINTS.get(repo)
        if tool and svc.command is not None:
            argv = [tool, *argv]
    if not argv:
        return None
    shown = " ".join(argv)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    program = argv[0].rsplit("/", 1)[-1]
    if program in _SHELLS and "-c" in argv[1:]:
        at = argv.index("-c")
        return shown if at + 1 < len(argv) and _script_finite(argv[at + 1]) else None
    if program in ("docker-entrypoint.sh", "/docker-entrypoint.sh", "tini", "dumb-init", "--"):
        return shown if finite_command(Service(svc.name, command=tuple(argv[1:]))) else None
    return shown if _program_finite(argv) else None


def lifecycle(compose: ComposeFile, svc: Service) -> Lifecycle:
    """Whether a service is a one-shot job, and why it was judged so (or long-running)."""
    waiting = sorted(
        other.name
        for other in compose.services.values()
        if (dep := other.depends_on.get(svc.name)) is not None
        and dep.condition == "service_completed_successfully"
    )
    if waiting:
        return Lifecycle(
            True, f"{', '.join(waiting)} wait(s) for it with service_completed_successfully"
        )
    restart = (svc.restart or "no").strip().lower()
    if restart in ("always", "unless-stopped"):
        return Lifecycle(False, f"restart: {restart} keeps it running")
    command = finite_command(svc)
    if command is not None:
        return Lifecycle(True, f"its command finishes ({command}) and restart is {restart!r}")
    hc = svc.healthcheck
    if svc.restart is not None and restart == "no" and hc is not None and hc.disable:
        return Lifecycle(True, 'restart: "no" and its healthcheck is disabled')
    name = profile_name(svc)
    prof = PROFILES.get(name) if name else None
    if prof is not None:
        return Lifecycle(False, f"it runs {prof.label}")
    if svc.command is not None or svc.entrypoint is not None:
        shown = " ".join(split_words(svc.entrypoint) + split_words(svc.command))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return Lifecycle(False, f"its command ({shown}) is not one known to finish")
    return Lifecycle(False, "it runs its image's default command")


def one_shot(compose: ComposeFile, name: str) -> bool:
    """A job that runs to completion: exited 0 is its success, it needs no healthcheck."""
    svc = compose.services.get(name)
    return svc is not None and lifecycle(compose, svc).one_shot
