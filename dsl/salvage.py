"""A schema-invalid workflow, repaired just enough to compile: so the flow checks run on the rest.

The graph-based rules (step references and their dominance, unreachable steps, endless loops) need a
compiled graph, and the compiler trusts the schema. Rather than stay silent until every schema error
is fixed — and make authors fix problems in rounds — the validator compiles a *salvaged copy*:

* a part of a step that does not affect where the flow goes (``with``, ``output``, ``retry``,
  ``timeout``, ``compensate``, a kind's configuration, an unknown key) is left out or replaced by a
  minimal valid stand-in; the flow is exactly as written, so every flow check stays exact;
* a step whose flow itself is unreadable (a malformed ``next``, ``if``, ``catch``, switch or nesting,
  no id, two kinds) loses that part or is dropped, and its list is marked *uncertain*: the rules whose
  answer depends on that list's flow skip it (no false positive), and an info diagnostic says so.

The salvaged copy is never run or shown; the original document keeps every position.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dsl.graph import KINDS, TOP_SCOPE
from dsl.schema import _fast, load_schema
from dsl.source import JsonPath

Predicate = Callable[[Any], bool]

# step keys (besides the nesting kinds) that decide where the flow goes; every other step key
# (with, output, retry, timeout, compensate, …) can be left out without changing the flow
FLOW_KEYS = ("next", "if", "catch")
# a valid configuration per kind, standing in for a malformed one whose kind keeps its flow meaning
_STAND_INS: dict[str, Any] = {
    "http": {"url": "https://salvaged.invalid"},
    "action": "salvaged.action",
    "wait": {"for": "1s"},
    "set": {"salvaged": None},
    "workflow": {"name": "salvaged"},
    "succeed": {},
    "fail": {"error": "salvaged"},
}
_NESTING = ("switch", "parallel", "foreach")
_PROBE_ID = "salvage_probe"


@dataclass(frozen=True)
class Uncertain:
    """A list whose flow the salvaged copy cannot reproduce, and the step that is why."""

    scope: str
    step: str  # the step's id as written (or a placeholder)
    path: JsonPath  # the step's path in the original document
    what: str  # what was left out, for the info message


@dataclass
class Salvage:
    value: Any | None  # the repaired document (None: nothing could be salvaged)
    reason: str = ""  # why nothing could be salvaged
    uncertain: list[Uncertain] = field(default_factory=list)


def salvage(value: Any) -> Salvage:
    """A copy of ``value`` that the schema accepts, or ``Salvage(None, reason)``."""
    compiled = _fast()
    if compiled is None:  # pragma: no cover - the schema always compiles to predicates today
        return Salvage(None, "the schema cannot be checked piecewise")
    if not isinstance(value, Mapping):
        return Salvage(None, "the file is not a mapping of workflow keys")
    steps = value.get("steps")
    if not isinstance(steps, list):
        return Salvage(None, "'steps' is not a list of steps")
    repair = _Repair(compiled.check, compiled.ref("step"))
    fixed_steps = repair.steps(steps, ("steps",), TOP_SCOPE)
    if not fixed_steps:
        return Salvage(None, "no step could be read")
    out = {k: v for k, v in value.items() if k != "steps"}
    out["steps"] = fixed_steps
    out = repair.top(out)
    if not compiled.check(out):
        return Salvage(None, "the file's structure could not be read")
    return Salvage(out, uncertain=repair.uncertain)


class _Repair:
    def __init__(self, check: Predicate, step_ok: Predicate) -> None:
        self.check = check
        self.step_ok = step_ok
        self.uncertain: list[Uncertain] = []

    # -- the top level

    def top(self, value: dict[str, Any]) -> dict[str, Any]:
        if self.check(value):
            return value
        probe_steps = [{"id": _PROBE_ID, "set": {"x": 1}}]
        name = value.get("name")
        if not self.check({"name": name, "steps": probe_steps}):
            value["name"] = "salvaged"
        for key in [k for k in value if k not in ("name", "steps")]:
            if not self.check({"name": "salvaged", "steps": probe_steps, key: value[key]}):
                del value[key]  # unknown or malformed: the checks read the original document
        return value

    # -- lists of steps

    def steps(self, steps: list[Any], path: JsonPath, scope: str) -> list[Any]:
        out = []
        for i, step in enumerate(steps):
            fixed = self.step(step, (*path, i), scope)
            if fixed is not None:
                out.append(fixed)
        return out

    def step(self, step: Any, path: JsonPath, scope: str) -> Any | None:
        if self.step_ok(step):
            return step
        if not isinstance(step, Mapping):
            self._lose(scope, f"<entry {path[-1]}>", path, "the entry is not a step")
            return None
        sid = step.get("id")
        name = sid if isinstance(sid, str) and sid else f"<step {path[-1]}>"
        kinds = [k for k in KINDS if k in step]
        if not isinstance(sid, str) or not self._id_ok(sid) or len(kinds) != 1:
            why = (
                "it has no valid id"
                if not isinstance(sid, str) or not self._id_ok(sid)
                else ("it has no kind key" if not kinds else f"it has {len(kinds)} kind keys")
            )
            self._lose(scope, name, path, f"the step is left out ({why})")
            return None
        kind = kinds[0]
        known = _step_keys()
        fixed: dict[str, Any] = {k: v for k, v in step.items() if k in known}
        fixed[kind] = self.nested(kind, fixed[kind], (*path, kind), sid)
        if "with" in fixed and kind != "action":
            del fixed["with"]
        if self.step_ok(fixed):
            return fixed
        for key in [k for k in fixed if k not in FLOW_KEYS and k not in KINDS and k != "id"]:
            if not self._key_ok(key, fixed[key]):
                del fixed[key]  # with, output, retry, timeout, compensate, …: the flow stays as written
        for key in FLOW_KEYS:
            if key in fixed and not self._key_ok(key, fixed[key]):
                del fixed[key]
                self._lose(scope, sid, path, f"its `{key}` is left out")
        if not self.step_ok({"id": _PROBE_ID, kind: fixed[kind]}):
            if kind in _NESTING:
                del fixed[kind]
                fixed["set"] = _STAND_INS["set"]
                self._lose(scope, sid, path, f"its `{kind}` is left out")
            else:
                fixed[kind] = copy.deepcopy(_STAND_INS[kind])
        if self.step_ok(fixed):
            return fixed
        self._lose(scope, sid, path, "the step is left out")  # pragma: no cover - defensive
        return None

    def nested(self, kind: str, config: Any, path: JsonPath, sid: str) -> Any:
        """The configuration with its nested steps repaired (a parallel's branches, a foreach body)."""
        if kind == "parallel" and isinstance(config, Mapping) and isinstance(config.get("branches"), list):
            branches = []
            for b, branch in enumerate(config["branches"]):
                if isinstance(branch, Mapping) and isinstance(branch.get("steps"), list):
                    inner = self.steps(branch["steps"], (*path, "branches", b, "steps"), f"{sid}/{b}")
                    branch = {"steps": inner}  # a stray key beside `steps` (reported) is left out
                branches.append(branch)
            return {"branches": branches}
        if kind == "foreach" and isinstance(config, Mapping) and isinstance(config.get("steps"), list):
            known = {k: v for k, v in config.items() if k in ("items", "as", "concurrency")}
            return {**known, "steps": self.steps(config["steps"], (*path, "steps"), sid)}
        return config

    # -- probes

    def _id_ok(self, sid: str) -> bool:
        return self.step_ok({"id": sid, "set": {"x": 1}})

    def _key_ok(self, key: str, value: Any) -> bool:
        kind: tuple[str, Any] = ("action", "x.y")
        return self.step_ok({"id": _PROBE_ID, kind[0]: kind[1], key: value})

    def _lose(self, scope: str, step: str, path: JsonPath, what: str) -> None:
        self.uncertain.append(Uncertain(scope, step, path, what))


@lru_cache(maxsize=1)
def _step_keys() -> frozenset[str]:
    """The keys a step may have, as the schema says (so a key added to the language is kept)."""
    return frozenset(load_schema()["$defs"]["step"]["properties"])
