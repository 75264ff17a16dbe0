"""Load a stack file for use: its structure (config.py), then what each kind accepts.

Kind-aware validation lives here, above the kinds, so that `config` stays below them: the
kind is known, its url, endpoints, options and expectations fit its models, links name a
service of the right kind (or default to the only one), `depends_on` names services of the
stack and forms no cycle. Every problem reads `<file>: services.<name>.<field>: <what>`; all of
them are collected before ConfigError is raised, so one `config check` shows every mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from stackprobe.catalog import known_kinds
from stackprobe.config import ServiceConfig, Stack, StackConfig, Typed, parse_stack
from stackprobe.errors import ConfigError
from stackprobe.kinds import Kind
from stackprobe.load.workload import slo_problems
from stackprobe.services import stack as stack_kind


def load_stack(
    path: Path, env: Mapping[str, str] | None = None, kinds: Mapping[str, Kind[Any]] | None = None
) -> Stack:
    """The validated, typed stack of `path`; ConfigError listing every problem."""
    problems: list[str] = []
    stack = parse_stack(path, env, problems)
    kinds = known_kinds() if kinds is None else kinds
    links = _check_services(stack.config, path, problems, kinds)
    if problems:
        raise ConfigError(problems[0], problems)
    typed = {name: kinds[svc.kind].typed(svc) for name, svc in stack.config.services.items()}
    return replace(stack, links=links, typed=typed)


STACK_KIND = stack_kind.KIND_NAME


def with_stack_service(stack: Stack) -> tuple[Stack, str]:
    """The stack with a service of kind `stack` (its own, or one named `stack` added), and that
    service's name: stack-level checks run on it."""
    for name, svc in stack.services.items():
        if svc.kind == STACK_KIND:
            return stack, name
    name = "stack" if "stack" not in stack.services else "stack-level"
    services = {**stack.services, name: ServiceConfig(kind=STACK_KIND)}
    config = stack.config.model_copy(update={"services": services})
    return replace(stack, config=config), name


def typed_of(stack: Stack, name: str, kind: Kind[Any]) -> Typed:
    """A service's typed options and expectations (parsed now for a hand-made Stack)."""
    found = stack.typed.get(name)
    return found if found is not None else kind.typed(stack.service(name))


def _check_services(
    config: StackConfig, file: Path, problems: list[str], kinds: Mapping[str, Kind[Any]]
) -> dict[str, dict[str, str]]:
    links: dict[str, dict[str, str]] = {}
    by_kind: dict[str, list[str]] = {}  # once: per service it made 2,000 services quadratic
    for name, svc in config.services.items():
        by_kind.setdefault(svc.kind, []).append(name)
    for name, svc in config.services.items():
        where = f"{file}: services.{name}"
        kind = kinds.get(svc.kind)
        if kind is None:
            problems.append(
                f"{where}.kind: unknown kind {svc.kind!r}; known kinds: {', '.join(sorted(kinds))}"
            )
            continue
        problems += [f"{where}.{p}" for p in kind.validate(svc)]
        if kind.check_config is not None:
            problems += [f"{where}.{p}" for p in kind.check_config(name, config)]
        if svc.slo is not None:
            problems += [f"{where}.{p}" for p in slo_problems(svc.kind, list(svc.slo.workloads))]
        for dep in svc.depends_on:
            if dep not in config.services:
                problems.append(f"{where}.depends_on: no service named {dep!r} in this stack")
        links[name] = _links(name, config, kind, where, problems, by_kind)
    cycle = find_cycle({n: s.depends_on for n, s in config.services.items()})
    if cycle:
        problems.append(f"{file}: services: depends_on forms a cycle: {' -> '.join(cycle)}")
    return links


def _links(
    name: str,
    config: StackConfig,
    kind: Kind[Any],
    where: str,
    problems: list[str],
    by_kind: Mapping[str, list[str]],
) -> dict[str, str]:
    """Each role of the kind: the service named in `links:`, else the only one of its kind."""
    svc = config.services[name]
    settled: dict[str, str] = {}
    for role, role_kinds in kind.links.items():
        wanted = (role_kinds,) if isinstance(role_kinds, str) else role_kinds
        label = " or ".join(wanted)
        explicit = svc.links.get(role)
        if explicit is not None:
            target = config.services.get(explicit)
            if target is None or target.kind not in wanted:
                problems.append(
                    f"{where}.links.{role}: {explicit!r} is not a {label} service of this stack"
                )
            else:
                settled[role] = explicit
            continue
        candidates = [n for k in wanted for n in by_kind.get(k, ()) if n != name]
        if len(wanted) > 1:  # in the order of the file, as the message names them
            candidates.sort(key=list(config.services).index)
        if len(candidates) == 1:
            settled[role] = candidates[0]
        elif len(candidates) > 1:
            problems.append(
                f"{where}.links.{role}: several {label} services ({', '.join(candidates)}); "
                f"name the one to use"
            )
    for role in svc.links:
        if role not in kind.links:
            known = ", ".join(kind.links) or "none"
            problems.append(
                f"{where}.links.{role}: unknown role for kind {svc.kind} (known: {known})"
            )
    return settled


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One dependency cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep in graph and not state.get(dep) and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if not state.get(node) and (found := visit(node)):
            return found
    return None
