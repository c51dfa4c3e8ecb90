"""One-way imports between the engine's core modules, checked on the source (every import, also
those inside functions, which could otherwise hide a cycle); imports under ``TYPE_CHECKING`` are
for type hints only and run nowhere."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported(module: str) -> set[str]:
    """Every module ``module`` imports at run time (``TYPE_CHECKING`` blocks left out)."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_runtime_never_imports_the_embedded_wiring() -> None:
    for module in ("engine.runtime", "engine.interpreter", "engine.dispatch.inprocess"):
        assert "engine.embedded" not in imported(module), module


def test_the_interpreter_knows_the_runtime_by_type_only() -> None:
    assert "engine.runtime" not in imported("engine.interpreter")
    assert "engine.runtime" not in imported("engine.dispatch.inprocess")
