"""The package's shape: every module imports in any order, no import cycle, no arrow pointing up a layer.

The layers are the table in ``README.md``'s *Layout* section (one place: README and test cannot disagree).
A module belongs to the layer of the longest table entry that is it or a package above it. The import graph is
read with :mod:`ast` (imports at any depth, relative imports resolved, ``from .pkg import name`` resolved to
the submodule ``pkg.name`` when there is one, importing ``a.b.c`` also runs the package ``a.b``); the facade ``usam/__init__.py`` may import from every layer,
and nothing inside the package may import it.
"""

from __future__ import annotations

import ast
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "usam"
FACADE = "usam"

#: Modules not imported by the import test, with the reason.
NOT_IMPORTED = {"usam.__main__": "running it is running the CLI (it calls sys.exit(main()))"}

#: Import-graph edges allowed although they point up a layer or close a cycle: ``(importer, imported): reason``.
ALLOWED: dict[tuple[str, str], str] = {}


def module_names() -> list[str]:
    """Dotted names of every ``usam/**/*.py``, sorted (``usam/x/__init__.py`` -> ``usam.x``)."""
    names = []
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return sorted(names)


def layer_table() -> dict[str, int]:
    """``module or package prefix -> layer number`` from the Markdown table in README's Layout section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            for name in re.findall(r"`(usam(?:\.\w+)*)`", cells[2]):
                table[name] = int(cells[0])
    assert table, "README.md's Layout section has no layer table (| # | layer | modules | what |)"
    return table


def layer_of(module: str, table: dict[str, int]) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in table:
            return table[".".join(parts[:n])]
    return None


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement in ``module`` names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, known: set[str]) -> set[str]:
    """Modules of the package that ``module`` imports, at any depth of its code."""
    path = PACKAGE.parent / module.replace(".", "/")
    path = path / "__init__.py" if _is_package(module) else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return {m for m in found if m in known and m != module}


def _with_packages(module: str, targets: set[str]) -> set[str]:
    """``targets`` plus the packages Python runs first to import each (``a.b.c`` runs ``a.b``), except the facade
    and the packages ``module`` itself sits in (they are already being imported when it runs)."""
    own = {module.rsplit(".", n)[0] for n in range(module.count(".") + 1)}
    out = set(targets)
    for t in targets:
        parts = t.split(".")
        out.update(".".join(parts[:n]) for n in range(2, len(parts)))
    return out - own


def import_graph() -> dict[str, set[str]]:
    known = set(module_names())
    return {m: _with_packages(m, imports_of(m, known)) for m in sorted(known)}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    table = layer_table()
    missing = [m for m in module_names() if m != FACADE and layer_of(m, table) is None]
    assert not missing, f"modules in no layer of README.md's Layout table: {missing}"


def test_no_upward_import():
    table = layer_table()
    top = max(table.values()) + 1  # the facade sits above every layer: nothing inside may import it
    bad = []
    for src, targets in import_graph().items():
        if src == FACADE:
            continue
        for dst in sorted(targets):
            ls, ld = layer_of(src, table), top if dst == FACADE else layer_of(dst, table)
            if ls is not None and ld is not None and ld > ls and (src, dst) not in ALLOWED:
                bad.append(f"{src} (layer {ls}) -> {dst} (layer {ld})")
    assert not bad, "imports pointing up a layer:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = {m: {t for t in ts if (m, t) not in ALLOWED} for m, ts in import_graph().items() if m != FACADE}
    graph = {m: ts - {FACADE} for m, ts in graph.items()}
    cycles = find_cycles(graph)
    detail = []
    for comp in cycles:
        edges = [f"  {a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
        detail.append(" <-> ".join(comp) + "\n" + "\n".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def _orders() -> list[tuple[str, list[str]]]:
    names = [m for m in module_names() if m not in NOT_IMPORTED]
    shuffled = []
    for seed in (0, 1, 2):
        order = list(names)
        random.Random(seed).shuffle(order)
        shuffled.append((f"shuffled (seed {seed})", order))
    return [("sorted", names), ("reversed", names[::-1]), *shuffled]


@pytest.mark.parametrize("label,order", _orders(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_module_imports_in_a_fresh_interpreter(label, order):
    """A hidden cycle (two modules each needing the other half-initialised) fails in some order."""
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", code, *order], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"importing in {label} order failed:\n{done.stderr[-3000:]}"
