"""The package's layers: no import cycle between its top-level units, and no module that is
also a function name of the public API.

A unit is a module or folder directly under ``samtune/``. Imports are read from the source
(``ast``), including the ones inside functions, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import samtune

PACKAGE = Path(samtune.__file__).parent


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "samtune" else None


def _imports(path: Path) -> set[str]:
    """Absolute names of the samtune modules (or module members) ``path`` imports."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "samtune":  # from samtune import x: x is the unit
                found |= {f"samtune.{a.name}" for a in node.names}
            elif module.startswith("samtune."):
                found.add(module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("samtune.")}
    return found


@functools.cache
def unit_graph() -> dict[str, set[str]]:
    """unit -> the units it imports (``__version__`` and the package itself left out)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue  # the public API's lazy table names every unit
        unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        targets = {_unit(m) for m in _imports(path)} - {None, unit, "__version__"}
        graph.setdefault(unit, set()).update(t for t in targets if t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_top_level_units():
    graph = unit_graph()
    assert {"models", "data", "segment", "evaluation", "train", "export", "suite"} <= set(graph)
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_layers_do_not_import_higher_ones():
    """The order of docs/architecture.md, bottom up: each unit imports only units below it."""
    order = ["errors", "io", "tables", "options", "prompting", "models", "data", "strategies",
             "adapters", "segment", "evaluation", "train", "export", "serve", "suite", "cli"]  # fmt: skip
    graph = unit_graph()
    for unit, targets in graph.items():
        if unit not in order:
            continue
        above = {t for t in targets if t in order and order.index(t) > order.index(unit)}
        assert not above, f"{unit} imports {sorted(above)}, which sit above it"


def test_no_module_shares_a_public_function_name():
    """samtune.evaluate and samtune.predict are functions: no unit may be named like them."""
    units = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    functions = {name for name in samtune.__all__ if name[:1].islower()}
    assert units & functions == set()
