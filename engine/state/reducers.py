"""Reducers for declared vars: how a ``set`` combines with the var's current value.

The checkpoint script applies them atomically (``checkpoint.lua``), so parallel branches and foreach
items that set one reduced var never lose a contribution. This module is the Python half: it checks
a contribution before the checkpoint (a wrong type fails the step with ``template``, before anything
is written), encodes it for the script, and applies the same rule to the node's own view of the var
(:func:`apply` is also the reference model the tests compare the script against).

Numbers follow Lua's (IEEE double) arithmetic: integers are exact up to 2**53.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from engine.model import StepError, StepFailure

REDUCERS = ("replace", "append", "extend", "sum", "min", "max", "merge")
MAX_MAGNITUDE = 1e300  # a sum that could overflow to infinity is refused up front


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _refuse(name: str, op: str, what: str, value: Any) -> StepFailure:
    got = type(value).__name__ if value is not None else "null"
    return StepFailure(StepError("template", f"vars.{name} ({op}) takes {what}, got {got}"))


def encode(name: str, op: str, value: Any) -> dict[str, Any]:
    """The script's operation for one contribution (raises StepFailure for a value of the wrong type)."""
    if op == "append":
        return {"n": name, "op": op, "v": _dumps(value)}
    if op == "extend":
        if not isinstance(value, list):
            raise _refuse(name, op, "a list", value)
        return {"n": name, "op": op, "v": ",".join(_dumps(v) for v in value)}
    if op in ("sum", "min", "max"):
        if not _number(value) or abs(value) > MAX_MAGNITUDE:
            raise _refuse(name, op, "a finite number", value)
        return {"n": name, "op": op, "v": _dumps(value)}
    if op == "merge":
        if not isinstance(value, Mapping):
            raise _refuse(name, op, "a mapping", value)
        flat: list[str] = []
        for k, v in value.items():
            flat += [_dumps(str(k)), _dumps(v)]
        return {"n": name, "op": op, "kv": flat}
    raise ValueError(f"not a reducer: {op}")


def apply(op: str, current: Any, value: Any) -> Any:
    """What the var holds after one contribution (the same rule as the script)."""
    if op == "replace":
        return value
    if op == "append":
        return [*(current if isinstance(current, list) else []), value]
    if op == "extend":
        return [*(current if isinstance(current, list) else []), *value]
    if op == "sum":
        base = current if _number(current) else 0
        total = float(base) + float(value)
        return int(total) if total.is_integer() and abs(total) < 2**63 else total
    if op in ("min", "max"):
        if not _number(current):
            return value
        pick = min if op == "min" else max
        return pick(current, value)
    if op == "merge":
        return {**(current if isinstance(current, Mapping) else {}), **value}
    raise ValueError(f"not a reducer: {op}")


def initial_fields(declared: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The start values: ``(fields of the vars hash, flat entries of the merge hash)``."""
    fields: dict[str, str] = {}
    merged: list[str] = []
    for name, decl in declared.items():
        initial = decl.get("initial")
        if decl.get("reduce") == "merge":
            for k, v in (initial or {}).items():
                merged += [merge_field(name, _dumps(str(k))), _dumps(v)]
        else:  # null too: a declared var is readable from the start
            fields[name] = _dumps(initial)
    return fields, merged


def merge_field(name: str, json_key: str) -> str:
    """A merge var's entry in ``hf:{E}:vm``: the var's name, a newline, the key as JSON text."""
    return f"{name}\n{json_key}"


def assemble(entries: Mapping[str, str]) -> dict[str, Any]:
    """Merge vars from the ``vm`` hash's entries: ``{name: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for field, raw in entries.items():
        name, _, key = field.partition("\n")
        out.setdefault(name, {})[json.loads(key)] = json.loads(raw)
    return out
