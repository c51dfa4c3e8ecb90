"""`flow_control:` as the compiler keeps it and the engine reads it (pure: no I/O, no engine).

A workflow's or step's `flow_control` becomes a plain mapping on the Graph/Node:
``{"key": text or template, "rate": n, "period_ms": ms, "parallelism": n, "max_running": n}``,
only the keys written (``period_ms`` only with a rate; default 1 s). The engine renders the key when
an execution starts (engine/flow/) and maps the rest to QStash's Flow-Control headers or enforces it
in the local dispatcher. The rules about its shape live in dsl/checks/flow_control.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dsl.durations import DurationError, parse_ms

DEFAULT_PERIOD_MS = 1000
LIMITS = ("rate", "parallelism", "max_running")
# names a flow-control key may read: it is rendered when the execution starts, before any step ran
KEY_NAMES = ("input", "vars", "env", "execution")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def normalise(value: Any, *, workflow: bool) -> dict[str, Any] | None:
    """The compiled form of one `flow_control` mapping (None when it sets no limit). Forgiving: a
    malformed entry is dropped (the schema and the `flow-control` rule report it)."""
    if not isinstance(value, Mapping):
        return None
    out: dict[str, Any] = {}
    key = value.get("key")
    if isinstance(key, str) and key:
        out["key"] = key
    for name in LIMITS if workflow else LIMITS[:2]:
        n = _count(value.get(name))
        if n is not None:
            out[name] = n
    if "rate" in out:
        out["period_ms"] = DEFAULT_PERIOD_MS
        period = value.get("period")
        if isinstance(period, str):
            try:
                out["period_ms"] = max(DEFAULT_PERIOD_MS, parse_ms(period))
            except DurationError:
                pass
    if not any(name in out for name in LIMITS):
        return None
    return out


def default_key(workflow: str, step: str | None = None) -> str:
    """The key when none is written: every execution of the workflow (or of that step) shares it."""
    return workflow if step is None else f"{workflow}/{step}"
