"""The package's layout: its parts import each other one way only, no command-line app imports another, and no
module outgrows what a reader takes in at once."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import emotion

PACKAGE = Path(emotion.__file__).parent
#: The most lines a module of the package may have.
MAX_LINES = 300


def part_of(module: str) -> str:
    """`emotion.serving.files` -> `serving`; a top-level module (`emotion.metrics`) is a part of its own."""
    return module.split(".")[1] if module.count(".") >= 1 else ""


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def imported_modules(path: Path) -> set[str]:
    """Every `emotion.*` module the file imports, at its top or inside a function (a lazy import is a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emotion."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("emotion.")}
    return found


def dependencies() -> dict[str, set[str]]:
    """Which parts of `emotion/` each part imports (itself left out)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        source = part_of(module_name(path))
        graph[source] |= {part_of(m) for m in imported_modules(path)} - {source}
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_parts_of_the_package_import_each_other_one_way_only() -> None:
    graph = dependencies()
    assert {"pipeline", "tracking", "serving", "models", "data", "cli"} <= set(graph)
    cycles = {part: cycle for part in graph if (cycle := cycle_through(graph, part))}
    assert cycles == {}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycle_through({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == ["a", "b", "c", "a"]
    assert cycle_through({"a": {"b"}, "b": {"c"}}, "a") is None


def test_no_command_line_app_imports_another() -> None:
    apps = {module_name(p) for p in (PACKAGE / "cli").glob("*.py") if p.name != "__init__.py"}
    for path in (PACKAGE / "cli").glob("*.py"):
        assert not (imported_modules(path) & (apps - {module_name(path)})), path.name


def test_no_module_is_over_300_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
