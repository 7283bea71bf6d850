"""The package's shape (docs/architecture.md): layers without cycles, a lean cell process, small modules and functions.

The layers themselves are import-linter's contract (.importlinter, run by `make lint`, which `make test` runs first);
these tests hold what a layers contract does not: no cycle inside a layer either, counting imports inside functions
and under TYPE_CHECKING; what a cell's process actually imports; sizes.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from .conftest import REPO

PACKAGE = REPO / "farm"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# What a cell's process must never import: env builders, bundles, the report, the run loop, operations, the CLI, the store.
NOT_IN_A_CELL = ("farm.envs", "farm.bundles", "farm.report", "farm.runner", "farm.ops", "farm.cli", "farm.store")


def _modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return modules


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every farm module ``name`` imports, anywhere in it (functions and TYPE_CHECKING blocks included)."""
    found = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + (1 if _is_package(name) else 0)]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target not in ("farm", name):  # the top package is the facade, not a layer
                found.add(target)
    return found


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_counting_imports_inside_functions():
    modules = _modules()
    edges = {name: _imports(name, tree, set(modules)) for name, tree in modules.items() if name != "farm"}
    edges = {name: {t for t in targets if t in edges} for name, targets in edges.items()}
    assert sum(len(t) for t in edges.values()) > 200, "the import graph is read (a parser bug would find no edges)"
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_cells_process_imports_no_driver_side_module():
    """A cell's actor process, running a cell with every probe, imports nothing of the run, report, envs or CLI."""
    script = """
import json, sys
from farm.cell.actor import CellActor  # what a cell's actor process imports
from farm.cell.execute import CellSettings, execute_cell
from farm.model.cells import Cell
from farm.model.engines import FaultInjectionEngine
cell = Cell(model="m", quantization="none", model_source="zoo:qwen2-dense", engine=FaultInjectionEngine(name="seam"))
result = execute_cell(cell, CellSettings(probes=["load", "generate", "determinism", "perf"]), run_id="r")
print(json.dumps([result.status.value, sorted(m for m in sys.modules if m.startswith("farm"))]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
    status, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert status == "pass", out.stderr[-2000:]
    assert "farm.cell.execute" in imported and "farm.probes.determinism" in imported  # the probes ran
    assert [m for m in imported if m.startswith(NOT_IN_A_CELL)] == []


def test_modules_and_functions_stay_small():
    too_long_modules = []
    too_long_functions = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(REPO)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long_modules.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    too_long_functions.append(f"{where}:{node.lineno} {node.name}: {lines} lines")
    assert too_long_modules == [], f"split modules past {MAX_MODULE_LINES} lines"
    assert too_long_functions == [], f"split functions past {MAX_FUNCTION_LINES} lines along their steps"
