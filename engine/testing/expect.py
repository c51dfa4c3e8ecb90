"""A case's expectations against what it did, each failure with a diff a person can act on.

* ``path``: the steps that ran, in order — one entry per time a step was entered (retries of it are
  the same entry; skipped steps are left out); shown as a sequence diff (``-`` expected but missing,
  ``+`` ran but not expected).
* ``output`` exactly, ``output_contains`` as a subset (mappings: the keys given; lists: same length,
  item by item), ``vars`` as a subset of the final vars, ``error`` by the keys given: a JSON diff.
* ``calls``: per mocked step, a count, a subset every call's rendered ``with``/request contains, or a
  list with one subset per call; the calls actually made are listed.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from dsl.graph import Graph, compensations
from engine.testing.harness import Observed
from engine.testing.mocks import Call
from engine.testing.spec import Case

LEGEND = "(- expected, did not run; + ran, not expected)"


@dataclass
class Mismatch:
    what: str  # the expectation key ("path", "output", "calls.book", ...)
    message: str
    line: int | None = None  # where the expectation is written
    diff: list[str] = field(default_factory=list)


def path_of(observed: Observed) -> list[str]:
    return steps_in(observed.history, "run")


def compensated_of(observed: Observed, graph: Graph) -> list[str]:
    """Steps whose compensation completed, in order: a ``compensate`` list counts once, when its
    last body succeeded (its bodies run one after the other, each with its own history entry)."""
    out = []
    done: dict[str, int] = {}
    for step in steps_in(observed.history, "compensate"):
        node = graph.nodes.get(step)
        bodies = len(compensations(node)) if node is not None else 1
        done[step] = done.get(step, 0) + 1
        if done[step] >= max(bodies, 1):
            out.append(step)
            done[step] = 0
    return out


def steps_in(history: list[dict[str, Any]], phase: str) -> list[str]:
    """Step ids entered in ``phase``, in order; a retry (attempt > 1) is part of the same entry."""
    out = []
    for h in history:
        if h.get("phase") != phase or not h.get("step"):
            continue
        if phase == "run" and int(h.get("attempt") or 1) > 1:
            continue
        if phase == "compensate" and h.get("status") != "ok":
            continue
        out.append(h["step"])
    return out


def contains(actual: Any, expected: Any) -> bool:
    """``expected`` is a subset of ``actual`` (mappings by key, lists item by item, else equal)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(contains(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    return bool(expected == actual)


def json_diff(expected: Any, actual: Any) -> list[str]:
    a = _pretty(expected).splitlines()
    b = _pretty(actual).splitlines()
    lines = list(difflib.unified_diff(a, b, "expected", "actual", lineterm="", n=3))
    return lines[2:] if lines else []


def sequence_diff(expected: list[str], actual: list[str]) -> list[str]:
    """Step by step: ``  same``, ``- expected, did not run``, ``+ ran, not expected``."""
    out = []
    matcher = difflib.SequenceMatcher(a=expected, b=actual, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out += [f"  {s}" for s in expected[i1:i2]]
            continue
        out += [f"- {s}" for s in expected[i1:i2]]
        out += [f"+ {s}" for s in actual[j1:j2]]
    return out


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:119] + "…"


def check(case: Case, observed: Observed) -> list[Mismatch]:
    """Every failed expectation of ``case`` (empty: the case passed). Problems that make the run
    meaningless (an unmocked call, an exhausted sequence) come first."""
    out = [Mismatch("mocks", problem) for problem in observed.problems]
    expect = case.expect
    record = observed.record
    line = case.expect_lines.get

    if "status" in expect and record["status"] != expect["status"]:
        detail = ""
        if record.get("error"):
            err = record["error"]
            detail = f" (error {err.get('name')} in step {err.get('step')}: {err.get('message')})"
        elif record.get("current"):
            detail = " (still at " + ", ".join(c["node"] for c in record["current"]) + ")"
        out.append(
            Mismatch(
                "status",
                f"status: expected {expect['status']}, got {record['status']}{detail}",
                line("status"),
            )
        )
    if "output" in expect and record.get("output") != expect["output"]:
        out.append(
            Mismatch(
                "output", "output differs", line("output"), json_diff(expect["output"], record.get("output"))
            )
        )
    if "output_contains" in expect and not contains(record.get("output"), expect["output_contains"]):
        out.append(
            Mismatch(
                "output_contains",
                "output does not contain what was expected",
                line("output_contains"),
                json_diff(expect["output_contains"], record.get("output")),
            )
        )
    if "path" in expect:
        actual = path_of(observed)
        if actual != expect["path"]:
            out.append(
                Mismatch(
                    "path", f"path differs {LEGEND}", line("path"), sequence_diff(expect["path"], actual)
                )
            )
    if "compensated" in expect:
        actual = compensated_of(observed, case.graph)
        if actual != expect["compensated"]:
            out.append(
                Mismatch(
                    "compensated",
                    f"compensations differ {LEGEND}",
                    line("compensated"),
                    sequence_diff(expect["compensated"], actual),
                )
            )
    if "error" in expect:
        wanted = expect["error"]
        wanted = {"name": wanted} if isinstance(wanted, str) else wanted
        got = record.get("error")
        if got is None or not contains(got, wanted):
            out.append(Mismatch("error", "error differs", line("error"), json_diff(wanted, got)))
    if "vars" in expect and not contains(observed.vars, expect["vars"]):
        shown = {k: observed.vars.get(k) for k in expect["vars"]}
        out.append(Mismatch("vars", "vars differ", line("vars"), json_diff(expect["vars"], shown)))
    for key, wanted in (expect.get("calls") or {}).items():
        out += _calls(key, wanted, observed.calls, False, line(f"calls.{key}") or line("calls"))
    return out


def _calls(key: str, wanted: Any, calls: list[Call], compensate: bool, line: int | None) -> list[Mismatch]:
    made = [c for c in calls if c.key == key and c.compensate == compensate]
    label = f"calls.{key}" + (".compensate" if compensate else "")
    listed = [f"  call {i + 1}: {_short(c.shown())}" for i, c in enumerate(made)] or ["  (no calls)"]
    out: list[Mismatch] = []
    if isinstance(wanted, int):
        wanted = {"count": wanted}
    if isinstance(wanted, list):
        if len(made) != len(wanted):
            out.append(
                Mismatch(label, f"{label}: expected {len(wanted)} calls, got {len(made)}", line, listed)
            )
        for i, (call, want) in enumerate(zip(made, wanted, strict=False)):
            out += _one(label, i, call, want, line)
        return out
    if "count" in wanted and len(made) != wanted["count"]:
        out.append(
            Mismatch(label, f"{label}: expected {wanted['count']} calls, got {len(made)}", line, listed)
        )
    for i, call in enumerate(made):
        out += _one(label, i, call, {k: v for k, v in wanted.items() if k in ("with", "request")}, line)
    if "compensate" in wanted:
        out += _calls(key, wanted["compensate"], calls, True, line)
    return out


def _one(label: str, i: int, call: Call, want: dict[str, Any], line: int | None) -> list[Mismatch]:
    out = []
    for part, actual in (("with", call.with_), ("request", call.request)):
        if part in want and not contains(actual, want[part]):
            shown = actual
            if isinstance(actual, dict) and isinstance(want[part], dict):
                shown = {k: actual.get(k) for k in want[part]}
            out.append(
                Mismatch(
                    label,
                    f"{label}: call {i + 1} (attempt {call.attempt}"
                    + (f", item {call.item}" if call.item is not None else "")
                    + f") {part} differs",
                    line,
                    json_diff(want[part], shown),
                )
            )
    return out
