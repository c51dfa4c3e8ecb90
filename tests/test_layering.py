"""One-way imports between the engine's core modules, checked on the source (every import, also
those inside functions, which could otherwise hide a cycle); imports under ``TYPE_CHECKING`` are
for type hints only and run nowhere."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def imported(module: str) -> frozenset[str]:
    """Every module ``module`` imports at run time (``TYPE_CHECKING`` blocks left out)."""
    path = ROOT / module.replace(".", "/")
    source = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
    tree = ast.parse(source.read_text())
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
    return frozenset(found)


def test_the_runtime_never_imports_the_embedded_wiring() -> None:
    for module in ("engine.runtime", "engine.interpreter", "engine.dispatch.inprocess"):
        assert "engine.embedded" not in imported(module), module


def test_the_interpreter_knows_the_runtime_by_type_only() -> None:
    assert "engine.runtime" not in imported("engine.interpreter")
    assert "engine.runtime" not in imported("engine.dispatch.inprocess")


def _module_exists(module: str) -> bool:
    path = ROOT / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def reachable(start: str, *extra: str) -> dict[str, str]:
    """Every hopflow module ``start`` (and ``extra``) load at run time, directly or through others,
    function-local imports included: module → the module that imports it (to name the path)."""
    via: dict[str, str] = {}
    todo = [start, *extra]
    while todo:
        module = todo.pop()
        for name in imported(module):
            if name.split(".")[0] in ("engine", "dsl") and _module_exists(name) and name not in via:
                via[name] = module
                todo.append(name)
    return via


def path_to(via: dict[str, str], target: str) -> str:
    chain = [target]
    while chain[-1] in via and len(chain) < 50:
        chain.append(via[chain[-1]])
    return " <- ".join(chain)


STEP_MODULES = tuple(f"engine.steps.{p.stem}" for p in (ROOT / "engine" / "steps").glob("*.py"))


def test_interpreter_runtime_embedded_import_one_way_through_every_path() -> None:
    """interpreter ← runtime ← embedded, never back, through any chain of imports (the step modules,
    which the runtime loads by name, count as the interpreter's)."""
    below_interpreter = reachable("engine.interpreter", *STEP_MODULES)
    for upper in ("engine.runtime", "engine.embedded", "engine.commands.run", "engine.web.core"):
        assert upper not in below_interpreter, path_to(below_interpreter, upper)
    below_runtime = reachable("engine.runtime")
    for upper in ("engine.embedded", "engine.commands.run", "engine.web.core"):
        assert upper not in below_runtime, path_to(below_runtime, upper)
    assert "engine.interpreter" in below_runtime


def test_the_local_dispatcher_knows_nothing_of_the_runtime() -> None:
    """The queue (and its fast-path policy) is below the runtime: it is handed callbacks, and the
    runtime asks it ``may_run_in_place``; it never imports the runtime, interpreter or wiring."""
    for module in ("engine.dispatch.local", "engine.dispatch.inprocess"):
        below = reachable(module)
        for upper in ("engine.runtime", "engine.interpreter", "engine.embedded"):
            assert upper not in below, path_to(below, upper)
