"""Compose's variables: interpolation in the file, and the `.env` / `env_file` format.

Interpolation follows the Compose specification: `$VAR`, `${VAR}`, `${VAR:-default}` (unset
or empty), `${VAR-default}` (unset), `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`,
`${VAR+alt}`, `$$` for a literal `$`, and defaults that hold references themselves
(`${A:-${B:-x}}`). An unset variable becomes empty, as Compose does after its warning; an
unset `${VAR:?error}` is where Compose refuses the file, and `missing` collects it.

The `.env` format: `KEY=VALUE` (or `KEY: VALUE`), `export KEY=VALUE`, `#` comments (after a
space when inline), single quotes literal, double quotes with `\\n`-style escapes, values
that span lines inside quotes, and `${VAR}` in unquoted and double-quoted values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>.*)", re.DOTALL)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}


@dataclass(frozen=True)
class Var:
    """One `${...}` or `$NAME` reference as written."""

    name: str
    op: str | None = None
    arg: str = ""


def _closing(text: str, start: int) -> int:
    """Index of the `}` closing a `${` whose body starts at `start`, or -1."""
    depth, i = 1, start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def tokens(text: str) -> list[str | Var]:
    """Literal text and references, in order (`$$` is the literal `$`)."""
    out: list[str | Var] = []
    i = 0
    while i < len(text):
        dollar = text.find("$", i)
        if dollar < 0:
            out.append(text[i:])
            break
        if dollar > i:
            out.append(text[i:dollar])
        nxt = text[dollar + 1 : dollar + 2]
        if nxt == "$":
            out.append("$")
            i = dollar + 2
        elif nxt == "{" and (end := _closing(text, dollar + 2)) >= 0:
            match = _BRACED.fullmatch(text, dollar + 2, end)
            if match is None:
                out.append(text[dollar : end + 1])  # not a reference: kept as written
            else:
                out.append(Var(match["name"], match["op"], match["arg"] or ""))
            i = end + 1
        elif bare := _NAME.match(text, dollar + 1):
            out.append(Var(bare[0]))
            i = bare.end()
        else:
            out.append("$")
            i = dollar + 1
    return out


def interpolate(
    text: str, env: Mapping[str, str], missing: Callable[[str, str], None] | None = None
) -> str:
    """Compose's substitution of one string; `missing(name, message)` hears of `:?` / `?`."""
    out: list[str] = []
    for token in tokens(text):
        if isinstance(token, str):
            out.append(token)
            continue
        current = env.get(token.name)
        op = token.op

        def arg(token: Var = token) -> str:
            return interpolate(token.arg, env, missing)

        if op in (":-", "-"):
            use_default = not current if op == ":-" else current is None
            out.append(arg() if use_default else current or "")
        elif op in (":?", "?"):
            if (not current) if op == ":?" else current is None:
                if missing is not None:
                    missing(token.name, arg())
                out.append("")
            else:
                out.append(current or "")
        elif op in (":+", "+"):
            is_set = bool(current) if op == ":+" else current is not None
            out.append(arg() if is_set else "")
        else:
            out.append(current or "")
    return "".join(out)


def references(text: str) -> list[str]:
    """The variables a string refers to, outermost first (`${A:-${B}}` → A, B)."""
    names: list[str] = []
    for token in tokens(text):
        if isinstance(token, Var):
            names.append(token.name)
            if token.arg:
                names += references(token.arg)
    return names


def is_reference(text: str) -> bool:
    """True when the whole value is one reference with no literal default."""
    found = tokens(text.strip())
    if len(found) != 1 or not isinstance(found[0], Var):
        return False
    var = found[0]
    return var.op not in (":-", "-") or not var.arg or is_reference(var.arg)


def parse_dotenv(text: str, lookup: Mapping[str, str]) -> dict[str, str]:
    """The variables of a `.env` / `env_file` text; `lookup` resolves `${VAR}` in values."""
    values: dict[str, str] = {}
    i, n = 0, len(text)

    def resolve(value: str) -> str:
        return interpolate(value, {**values, **lookup})

    while i < n:
        end = text.find("\n", i)
        end = n if end < 0 else end
        raw_line = text[i:end]
        line = raw_line.lstrip()
        if not line.strip() or line.startswith("#"):
            i = end + 1
            continue
        if line.startswith(("export ", "export\t")):
            line = line[7:].lstrip()
        offset = i + len(raw_line) - len(line)
        line = line.rstrip()
        key_match = re.match(r"([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:([=:])\s*)?", line)
        if key_match is None:
            i = end + 1
            continue
        key = key_match[1]
        if key_match[2] is None:  # a bare KEY: the value of the environment, when it has one
            if key in lookup and line == key:
                values[key] = lookup[key]
            i = end + 1
            continue
        start = offset + key_match.end()
        quote = text[start : start + 1]
        if quote in ("'", '"'):
            close = _closing_quote(text, start + 1, quote)
            if close < 0:  # unterminated: the rest of the line, as written
                values[key] = resolve(text[start + 1 : end])
                i = end + 1
                continue
            raw = text[start + 1 : close]
            values[key] = raw if quote == "'" else resolve(_unescape(raw))
            nl = text.find("\n", close)
            i = n if nl < 0 else nl + 1
            continue
        raw = text[start:end]
        comment = re.search(r"\s#", raw)
        if comment:
            raw = raw[: comment.start()]
        values[key] = resolve(raw.strip())
        i = end + 1
    return values


def _closing_quote(text: str, start: int, quote: str) -> int:
    i = start
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i
        i += 1
    return -1


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), raw)
