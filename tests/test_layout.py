"""The package's layers (docs/layout.md): a module imports only from its own layer or below, and no two modules import
each other, directly or through others. Lazy imports inside functions count: they are imports all the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "drirl"

# Lowest first. A module's layer is the first entry its dotted name starts with; "core" holds the rest.
LAYERS = (
    ("core", ()),
    ("data", ("drirl.data",)),
    ("reward", ("drirl.reward",)),
    ("align", ("drirl.align",)),
    ("eval", ("drirl.eval",)),
    ("pipeline", ("drirl.pipeline", "drirl.report")),
    ("cli", ("drirl.commands", "drirl.cli")),
)


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return 0


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The drirl modules ``name`` imports anywhere in its file (``from drirl.x import y`` counts drirl.x.y when that
    is a module, else drirl.x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import: from the package, up level - 1 packages
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_the_layer_table_covers_every_package():
    packages = {name for name, path in modules().items() if path.name == "__init__.py" and name != "drirl"}
    placed = {p for _, prefixes in LAYERS for p in prefixes}
    assert packages <= placed, f"place these packages in a layer (and in docs/layout.md): {packages - placed}"


def test_no_module_imports_from_a_higher_layer():
    upward = sorted(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                    for name, targets in import_graph().items() for target in targets
                    if layer_of(target) > layer_of(name) and name != "drirl")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_between_modules():
    # Package __init__ files re-export their modules' names: the edge package -> its own module is not a cycle.
    graph = {name: {t for t in targets if not (modules()[name].name == "__init__.py" and t.startswith(name + "."))}
             for name, targets in import_graph().items()}
    graph.pop("drirl", None)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycle(graph) == expected


def test_the_layer_rule_sees_a_lazy_upward_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from drirl.align.recipe import run_align\n")
    assert imports_of("drirl.reward.m", source, {"drirl.align.recipe"}) == {"drirl.align.recipe"}
    assert layer_of("drirl.align.recipe") > layer_of("drirl.reward.m")
