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


def modules(package: str) -> list[str]:
    """Every module of ``package`` (sub-packages included), by dotted name."""
    found = []
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def imported_at_top(module: str) -> set[str]:
    """What ``module`` imports when it is itself imported (not inside a function or class body)."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    deferred = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        for n in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in deferred:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


ABOVE_STATE = ("engine.web", "engine.commands", "engine.dispatch", "engine.runtime", "engine.interpreter")


def test_state_is_the_bottom_layer() -> None:
    """Redis state loads nothing above it, through any chain of imports: of the engine only the shared
    vocabulary (model, errors) and state itself."""
    state = modules("engine.state")
    assert {"engine.state.store", "engine.state.index", "engine.state.reducers"} <= set(state)
    below = reachable(*state)
    for name in below:
        assert not within(name, ABOVE_STATE), path_to(below, name)
        if within(name, ("engine",)):
            assert within(name, ("engine.state", "engine.model", "engine.errors")), path_to(below, name)


def test_no_runtime_module_imports_the_dev_tools() -> None:
    """The dev tools (the QStash dev server) are for development and tests: of the engine only
    ``hopflow qstash-dev``'s command imports them, inside the command."""
    users = {
        module
        for module in modules("engine")
        if not within(module, ("engine.devtools",))
        and any(within(n, ("engine.devtools",)) for n in imported(module))
    }
    assert users == {"engine.commands.serve"}
    assert not any(within(n, ("engine.devtools",)) for n in imported_at_top("engine.commands.serve"))
