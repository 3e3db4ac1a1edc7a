"""The shape of ``speech/metering``: no import circle, no module over 500 lines.

The import graph is read from the source with :mod:`ast`, not by importing:
every ``import`` / ``from ... import`` counts wherever it stands (module
level, inside a function, under ``if TYPE_CHECKING:``), and so does
``importlib.import_module("...")`` with a literal name. A module also depends
on its package's ``__init__`` (Python runs it first), so an ``__init__`` that
imports its own submodules closes a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import speech.metering

PACKAGE = "speech.metering"
PACKAGE_DIR = Path(speech.metering.__file__).parent
MAX_LINES = 500


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module below ``package_dir``, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names ``tree`` imports, parents included (``a.b.c`` imports ``a`` and ``a.b`` too)."""
    here = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            names.add(source)
            # ``from pkg import name``: ``name`` may be a submodule.
            names.update(f"{source}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    with_parents = set()
    for name in names:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_parents


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (itself excluded)."""
    modules = module_names(package_dir, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = _imported(tree, name, _is_package(path))
        if name != package:
            edges.add(name.rpartition(".")[0])  # the package's __init__ runs first
        graph[name] = {m for m in edges if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or ``None``."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph[node]):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)) is not None:
            return cycle
    return None


# ---------------------------------------------------------------- speech/metering


def test_metering_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE_DIR, PACKAGE)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_graph_sees_function_level_imports() -> None:
    # The factory imports its backends inside open_ledger; the graph must see them.
    graph = import_graph(PACKAGE_DIR, PACKAGE)
    assert {f"{PACKAGE}.sqlite", f"{PACKAGE}.postgres"} <= graph[f"{PACKAGE}.factory"]
    assert f"{PACKAGE}.ledger" in graph[f"{PACKAGE}.sqlbase"]


def test_metering_package_imports_nothing_of_its_own() -> None:
    # No re-exports: each name is imported from the module that defines it.
    assert import_graph(PACKAGE_DIR, PACKAGE)[PACKAGE] == set()


def test_no_metering_module_is_over_500_lines() -> None:
    long = {
        name: n
        for name, path in module_names(PACKAGE_DIR, PACKAGE).items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


# ---------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return pkg


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        pytest.param(
            {"__init__.py": "", "a.py": "from pkg.b import x\n", "b.py": "def f():\n    from pkg import a\n"},
            ["pkg.a", "pkg.b", "pkg.a"],
            id="function-level",
        ),
        pytest.param(
            {
                "__init__.py": "",
                "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\n",
                "b.py": "from . import a\n",
            },
            ["pkg.a", "pkg.b", "pkg.a"],
            id="type-checking-and-relative",
        ),
        pytest.param(
            {"__init__.py": "from pkg.a import x\n", "a.py": "x = 1\n"},
            ["pkg", "pkg.a", "pkg"],
            id="init-re-export",
        ),
        pytest.param(
            {
                "__init__.py": "",
                "a.py": "import importlib\ndef f():\n    return importlib.import_module('pkg.sub.c')\n",
                "sub/__init__.py": "",
                "sub/c.py": "from ..a import f\n",
            },
            ["pkg.a", "pkg.sub.c", "pkg.a"],
            id="import-module-and-subpackage",
        ),
    ],
)
def test_the_checker_finds_each_kind_of_cycle(tmp_path: Path, files: dict[str, str], cycle: list[str]) -> None:
    graph = import_graph(_write(tmp_path, files), "pkg")
    assert find_cycle(graph) == cycle


def test_the_checker_passes_a_tree(tmp_path: Path) -> None:
    files = {
        "__init__.py": '"""Docs only."""\n',
        "a.py": "from pkg.b import x\nfrom pkg import c\n",
        "b.py": "def f():\n    from pkg.c import y\n",
        "c.py": "import os\n",
    }
    graph = import_graph(_write(tmp_path, files), "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg", "pkg.b", "pkg.c"}, "pkg.b": {"pkg", "pkg.c"}, "pkg.c": {"pkg"}}
    assert find_cycle(graph) is None
