"""Compose files as YAML: read the way Compose reads them, safely.

Compose parses YAML 1.2 (`yes`, `no`, `on`, `off` and `80:80` are strings there, `no` is a
restart policy, not `false`), accepts merge keys (`<<: *base`, `<<: [*a, *b]`: explicit keys
win over merged ones, earlier sources over later ones) and the `!reset` and `!override` tags.
A key written twice in one mapping is still refused, as Compose refuses it.

The limits of the stack-file loader apply (file size, alias count, how far aliases expand);
no tag ever runs code: only plain mappings, sequences and scalars are built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stackprobe.config import MAX_ALIASES, MAX_FILE_BYTES, MAX_NODES
from stackprobe.errors import ConfigError

MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Override:
    """A value tagged `!override`: replaces what it extends instead of merging with it."""

    value: Any


class Reset:
    """A value tagged `!reset`: removes what it extends (the key ends up unset)."""

    def __repr__(self) -> str:
        return "!reset"


RESET = Reset()


class _Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema, as Compose's parser resolves plain scalars."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    (MERGE_TAG, r"^<<$", "<"),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _problem(node: yaml.Node, what: str) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, what, node.start_mark)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    """Explicit keys once each; merged keys fill in what the explicit ones leave unset."""
    sources: list[yaml.Node] = []
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            items = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for item in items:
                if not isinstance(item, yaml.MappingNode):
                    raise _problem(item, "a merge key (<<) takes a mapping or a list of mappings")
            sources += items
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in result
        except TypeError:
            raise _problem(key_node, "a mapping key must be a scalar") from None
        if duplicate:
            raise _problem(key_node, f"duplicate key {key!r}")
        result[key] = loader.construct_object(value_node, deep=True)
    for source in sources:
        for key, value in loader.construct_object(source, deep=True).items():
            result.setdefault(key, value)
    return result


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    if len(digits) > 1 and digits.startswith("0") and set(digits) <= set("01234567"):
        return sign * int(digits, 8)  # Go's ParseInt(s, 0, 64), which Compose's parser uses
    return sign * int(digits)


def _construct_reset(loader: _Loader, node: yaml.Node) -> Reset:
    return RESET


def _construct_override(loader: _Loader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(_construct_mapping(loader, node))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    assert isinstance(node, yaml.ScalarNode)
    return Override(loader.construct_scalar(node))  # a scalar replaced whole, as text


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("!reset", _construct_reset)
_Loader.add_constructor("!override", _construct_override)


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Count aliases, and the values the document expands to, without expanding it."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    aliases = 0

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    # iterative post-order: a deep document must not exhaust Python's stack
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    while pending:
        node, done = pending.pop()
        key = id(node)
        if done:
            in_progress.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children(node))
            if sizes[key] > MAX_NODES:
                raise ConfigError(
                    f"{path}: the document expands to more than {MAX_NODES} values "
                    "(nested YAML aliases?)"
                )
        elif key in sizes:
            aliases += 1
        elif key in in_progress:
            raise ConfigError(f"{path}: a YAML alias refers to the node that contains it")
        else:
            in_progress.add(key)
            pending.append((node, True))
            pending += [(child, False) for child in children(node)]
    if aliases > MAX_ALIASES:
        raise ConfigError(f"{path}: {aliases} YAML aliases, more than the {MAX_ALIASES} allowed")


def _read(path: Path) -> str:
    """The file's text, reading no more than the size limit allows."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: file is larger than the {MAX_FILE_BYTES} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def load_compose_yaml(path: Path) -> Any:
    """The document of one Compose file; ConfigError (one line) when it cannot be read."""
    loader = _Loader(_read(path))
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, path)
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
