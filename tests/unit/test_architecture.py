"""The package's shape: commands on top, library beneath, no cycles, no name at two levels.

Read from the source files (``ast``), not from imports at run time, so that an import inside a
function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "skinlesion"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_command(module: str) -> bool:
    """``python -m skinlesion.<task>``: a module file at the top level, or a package's ``__main__``."""
    parts = module.split(".")
    top_file = len(parts) == 2 and MODULES[module].name != "__init__.py"
    return top_file or parts[-1] == "__main__"


def resolve(name: str) -> str | None:
    """The project module that ``import name`` / ``from name import x`` loads (or its parent package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    found: set[str] = set()
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name in ``base``
        else:
            continue
        for name in names:
            if name.startswith("skinlesion") and (target := resolve(name)) and target != module:
                found.add(target)
    return found - {"skinlesion"}  # the root package holds only __version__


GRAPH = {m: imports_of(m) for m in MODULES}


def test_the_walk_sees_the_imports_it_must_judge() -> None:
    """Guards the checks below: they are only as good as this walk of the imports."""
    assert "skinlesion.train" in MODULES and is_command("skinlesion.train")
    assert not is_command("skinlesion.training.fit") and is_command("skinlesion.serve.__main__")
    assert "skinlesion.training.fit" in GRAPH["skinlesion.train"]
    assert "skinlesion.core.errors" in GRAPH["skinlesion.data.manifest"]


def test_no_library_module_imports_a_command() -> None:
    bad = [
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if not is_command(m)
        for t in targets
        if is_command(t)
    ]
    assert not bad, "library modules must not import commands (move the shared code into a package):\n" + (
        "\n".join(bad)
    )


# What each library package may import, bottom to top: the model layer never needs reports or plots,
# the torch-free serving path never needs training.
LAYERS = {
    "core": set(),
    "data": {"core"},
    "models": {"core", "data"},
    "reports": {"core", "data"},
    "inference": {"core", "data", "models"},
    "serve": {"core", "inference"},
    "sweeps": {"core"},
    "training": {"core", "data", "models", "inference", "reports"},
}


def test_packages_import_only_the_layers_beneath() -> None:
    packages = {m.split(".")[1] for m in MODULES if m.count(".") >= 1 and not is_command(m)}
    assert packages <= set(LAYERS), f"a new package needs its place in LAYERS: {packages - set(LAYERS)}"
    bad = [
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if m.count(".") >= 1 and not is_command(m)
        for t in targets
        if t.split(".")[1] != m.split(".")[1] and t.split(".")[1] not in LAYERS[m.split(".")[1]]
    ]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_top_level_holds_only_commands() -> None:
    for module, path in MODULES.items():
        if is_command(module):
            text = path.read_text()
            assert 'if __name__ == "__main__":' in text, f"{path.name} is at the top level but is no command"


def test_no_name_at_two_levels() -> None:
    """``cv.py`` beside ``reports/cv.py``, or ``sweep.py`` beside ``sweeps/``, hide which is which."""
    places: dict[str, list[str]] = defaultdict(list)
    for module in MODULES:
        leaf = module.rpartition(".")[2]
        if leaf not in ("__main__", "skinlesion"):
            places[leaf.removesuffix("s")].append(module)
    repeated = {name: where for name, where in places.items() if len(where) > 1}
    assert not repeated, f"names used at two places: {repeated}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_short_enough_to_read(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (> {MAX_LINES}): split it by concept"
