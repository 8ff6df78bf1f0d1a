"""The package's shape: a few rooms by role, and every import (function-level ones included) running downward."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fgvc"

# Rooms from the bottom up: a module may import its own room and the rooms below it, never one above.
LAYERS: list[set[str]] = [
    {"version", "hints", "settings", "io"},  # plain helpers, safe file IO, and the settings shape every room reads
    {"layers"},  # tensor operations: patch grid, rollout, attention blocks
    {"data"},  # datasets, transforms, splits
    {"backbones"},  # the adapters over timm
    {"methods"},  # one file per method over the adapter, and the registry
    {"storage"},  # safetensors IO, checkpoints, official checkpoints, the Hub
    {"engine"},  # fit and its phases, evaluation, prediction, distributed, precision
    {"viz"},  # maps, figures, the explorer
    {"studies"},  # recipes, the demo, pretraining, the benchmark, notebook helpers, reports
    {"cli", "__main__"},  # the command line
    {"__init__"},  # the public API: imports every room, imported by none
]
MAX_TOP_LEVEL_MODULES = 8


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The fgvc modules ``name`` imports anywhere in its file (module level, functions, TYPE_CHECKING blocks)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def room(name: str) -> str:
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def layer_of(name: str) -> int:
    r = room(name)
    for i, rooms in enumerate(LAYERS):
        if r in rooms:
            return i
    raise AssertionError(f"{name}: room {r!r} is in no layer of tests/test_layout.py")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_top_level_holds_a_few_modules_and_the_rest_sits_in_rooms():
    """At most 8 modules directly in fgvc/; everything else lives in a package named for its role."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_module_belongs_to_a_room_of_the_layering():
    """Each room (sub-package or top-level module) has its place in LAYERS."""
    for name in modules():
        layer_of(name)


def test_no_import_cycle_even_counting_function_level_imports():
    """The import graph, with every import anywhere in a file, has no cycle."""
    assert cycles(graph()) == []


def test_every_import_runs_down_the_layers():
    """A module imports only its own room and the rooms below it (the engine never imports viz; methods never
    import storage)."""
    upward = sorted(
        f"{a} -> {b}" for a, targets in graph().items() for b in targets if layer_of(b) > layer_of(a)
    )
    assert upward == []
