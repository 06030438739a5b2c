"""The import graph of ``src/lidmem`` against the layer table of ``docs/architecture.md``.

Every ``import`` in the package is read with :mod:`ast`: module-level ones, lazy ones inside
functions, ``TYPE_CHECKING`` blocks and ``importlib.import_module("lidmem....")`` calls. Each
module belongs to one row of the table (the longest matching entry); a row may import only from
its own row or the rows above it in the table (lower layers). The tests fail on an import that
runs upward, on a circle between units, on a module the table does not place and on a table entry
or example that does not exist.

``python tests/test_architecture.py`` prints the graph (layers, unit edges, violations).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "lidmem"
DOC = ROOT / "docs" / "architecture.md"


def layer_table() -> list[tuple[list[str], list[str]]]:
    """Rows of the table under ``## Layers``, lowest layer first: ``(units, examples)``."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[0]) <= set("-: ") or cells[0] == "layer":
            continue
        units = re.findall(r"`([^`]+)`", cells[0])
        if not units:
            raise ValueError(f"docs/architecture.md layer row without a `unit`: {line!r}")
        rows.append((units, re.findall(r"`([^`]+)`", cells[2])))
    return rows


def package_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    mods = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return module
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def module_imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int]]:
    """``(imported lidmem module, line)`` for every import in the file, lazy ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, name, is_package)
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if fname == "import_module" and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                targets = [node.args[0].value]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in mods and node.value != PACKAGE:
            targets = [node.value]  # a module named in a string (a lazy re-export table for import_module)
        for t in targets:
            if t == PACKAGE or t.startswith(PACKAGE + "."):
                # ``import lidmem.a.b`` names the module itself; strip attribute names
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                found.append((t, node.lineno))
    return found


def unit_of(module: str, units: list[str]) -> str | None:
    """The table entry that holds ``module`` (longest match), None when the table omits it."""
    best = None
    for u in units:
        full = f"{PACKAGE}.{u}"
        if (module == full or module.startswith(full + ".")) and (best is None or len(u) > len(best)):
            best = u
    return best


def import_graph():
    """``(rows, layer index of each unit, edges (src module, dst module, line), module -> unit)``."""
    rows = layer_table()
    layer = {u: i for i, (units, _) in enumerate(rows) for u in units}
    mods = package_modules()
    units = list(layer)
    owner = {m: unit_of(m, units) for m in mods}
    owner[PACKAGE] = None  # the package's __init__: the public facade above every layer
    edges = sorted({(m, t, line) for m, p in mods.items() for t, line in module_imports(m, p, mods)})
    return rows, layer, edges, owner


def _layer(unit: str | None, layer: dict[str, int]) -> int:
    return len(layer) if unit is None else layer[unit]


def upward_imports(graph=None) -> list[str]:
    _, layer, edges, owner = graph or import_graph()
    out = []
    for src, dst, line in edges:
        if src == PACKAGE:
            continue  # the facade may re-export from any layer
        if _layer(owner[dst], layer) > _layer(owner[src], layer):
            out.append(f"{src}:{line} imports {dst} ({owner[src]} -> {owner[dst] or 'the package facade'})")
    return out


def unit_circles(graph=None) -> list[list[str]]:
    """Strongly connected groups of more than one unit in the unit graph (Tarjan)."""
    _, layer, edges, owner = graph or import_graph()
    graph: dict[str, set[str]] = {u: set() for u in layer}
    for src, dst, _ in edges:
        a, b = owner[src], owner[dst]
        if a is not None and b is not None and a != b:
            graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_every_module_has_a_layer():
    _, _, _, owner = import_graph()
    missing = sorted(m for m, u in owner.items() if u is None and m != PACKAGE)
    assert missing == [], f"modules that docs/architecture.md's layer table does not place: {missing}"


def test_every_table_entry_exists():
    rows, _, _, _ = import_graph()
    mods = package_modules()
    absent = [u for units, _ in rows for u in units if f"{PACKAGE}.{u}" not in mods]
    assert absent == [], f"layer-table entries that are no module of {PACKAGE}: {absent}"


def _example_exists(example: str, units: list[str]) -> bool:
    if example.endswith(".py"):
        return any((SRC / PACKAGE / u.replace(".", "/") / example).is_file() for u in units)
    for prefix in [f"{PACKAGE}.{u}" for u in units] + [PACKAGE]:
        parts = example.split(".")
        obj = importlib.import_module(prefix)
        name = prefix
        for part in parts:
            name = f"{name}.{part}"
            if hasattr(obj, part):
                obj = getattr(obj, part)
                continue
            try:
                obj = importlib.import_module(name)
            except ImportError:
                break
        else:
            return True
    return False


def test_table_examples_exist():
    rows, _, _, _ = import_graph()
    bad = [(units, ex) for units, examples in rows for ex in examples if not _example_exists(ex, units)]
    assert bad == [], f"examples in docs/architecture.md's layer table that do not exist in their layer: {bad}"


def test_no_upward_imports():
    up = upward_imports()
    assert up == [], "imports that run upward in docs/architecture.md's layer table:\n" + "\n".join(up)


def test_no_circles():
    circles = unit_circles()
    assert circles == [], f"circles in the import graph of {PACKAGE}'s units: {circles}"


def test_checks_catch_a_planted_upward_import():
    """The import the issue removed (memorization.audit -> experiments.digits) would fail both checks."""
    rows, layer, edges, owner = import_graph()
    planted = (rows, layer, [*edges, ("lidmem.memorization.audit", "lidmem.experiments.digits", 1)], owner)
    assert upward_imports(planted) == ["lidmem.memorization.audit:1 imports lidmem.experiments.digits (memorization -> experiments)"]
    (group,) = unit_circles(planted)
    assert {"memorization", "experiments"} <= set(group)


def test_graph_sees_lazy_and_relative_imports(tmp_path):
    """The reader finds imports inside functions, under TYPE_CHECKING and through import_module."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..cli import main\n"
        "def f():\n    from ..experiments.digits import digits_demo\n"
        "    import importlib\n    return importlib.import_module('lidmem.reports.audit')\n"
        "_MOVED = {'x': 'lidmem.scoring.runner'}\n",
        encoding="utf-8",
    )
    mods = package_modules()
    found = {t for t, _ in module_imports("lidmem.memorization.m", src, mods)}
    assert found == {"lidmem.cli.main", "lidmem.experiments.digits", "lidmem.reports.audit", "lidmem.scoring.runner"}



def test_moved_audit_names_name_their_new_home():
    """The audit's workflow names left lidmem.memorization.audit without an upward re-export."""
    import lidmem.memorization.audit as audit
    from lidmem.experiments.digits import digits_demo
    from lidmem.reports.audit import write_audit_report
    from lidmem.workflows.audit import load_audit_model

    for name, new in (("load_audit_model", load_audit_model), ("write_audit_report", write_audit_report), ("digits_demo", digits_demo)):
        with pytest.raises(AttributeError, match=f"moved to {new.__module__}.{name}"):
            getattr(audit, name)
    assert not hasattr(audit.AuditResult, "write")
    result = audit.AuditResult(samples=None, summary={}, sample_images=np.zeros((1, 1, 2, 2)), train_images=np.zeros((2, 1, 2, 2)))
    with pytest.raises(AttributeError, match="lidmem.workflows.audit.write_audit"):
        result.write("out")


def test_load_text2image_old_path_is_a_deprecated_alias():
    """lidmem.text2image.adapters.load_text2image works one more release, with a DeprecationWarning."""
    import lidmem.text2image.adapters as adapters
    from lidmem.text2image import load_text2image

    with pytest.warns(DeprecationWarning, match="moved to lidmem.text2image.loading"):
        assert adapters.load_text2image is load_text2image
    with pytest.raises(AttributeError):
        adapters.no_such_name

if __name__ == "__main__":
    rows, layer, edges, owner = import_graph()
    for i, (units, _) in enumerate(rows):
        print(f"layer {i}: {', '.join(units)}")
    unit_edges = sorted({(owner[s], owner[d]) for s, d, _ in edges if owner[s] and owner[d] and owner[s] != owner[d]})
    print(f"{len(owner) - 1} modules, {len(layer)} units, {len(unit_edges)} unit edges")
    for a, b in unit_edges:
        print(f"  {a} -> {b}")
    print("upward imports:", *(upward_imports() or ["none"]), sep="\n  ")
    print("circles:", unit_circles() or "none")
