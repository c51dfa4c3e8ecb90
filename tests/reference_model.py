"""A deliberately simple reference for what an execution must end up as, and a checker against it.

Reliability tests (crash injection, the state machine, the cluster run) build workflows from a tiny
*plan* vocabulary — actions that fail on cue, ``wait.for``, ``switch``, ``if``, ``catch``,
``parallel`` and ``foreach`` — render them to YAML for the real compiler, and run them through the
real runtime under abuse. This module says what the outcome must be, computed the obvious way: a
plain recursive walk over the plan, one step after the other, no Redis, no messages, no concurrency.

Actions are pure functions of the plan and ``ctx.attempt`` (attempts ``1..fail_until`` raise
``Transient``; ``fatal`` raises ``Fatal``), so re-running a step after a crash behaves the same way.
Their side effects go to a :class:`Ledger` that deduplicates by ``ctx.idempotency_key`` like a real
downstream service would: a step re-run after a crash may *call* twice, but must *apply* once.

Where concurrency makes the outcome legitimately open — a failure inside one parallel branch or
foreach item halts its siblings "at their next node boundary", so how far a sibling got depends on
timing — the reference does not guess: every branch must show a *prefix* of its sequential run
(in order, nothing skipped, nothing extra), and the compensations must undo exactly the compensable
steps that did complete, newest first by their actual completion order.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

# ------------------------------------------------------------------------------------------ plans


@dataclass(frozen=True)
class Act:
    """An ``action: t.work`` step (and, with ``comp``, its ``t.undo`` compensation)."""

    id: str
    fail_until: int = 0  # attempts 1..fail_until raise action.Transient
    fatal: bool = False  # raises action.Fatal (not in retry.on: never retried)
    attempts: int = 1  # retry.max_attempts
    comp: bool = False
    comp_fail_until: int = 0  # the compensation fails this many times, then succeeds (it is retried)
    when: str | None = None  # an input flag: false → the step is skipped
    catch_to: str | None = None  # catch [any] → goto this later step of the same list


@dataclass(frozen=True)
class Wait:
    id: str
    ms: int = 5000


@dataclass(frozen=True)
class Switch:
    id: str
    flag: str  # jump to ``target`` when input.flags[flag] is true, else fall through
    target: str


@dataclass(frozen=True)
class Par:
    id: str
    branches: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Each:
    id: str
    items: tuple[Any, ...]
    concurrency: int
    body: tuple[Any, ...]


Step = Act | Wait | Switch | Par | Each

RETRY_ON = ["action.Transient"]


@dataclass(frozen=True)
class Plan:
    name: str
    steps: tuple[Step, ...]
    flags: tuple[tuple[str, bool], ...] = ()

    @property
    def input(self) -> dict[str, Any]:
        return {"flags": dict(self.flags)}

    def yaml(self) -> str:
        return to_yaml(self)


def to_yaml(plan: Plan) -> str:
    doc = {"name": plan.name, "steps": [_step_doc(s, None) for s in plan.steps]}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200)


def flag_template(flag: str) -> str:
    return "{{ input.flags." + flag + " }}"


def _step_doc(step: Step, item_name: str | None) -> dict[str, Any]:
    if isinstance(step, Act):
        item = "{{ " + item_name + " }}" if item_name else None
        d: dict[str, Any] = {
            "id": step.id,
            "action": "t.work",
            "with": {"step": step.id, "item": item, "fail_until": step.fail_until, "fatal": step.fatal},
        }
        if step.when is not None:
            d["if"] = flag_template(step.when)
        if step.attempts > 1:
            d["retry"] = {"max_attempts": step.attempts, "interval": "1s", "jitter": "none", "on": RETRY_ON}
        if step.catch_to is not None:
            d["catch"] = [{"errors": ["any"], "goto": step.catch_to}]
        if step.comp:
            comp: dict[str, Any] = {
                "action": "t.undo",
                "with": {"step": step.id, "item": item, "fail_until": step.comp_fail_until},
            }
            if step.comp_fail_until:
                comp["retry"] = {
                    "max_attempts": step.comp_fail_until + 1,
                    "interval": "2s",
                    "jitter": "none",
                    "on": RETRY_ON,
                }
            d["compensate"] = comp
        return d
    if isinstance(step, Wait):
        return {"id": step.id, "wait": {"for": f"{step.ms}ms"}}
    if isinstance(step, Switch):
        return {"id": step.id, "switch": [{"if": flag_template(step.flag), "goto": step.target}]}
    if isinstance(step, Par):
        return {
            "id": step.id,
            "parallel": {
                "branches": [{"steps": [_step_doc(s, item_name) for s in b]} for b in step.branches]
            },
        }
    if isinstance(step, Each):
        name = f"it_{step.id}"
        return {
            "id": step.id,
            "foreach": {
                "items": list(step.items),
                "as": name,
                "concurrency": step.concurrency,
                "steps": [_step_doc(s, name) for s in step.body],
            },
        }
    raise TypeError(step)


# ------------------------------------------------------------------------------- actions, ledger


class Transient(Exception):
    """Retried (it is in every generated ``retry.on``)."""


class Fatal(Exception):
    """Never retried."""


class Ledger:
    """What a downstream service saw: every call, and the effects it applied once per idempotency key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, int]] = []  # (kind, idempotency key, attempt)
        self.applied: dict[str, int] = {}  # key → how many calls carried it while succeeding
        self.order: list[str] = []  # keys in order of first application
        self.broken: set[str] = set()  # steps whose undo fails until a test repairs it

    def apply(self, kind: str, key: str) -> None:
        with self.lock:
            if key not in self.applied:
                self.applied[key] = 0
                self.order.append(key)
            self.applied[key] += 1

    def work(self, ctx: Any, step: str, item: Any = None, fail_until: int = 0, fatal: bool = False) -> Any:
        with self.lock:
            self.calls.append(("work", ctx.idempotency_key, ctx.attempt))
        if fatal:
            raise Fatal(f"{step} refuses")
        if ctx.attempt <= fail_until:
            raise Transient(f"{step} attempt {ctx.attempt}")
        self.apply("work", ctx.idempotency_key)
        return {"s": step, "i": item}

    def undo(self, ctx: Any, step: str, item: Any = None, fail_until: int = 0) -> Any:
        with self.lock:
            self.calls.append(("undo", ctx.idempotency_key, ctx.attempt))
        if ctx.attempt <= fail_until or step in self.broken:
            raise Transient(f"undo {step} attempt {ctx.attempt}")
        self.apply("undo", ctx.idempotency_key)
        return None

    def only(self, execution_id: str) -> Ledger:
        """The part of the ledger one execution produced (its keys start with ``<id>:``)."""
        prefix = f"{execution_id}:"
        view = Ledger()
        view.calls = [c for c in self.calls if c[1].startswith(prefix)]
        view.applied = {k: n for k, n in self.applied.items() if k.startswith(prefix)}
        view.order = [k for k in self.order if k.startswith(prefix)]
        return view

    def actions(self) -> dict[str, Any]:
        return {"t.work": self.work, "t.undo": self.undo}

    def work_keys(self) -> list[str]:
        return [k for k in self.order if not k.endswith(":compensate")]

    def undo_keys(self) -> list[str]:
        return [k for k in self.order if k.endswith(":compensate")]

    def calls_for(self, key: str) -> int:
        return sum(1 for _, k, _ in self.calls if k == key)


# -------------------------------------------------------------------------------- the reference


@dataclass
class Leaf:
    step: str
    branch: str
    comp: bool = False
    action: bool = False
    skipped: bool = False


@dataclass
class Fan:
    step: str
    branch: str
    children: list[Seg]


@dataclass
class Seg:
    branch: str
    units: list[Leaf | Fan] = field(default_factory=list)
    output: Any = None
    errors: list[tuple[str, str]] = field(default_factory=list)  # possible (name, step) when failed
    failed_fan: bool = False  # the failure happened in the last unit, a fan-out

    @property
    def failed(self) -> bool:
        return bool(self.errors)


def path(branch: str, step: str) -> str:
    return f"{branch}/{step}" if branch else step


def simulate(plan: Plan) -> Seg:
    """The sequential run of the plan's top level."""
    return _scope(plan.steps, "", dict(plan.flags), None)


def _scope(steps: Sequence[Step], branch: str, flags: dict[str, bool], item: Any) -> Seg:
    seg = Seg(branch)
    index = {s.id: i for i, s in enumerate(steps)}
    i = 0
    while i < len(steps):
        s = steps[i]
        if isinstance(s, Act):
            if s.when is not None and not flags.get(s.when, False):
                seg.units.append(Leaf(s.id, branch, skipped=True))  # completed, output null, not "last"
                i += 1
                continue
            error = None
            if s.fatal:
                error = ("action.Fatal", s.id)
            elif s.fail_until >= s.attempts:
                error = ("action.Transient", s.id)
            if error is not None:
                if s.catch_to is not None:
                    i = index[s.catch_to]
                    continue
                seg.errors = [error]
                return seg
            seg.units.append(Leaf(s.id, branch, comp=s.comp, action=True))
            seg.output = {"s": s.id, "i": item}
            i += 1
        elif isinstance(s, Wait):
            seg.units.append(Leaf(s.id, branch))
            seg.output = None
            i += 1
        elif isinstance(s, Switch):
            seg.units.append(Leaf(s.id, branch))
            seg.output = None
            i = index[s.target] if flags.get(s.flag, False) else i + 1
        elif isinstance(s, Par | Each):
            if isinstance(s, Par):
                children = [
                    _scope(b, path(branch, f"{s.id}/{k}"), flags, item) for k, b in enumerate(s.branches)
                ]
            else:
                children = [
                    _scope(s.body, path(branch, f"{s.id}/{k}"), flags, it) for k, it in enumerate(s.items)
                ]
            seg.units.append(Fan(s.id, branch, children))
            failed = [c for c in children if c.failed]
            if failed:
                seg.errors = [e for c in failed for e in c.errors]
                seg.failed_fan = True
                return seg
            seg.output = [c.output for c in children]
            i += 1
        else:
            raise TypeError(s)
    return seg


@dataclass
class Expected:
    status: str | set[str]
    output: Any
    errors: list[tuple[str, str]]
    seg: Seg


def expect(plan: Plan) -> Expected:
    seg = simulate(plan)
    if not seg.failed:
        return Expected("succeeded", seg.output, [], seg)
    return Expected({"failed", "compensated"}, None, seg.errors, seg)


# ------------------------------------------------------------------------------------ the checker


def completed_runs(history: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """(branch, step) of every node completion (run ok / skip), in checkpoint order."""
    return [
        (h.get("branch") or "", h["step"])
        for h in history
        if h.get("phase") in ("run", "skip") and h.get("status") == "ok" and h.get("step")
    ]


def check(
    plan: Plan,
    eid: str,
    record: dict[str, Any],
    history: list[dict[str, Any]],
    ledger: Ledger,
    cancelled: bool | None = None,
) -> None:
    """Assert the real execution ``eid`` is an outcome the reference allows. Raises AssertionError.

    ``cancelled``: whether a cancel was accepted while it ran, and with ``compensate`` (True) or
    not (False). A cancel stops every branch at its next node boundary, so each branch shows a
    prefix of its run; a cancel that lost the race to the end leaves the ordinary outcome."""
    exp = expect(plan)
    stopped = cancelled is not None and record["status"] == "cancelled"
    runs = completed_runs(history)
    by_branch: dict[str, list[str]] = {}
    for branch, step in runs:
        by_branch.setdefault(branch, []).append(step)
    counts = Counter(runs)
    dup = [k for k, n in counts.items() if n > 1]
    assert not dup, f"steps completed more than once: {dup}"

    seen_branches: set[str] = set()
    _check_seg(exp.seg, by_branch, "prefix" if stopped else "exact", seen_branches)
    extra = set(by_branch) - seen_branches
    assert not extra, f"completions in branches the plan never has: {sorted(extra)}"

    leaves = {(leaf.branch, leaf.step): leaf for leaf in _leaves(exp.seg)}
    done_actions = [(b, s) for b, s in runs if (b, s) in leaves and leaves[(b, s)].action]
    want_work = {f"{eid}:{path(b, s)}" for b, s in done_actions}
    got_work = set(ledger.work_keys())
    # every completed action applied its effect exactly once under its own stable key
    assert want_work <= got_work, f"effects missing for {sorted(want_work - got_work)}"
    possible = {f"{eid}:{path(leaf.branch, leaf.step)}" for leaf in leaves.values() if leaf.action}
    assert got_work <= possible, f"effects under unexpected keys: {sorted(got_work - possible)}"

    status = record["status"]
    done_comp = [(b, s) for b, s in done_actions if leaves[(b, s)].comp]
    if stopped:
        assert (record.get("error") or {}).get("name") == "cancelled", record.get("error")
        want_undo = [f"{eid}:{path(b, s)}:compensate" for b, s in reversed(done_comp)] if cancelled else []
        assert ledger.undo_keys() == want_undo, f"compensations {ledger.undo_keys()} != {want_undo}"
        return
    if exp.status == "succeeded":
        assert status == "succeeded", f"status {status}, error {record.get('error')}"
        assert record["output"] == exp.output, f"output {record['output']!r} != {exp.output!r}"
        assert got_work == want_work, f"effects of steps that never completed: {sorted(got_work - want_work)}"
        assert not ledger.undo_keys(), "compensations ran in a successful execution"
        return

    want_status = "compensated" if done_comp else "failed"
    assert status == want_status, f"status {status}, expected {want_status} (error {record.get('error')})"
    err = record.get("error") or {}
    assert (err.get("name"), err.get("step")) in set(exp.errors), f"error {err} not one of {exp.errors}"
    want_undo = [f"{eid}:{path(b, s)}:compensate" for b, s in reversed(done_comp)]
    assert ledger.undo_keys() == want_undo, f"compensations {ledger.undo_keys()} != newest-first {want_undo}"


def _check_seg(seg: Seg, by_branch: dict[str, list[str]], mode: str, seen: set[str]) -> None:
    """``mode``: ``exact`` (this scope ran to its end or to its own failure), ``prefix`` (halted by a
    sibling's failure: any prefix of its run), ``absent`` (never started)."""
    seen.add(seg.branch)
    ids = [u.step for u in seg.units]
    if seg.failed_fan:
        ids = ids[:-1]  # the failed fan-out never completes
    got = by_branch.get(seg.branch, [])
    if mode == "absent":
        assert not got, f"branch {seg.branch!r} ran {got} though it never started"
    elif mode == "exact":
        assert got == ids, f"branch {seg.branch!r} completed {got}, expected {ids}"
    else:
        assert got == ids[: len(got)], f"branch {seg.branch!r} completed {got}, not a prefix of {ids}"
    n = len(got)
    for k, unit in enumerate(seg.units):
        if not isinstance(unit, Fan):
            continue
        if k < n:
            child_mode = "exact"
        elif k == n and mode != "absent":
            child_mode = "prefix"
        else:
            child_mode = "absent"
        if child_mode == "exact" and seg.failed_fan and k == len(seg.units) - 1:
            child_mode = "prefix"
        for child in unit.children:
            _check_seg(child, by_branch, child_mode, seen)


def _leaves(seg: Seg) -> Iterable[Leaf]:
    for unit in seg.units:
        if isinstance(unit, Leaf):
            yield unit
        else:
            for child in unit.children:
                yield from _leaves(child)


def step_ids(steps: Iterable[Step]) -> list[str]:
    out: list[str] = []
    for s in steps:
        out.append(s.id)
        if isinstance(s, Par):
            for b in s.branches:
                out += step_ids(b)
        elif isinstance(s, Each):
            out += step_ids(s.body)
    return out
