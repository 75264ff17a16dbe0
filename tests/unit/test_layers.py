"""The import graph keeps its layers: front ends -> engine -> kinds -> base, never back up,
and no module imports another that imports it back (lazy imports inside functions included,
since they only hide a loop)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "stackprobe"

# the lowest layer first; a module may import its own layer and the ones below
LAYERS: dict[str, tuple[str, ...]] = {
    "base": (
        "errors", "durations", "state", "redact", "ids", "urls", "config", "explain", "http",
        "otlp", "dns", "check", "httpserver", "threads",
    ),
    "kinds": ("kinds", "held", "services", "compose", "resilience", "flow", "flow_probe", "load"),  # the compose library, the load engine
    "engine": ("catalog", "loader", "connect", "runner", "coverage", "results", "store", "clean", "compose.discover", "resilience.restore",
               "report", "sandbox", "testing", "progress", "wait", "logs"),
    "front": ("cli", "frontend", "pytest_plugin", "monitor", "compose.commands", "resilience.commands", "flow_commands",
              "load.commands", "load.locust", "__main__", "__init__"),
}  # fmt: skip
ORDER = list(LAYERS)


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def layer_of(module: str) -> str:
    """The layer of the longest prefix that names `module` (compose.commands is a front end)."""
    found = [
        (len(p), layer)
        for layer, prefixes in LAYERS.items()
        for p in prefixes
        if module == p or module.startswith(p + ".")
    ]
    if not found:
        raise AssertionError(f"stackprobe.{module} is in no layer: add it to LAYERS")
    return max(found)[1]


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "stackprobe":
                found.update(a.name for a in node.names if a.name != "__version__")
            elif node.module.startswith("stackprobe."):
                found.add(node.module.removeprefix("stackprobe."))
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("stackprobe.")
                for a in node.names
                if a.name.startswith("stackprobe.")
            )
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in SRC.rglob("*.py")}


def test_every_import_goes_down_the_layers() -> None:
    upward = [
        f"{mod} ({layer_of(mod)}) imports {dep} ({layer_of(dep)})"
        for mod, deps in graph().items()
        for dep in deps
        if ORDER.index(layer_of(dep)) > ORDER.index(layer_of(mod))
    ]
    assert upward == []


def test_no_import_loop() -> None:
    edges = graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for dep in edges.get(node, set()):
                if dep == goal:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return False

    loops = sorted(
        f"{m} <-> {d}" for m, deps in edges.items() for d in deps if d != m and reaches(d, m)
    )
    assert loops == []


def test_no_module_outside_its_kind_branches_on_a_kind_name() -> None:
    kinds = {"redis", "consul", "arangodb", "tempo", "jaeger", "otel-collector", "prometheus",
             "grafana", "compose", "celery"}  # fmt: skip
    branching = []
    for path in SRC.rglob("*.py"):
        if path.parent.name in ("services", "compose", "components"):
            continue  # a kind's own module, the compose library and sandbox components
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Compare)
                and "kind" in ast.unparse(node.left)
                and any(isinstance(c, ast.Constant) and c.value in kinds for c in node.comparators)
            ):
                branching.append(f"{module_name(path)}:{node.lineno}")
    assert branching == []
