"""Actions: Python callables that workflow ``action`` steps call by name.

A name resolves to, in order:

1. a callable registered with ``@engine.action("name")`` (in a module loaded with ``--actions``);
2. otherwise ``module.attribute`` imported on demand (``pkg.sub.func``: the longest importable module
   prefix wins, the rest are attributes).

Validation never gets here: ``hopflow validate`` only reads YAML, it never imports user code. Modules
are imported when a run or a server starts (``--actions``), or lazily when a step first needs a name.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class ActionNotFound(LookupError):
    """No callable under that name: not registered and not importable as ``module.attribute``."""


class ActionLoadError(ImportError):
    """A module (``--actions`` or a ``module.attribute`` fallback) exists but failed to import."""


class ActionConflict(ValueError):
    """Two different callables registered under the same name."""


def _identity(fn: Callable[..., Any]) -> tuple[str, str]:
    target = getattr(fn, "__wrapped__", fn)
    return getattr(target, "__module__", "") or "", getattr(target, "__qualname__", repr(target))


class ActionRegistry:
    """Name → callable, shared by every thread of the process (the delivery loop runs steps in a pool)."""

    def __init__(self) -> None:
        self._actions: dict[str, Callable[..., Any]] = {}
        self._imported: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ registering

    def register(self, name: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` as ``name``.

        Re-registering the same function (same module and qualified name, e.g. a module imported twice
        under two names) replaces it silently; a *different* function under a taken name is an error,
        because silently picking one would make runs depend on import order.
        """
        if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
            raise ValueError(f"action name {name!r} must be a non-empty string of letters, digits, '_.-'")
        if not callable(fn):
            raise TypeError(f"action {name!r} must be callable, got {type(fn).__name__}")
        with self._lock:
            existing = self._actions.get(name)
            if existing is not None and existing is not fn and _identity(existing) != _identity(fn):
                mod, qual = _identity(existing)
                raise ActionConflict(f"action {name!r} is already registered by {mod}.{qual}")
            self._actions[name] = fn

    def action(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator form of :meth:`register`; without a name the function's ``__name__`` is used."""

        def decorate(fn: F) -> F:
            self.register(name or fn.__name__, fn)
            return fn

        return decorate

    def unregister(self, name: str) -> None:
        with self._lock:
            self._actions.pop(name, None)
            self._imported.pop(name, None)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._actions)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._actions

    # -------------------------------------------------------------------------------------- resolving

    def resolve(self, name: str) -> Callable[..., Any]:
        """The callable for ``name``; raises :class:`ActionNotFound` or :class:`ActionLoadError`."""
        fn = self._actions.get(name) or self._imported.get(name)  # a dict read: atomic, no lock per call
        if fn is not None:
            return fn
        fn = self._import_attribute(name)
        with self._lock:
            self._imported[name] = fn
        return fn

    def _import_attribute(self, name: str) -> Callable[..., Any]:
        parts = name.split(".") if isinstance(name, str) else []
        if len(parts) < 2 or not all(p.isidentifier() for p in parts):
            raise ActionNotFound(self._not_found(name))
        _ensure_cwd_on_path()
        for cut in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:cut])
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                # only "this prefix does not exist" means try a shorter one; a missing dependency
                # *inside* an existing module is a real error the author must see
                if _is_missing(exc, module_name):
                    continue
                raise ActionLoadError(f"importing {module_name!r} for {name!r} failed: {exc}") from None
            except Exception as exc:
                raise ActionLoadError(
                    f"importing {module_name!r} for action {name!r} failed: {type(exc).__name__}: {exc}"
                ) from None
            target: Any = module
            for attr in parts[cut:]:
                if attr.startswith("_"):
                    raise ActionNotFound(f"action {name!r}: private attribute {attr!r} is not an action")
                if not hasattr(target, attr):
                    raise ActionNotFound(f"action {name!r}: module {module_name!r} has no attribute {attr!r}")
                target = getattr(target, attr)
            if not callable(target):
                raise ActionNotFound(f"action {name!r}: {name} is a {type(target).__name__}, not callable")
            return target  # type: ignore[no-any-return]
        raise ActionNotFound(self._not_found(name))

    def _not_found(self, name: str) -> str:
        known = self.names()
        hint = f"registered actions: {', '.join(known[:20])}" if known else "no actions are registered"
        return (
            f"no action named {name!r} ({hint}; load a module with --actions, "
            "or name an importable module.attribute)"
        )


REGISTRY = ActionRegistry()


def action(name: str | None = None) -> Callable[[F], F]:
    """Register a function as a workflow action in the process-wide registry::

    @engine.action("payments.charge")
    def charge(ctx, user: str, cents: int) -> dict: ...
    """
    return REGISTRY.action(name)


# ------------------------------------------------------------------------------------- loading modules


def _is_missing(exc: ModuleNotFoundError, module_name: str) -> bool:
    """Whether ``module_name`` itself (or a parent package) is what was not found."""
    return exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + "."))


def _ensure_cwd_on_path() -> None:
    """The ``hopflow`` console script's sys.path starts at its bin/ dir; users expect their project."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def split_specs(spec: str | Iterable[str] | None) -> list[str]:
    """``"a.b,c"`` or ``["a.b", "c,d"]`` → ``["a.b", "c", "d"]``."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def load_module(spec: str) -> ModuleType:
    """Import one actions module by dotted name (``pkg.mod``) or by file path (``workflows/demo.py``).

    A file is imported under its stem with its folder put on ``sys.path`` (so it can import its
    siblings, and ``demo.func`` names resolve); if that stem is already taken by another module
    (``json.py``…), it is loaded under a private name instead. Raises :class:`ActionLoadError` with
    one readable line.
    """
    looks_like_path = spec.endswith(".py") or os.sep in spec or "/" in spec
    if looks_like_path:
        return _load_file(Path(spec))
    if not all(p.isidentifier() for p in spec.split(".")):
        raise ActionLoadError(f"--actions {spec!r} is neither a module name nor a .py file")
    _ensure_cwd_on_path()
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if _is_missing(exc, spec):
            raise ActionLoadError(f"actions module {spec!r} not found (from {os.getcwd()})") from None
        raise ActionLoadError(f"actions module {spec!r} failed to import: {exc}") from None
    except ActionConflict as exc:
        raise ActionLoadError(f"actions module {spec!r}: {exc}") from None
    except Exception as exc:
        raise ActionLoadError(_describe_import_error(spec, exc)) from None


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ActionLoadError(f"actions file {str(path)!r} not found")
    path = path.resolve()
    stem = path.stem
    if not stem.isidentifier():
        raise ActionLoadError(f"actions file {str(path)!r}: {stem!r} is not a valid module name")
    existing = sys.modules.get(stem)
    if existing is not None and _same_file(existing, path):
        return existing
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = stem if existing is None else f"_hopflow_actions_{stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:  # pragma: no cover - .py files always have one
        raise ActionLoadError(f"actions file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ActionLoadError(_describe_import_error(str(path), exc)) from None
    return module


def _same_file(module: ModuleType, path: Path) -> bool:
    file = getattr(module, "__file__", None)
    try:
        return file is not None and Path(file).resolve() == path
    except OSError:  # pragma: no cover
        return False


def _describe_import_error(what: str, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"actions module {what!r}: SyntaxError: {exc.msg} (line {exc.lineno})"
    tb = exc.__traceback__
    line = None
    while tb is not None:  # the innermost frame that is the user's file tells them where to look
        line = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    where = f" ({os.path.basename(line[0])}:{line[1]})" if line else ""
    return f"actions module {what!r} failed to import: {type(exc).__name__}: {exc}{where}"


def load_modules(spec: str | Iterable[str] | None) -> list[ModuleType]:
    """Import every module in ``"pkg.mod,workflows/demo.py"`` (the ``--actions`` option)."""
    return [load_module(item) for item in split_specs(spec)]
