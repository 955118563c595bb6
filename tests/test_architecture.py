"""The package's shape: layers that import one way, no cycles, short functions.

These read the source with :mod:`ast` (no JAX), so they are instant. They are
what keeps the layout of ``jgradcheck/README.md`` true as the code changes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jgradcheck"

LAYERS = {
    "_typing": 0,
    "_dtypes": 0,
    "_errors": 0,
    "_options": 0,
    "_pytree": 1,
    "_numerics": 2,
    "_report": 3,
    "_engine": 4,
    "_leaf": 5,
    "_checks": 6,
    "_interfaces": 7,
    "pytest_plugin": 7,
    "strategies": 7,
    "__init__": 8,
}
"""Rank of each top-level part: a module imports only from parts of lower or
equal rank (equal: its own subpackage)."""

MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _package_of(name: str, path: Path) -> list[str]:
    parts = name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every jgradcheck module ``name`` imports, function-local ones included."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name, path)
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("jgradcheck"):
                mod = node.module.removeprefix("jgradcheck").lstrip(".")
            else:
                continue
            targets = [f"{mod}.{a.name}".strip(".") for a in node.names] + [mod]
        elif isinstance(node, ast.Import):
            targets = [
                a.name.removeprefix("jgradcheck").lstrip(".")
                for a in node.names
                if a.name.startswith("jgradcheck")
            ]
        for t in targets:
            # The longest known module the target names (``pkg.mod.func`` -> ``pkg.mod``).
            parts = t.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in known and cand != name:
                    out.add(cand)
                    break
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _part(module: str) -> str:
    return module.split(".")[0] if module else "__init__"


def test_every_module_belongs_to_a_layer():
    unknown = sorted(m for m in _modules() if _part(m) not in LAYERS)
    assert not unknown, f"modules outside the layers of jgradcheck/README.md: {unknown}"


def test_imports_flow_one_way():
    wrong = []
    for mod, deps in _graph().items():
        for dep in deps:
            if LAYERS.get(_part(dep), 99) > LAYERS.get(_part(mod), -1):
                wrong.append(f"{mod or '__init__'} imports {dep}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles (function-local imports count): {cycles}"


def _code_lines(lines: list[str], node: ast.AST) -> int:
    body = node.body
    doc = set()
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        doc = set(range(body[0].lineno, body[0].end_lineno + 1))
    count = 0
    for i in range(node.lineno, node.end_lineno + 1):
        text = lines[i - 1].strip()
        if i not in doc and text and not text.startswith("#"):
            count += 1
    return count


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_functions_are_short(path):
    lines = path.read_text().splitlines()
    long = [
        f"{node.name} (line {node.lineno}): {n} lines of code"
        for node in ast.walk(ast.parse("\n".join(lines)))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (n := _code_lines(lines, node)) > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines of code: {long}"
