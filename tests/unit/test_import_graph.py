"""The house rules of cli/deskguard, read from the source with ast (nothing is imported): no import circles
(a module importing one that imports it back, however far round, function-level and type-checking imports
included); the library never imports the commands; nothing that runs on a laptop imports the library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cli" / "deskguard"
# What Ansible ships to a laptop: modules and the module_utils they import.
LAPTOP_SIDE = [ROOT / "plugins" / "modules", ROOT / "plugins" / "modules_windows", ROOT / "plugins" / "module_utils"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names, relative dots resolved from `path`'s package."""
    base = node.module or ""
    if not node.level:
        return base
    name = module_name(path)
    parts = (name if path.name == "__init__.py" else name.rpartition(".")[0]).split(".")
    return ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))


def imported(path: Path) -> set[str]:
    """Every deskguard module `path` imports, relative imports resolved; `from pkg import name` counts as pkg.name
    when that is a module, else as pkg."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(path, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m == "deskguard" or m.startswith("deskguard.")}


GRAPH = {name: imported(path) & set(MODULES) for name, path in MODULES.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_library():
    found = circles(GRAPH)
    assert not found, "import circles (modules that import each other, directly or round about): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_the_library_never_imports_the_commands():
    front = {"deskguard.cli", "deskguard.__main__"}
    wrong = {f"{name} imports {target}" for name, targets in GRAPH.items()
             if name not in front and not name.startswith("deskguard.commands")
             for target in targets if target in front or target.startswith("deskguard.commands")}
    assert not wrong, sorted(wrong)


def test_the_laptop_side_never_imports_the_library():
    wrong = []
    for folder in LAPTOP_SIDE:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                wrong += [f"{path.relative_to(ROOT)} imports {n}" for n in names
                          if n == "deskguard" or n.startswith("deskguard.")]
    assert not wrong, wrong


def test_every_deskguard_import_names_a_module_that_exists():
    """Imports inside functions only fail when they run: a moved module would otherwise break one command
    quietly. Checked for the library, the plugins and the tests."""
    wrong = []
    for folder in (PACKAGE, ROOT / "plugins", ROOT / "tests"):
        for path in sorted(folder.rglob("*.py")):
            if folder != PACKAGE and "deskguard" not in path.read_text():
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and (node.level or node.module):
                    if node.level and folder == PACKAGE:
                        names = [resolve(path, node)]
                    elif node.level:
                        continue
                    else:
                        names = [node.module]
                else:
                    continue
                wrong += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                          if (n == "deskguard" or n.startswith("deskguard.")) and n not in MODULES]
    assert not wrong, wrong
