"""Hypothesis strategies for VALID hopflow workflows (and a seeded generator for benchmarks).

A generated workflow uses every step kind, nests parallel branches and foreach bodies, jumps forward
with ``switch``/``next``/``catch`` (so no loops), carries compensations and retries, and only reads
names that exist where they are read: ``steps.X`` only for steps guaranteed to have completed on
every path (dominators, computed while generating), ``vars.X`` only when a guaranteed ``set`` assigned
it, ``error`` only in catch targets, the foreach item and ``index`` only inside its body, ``result``
only in ``output`` templates, and ``input.X`` with types matching the generated input schema.

Usage::

    from strategies import workflows, workflow_texts   # tests/ is on sys.path under pytest
    @given(workflows())            # dicts
    @given(workflow_texts())       # YAML text

    from strategies import generate
    doc = generate(random.Random(7), steps=40)   # no Hypothesis, for bench/
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import yaml

T = TypeVar("T")


# the child workflows generated files call; a folder of generated files needs them beside it
CHILD_WORKFLOWS = ("child-a", "billing.invoice", "notify", "undo-things")


def child_workflow(name: str) -> str:
    """A minimal workflow called ``name``, to stand beside generated callers."""
    return f"name: {name}\nsteps:\n  - id: done\n    succeed: {{}}\n"


class Choices(Protocol):
    """Where the generator's randomness comes from (Hypothesis draws, or a seeded Random)."""

    def integer(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def chance(self, p: float) -> bool: ...


class RandomChoices:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


class DrawChoices:
    def __init__(self, draw: Any) -> None:
        from hypothesis import strategies as st

        self.draw = draw
        self.st = st

    def integer(self, lo: int, hi: int) -> int:
        return int(self.draw(self.st.integers(lo, hi)))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.draw(self.st.integers(0, len(options) - 1))]

    def chance(self, p: float) -> bool:
        # integers shrink towards 0, i.e. towards "no": generated documents shrink to simpler ones
        return self.draw(self.st.integers(0, 99)) < round(p * 100)


# ------------------------------------------------------------------------------------ vocabulary

INPUT_PROPERTIES: dict[str, dict[str, Any]] = {
    "user_id": {"type": "string", "minLength": 1},
    "email": {"type": "string", "format": "email"},
    "amount": {"type": "integer", "minimum": 0},
    "ratio": {"type": "number"},
    "express": {"type": "boolean"},
    "when": {"type": "string", "format": "date-time"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "lines": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
        },
    },
    "address": {
        "type": "object",
        "required": ["city"],  # zip is optional: read only as `input.address.zip | default('')`
        "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
    },
}
# expressions over each input property that are type-correct
INPUT_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "user_id": ("input.user_id", "input.user_id | upper", "input.user_id | length"),
    "email": ("input.email", "input.email | lower", "input.email.split('@')[1]"),
    "amount": ("input.amount", "input.amount * 2", "input.amount | string"),
    "ratio": ("input.ratio", "input.ratio | round(2)", "input.ratio | abs"),
    "express": ("input.express", "input.express | default(false)", "not input.express"),
    "when": ("input.when", "input.when | datetime", "(input.when | datetime) - duration('2h')"),
    "tags": ("input.tags", "input.tags | length", "input.tags | join(',')", "input.tags | first"),
    "lines": ("input.lines", "input.lines | length", "input.lines | map(attribute='sku') | list"),
    "address": ("input.address", "input.address.city", "input.address.zip | default('')"),
}
ITERABLE_INPUTS = ("tags", "lines")
ENV_NAMES = ("API_URL", "PAYMENTS_URL", "WAREHOUSE_API", "NOTIFY_URL")
WORDS = ("book", "charge", "notify", "reserve", "ship", "check", "load", "fetch", "audit", "pack", "sync")
ACTIONS = (
    "demo.orders.reserve",
    "demo.payments.charge",
    "demo.notify.email",
    "demo.audit.log",
    "stock.count",
)
UNDO_ACTIONS = ("demo.orders.release", "demo.payments.refund", "demo.audit.undo")
ERRORS = ("timeout", "http.5xx", "http.404", "http.4xx", "http.connect", "action.TemporaryError", "any")
# for several catch entries on one step: no name here matches an error another one does
DISJOINT_ERRORS = ("timeout", "http.connect", "http.5xx", "http.404", "action.TemporaryError")
RAISED = ("NoStock", "payment.declined", "Rejected", "order.invalid")
DURATIONS = ("250ms", "1s", "2s", "30s", "5m", "1h30m", "2h", "1d")
SHORT = ("250ms", "500ms", "1s", "2s", "3s", "5s")  # within the default 7.5 s time budget
ITEM_NAMES = ("item", "line", "entry", "row")
# kinds whose output is worth reading in a later template
READABLE = frozenset({"http", "action", "set", "workflow", "parallel", "foreach", "wait"})


# ------------------------------------------------------------------------------------ generator


@dataclass
class _Slot:
    """A step position while a scope is being built."""

    id: str
    kind: str
    body: dict[str, Any] = field(default_factory=dict)
    sets: tuple[str, ...] = ()  # var names a set step assigns
    catch_target: bool = False


@dataclass(frozen=True)
class _Env:
    """What templates may read at one point: guaranteed steps, vars, loop names, error, result."""

    steps: tuple[str, ...] = ()
    vars: tuple[str, ...] = ()
    loop: tuple[str, ...] = ()  # foreach item names in scope (innermost last); "index" too when non-empty
    error: bool = False
    result: bool = False


class Builder:
    def __init__(self, c: Choices, max_steps: int = 12, max_depth: int = 2, time_budget_ms: int = 7500):
        self.c = c
        self.max_steps = max_steps
        self.max_depth = max_depth
        self.budget = time_budget_ms
        self.counter = 0
        self.total = 0
        self.kinds: set[str] = set()
        self.shared: dict[str, None] = {}  # vars set inside a parallel branch or foreach body

    # -- names
    def new_id(self) -> str:
        self.counter += 1
        return f"{self.c.choice(WORDS)}_{self.counter}"

    # -- top level
    def document(self) -> dict[str, Any]:
        c = self.c
        props = [p for p in INPUT_PROPERTIES if c.chance(0.7)] or ["user_id"]
        self.props = props
        self.envs = [e for e in ENV_NAMES if c.chance(0.5)] or ["API_URL"]
        doc: dict[str, Any] = {"name": f"gen-{c.integer(0, 10_000)}"}
        if c.chance(0.5):
            doc["version"] = c.integer(1, 9)
        if c.chance(0.5):
            doc["description"] = "Generated {{ not a template here }} workflow."
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {p: INPUT_PROPERTIES[p] for p in props},
        }
        # the templates below read every declared property without a guard, so each is required
        # (reading an optional one bare is the optional-input warning)
        schema["required"] = list(props)
        if c.chance(0.5):
            schema["additionalProperties"] = False
        doc["input"] = schema
        doc["env"] = self.envs
        if c.chance(0.6):
            defaults: dict[str, Any] = {}
            if c.chance(0.7):
                defaults["retry"] = self.retry()
            if c.chance(0.7):
                defaults["timeout"] = c.choice(SHORT)
            if defaults:
                doc["defaults"] = defaults
        if c.chance(0.3):
            doc["timeout"] = c.choice(("1h", "2h", "1d", "7d"))
        if c.chance(0.3):
            doc["on_failure"] = c.choice(("compensate", "stop"))
        steps, first = self.scope(_Env(), depth=0, top=True)
        if self.shared:  # steps that may run at the same time set them: declare a reducer (vars-race)
            doc["vars"] = {name: {"reduce": "append"} for name in self.shared}
        doc["steps"] = steps
        if c.chance(0.4):
            env = _Env(steps=(first,) if first else ())
            doc["output"] = {"user": self.template(env), "count": self.template(env, native=True)}
        return doc

    def retry(self) -> dict[str, Any]:
        c = self.c
        out: dict[str, Any] = {"max_attempts": c.integer(1, 6)}
        if c.chance(0.6):
            out["interval"] = c.choice(("100ms", "500ms", "1s", "2s"))
        if c.chance(0.3):
            out["backoff"] = c.choice((1, 1.5, 2, 3))
        if c.chance(0.3):
            out["max_interval"] = c.choice(("30s", "5m", "1h"))
        if c.chance(0.3):
            out["jitter"] = c.choice(("full", "none"))
        if c.chance(0.3):
            out["on"] = sorted({c.choice(ERRORS) for _ in range(c.integer(1, 3))})
        return out

    # -- templates
    def expression(self, env: _Env, native: bool = False) -> str:
        c = self.c
        options = ["input", "input", "execution"]
        if env.steps:
            options += ["steps", "steps"]
        if env.vars:
            options.append("vars")
        if env.loop:
            options += ["loop", "index"]
        if env.error:
            options.append("error")
        if env.result:
            options += ["result", "result"]
        if not native:
            options.append("env")
        what = c.choice(options)
        if what == "input":
            return c.choice(INPUT_EXPRESSIONS[c.choice(self.props)])
        if what == "execution":
            return f"execution.{c.choice(('id', 'workflow', 'started_at'))}"
        if what == "steps":
            step = c.choice(env.steps)
            return c.choice(
                (f"steps.{step}.output", f"steps.{step}.output | tojson", f"steps.{step}.output is none")
            )
        if what == "vars":
            return f"vars.{c.choice(env.vars)}"
        if what == "loop":
            return c.choice((env.loop[-1], f"{env.loop[-1]} | tojson"))
        if what == "index":
            return c.choice(("index", "index + 1"))
        if what == "error":
            return f"error.{c.choice(('name', 'message', 'step', 'attempt'))}"
        if what == "result":
            return c.choice(("result", "result | tojson", "result is mapping"))
        return f"env.{c.choice(self.envs)}"

    def template(self, env: _Env, native: bool = False) -> str:
        c = self.c
        expr = self.expression(env, native)
        if native or c.chance(0.5):
            return "{{ " + expr + " }}"
        form = c.integer(0, 3)
        if form == 0:
            return "id-{{ " + expr + " }}"
        if form == 1:
            return "{{ " + expr + " }} and {{ " + self.expression(env) + " }}"
        if form == 2:
            return "{% if " + expr + " %}yes{% else %}no{% endif %}"
        return "{% for t in [1, 2] %}{{ t }}{{ loop.index }}{% endfor %}{{ " + expr + " }}"

    def condition(self, env: _Env) -> str:
        c = self.c
        kind = c.integer(0, 3)
        if kind == 0 and "amount" in self.props:
            return "{{ input.amount > " + str(c.integer(0, 100)) + " }}"
        if kind == 1 and env.steps:
            return "{{ steps." + c.choice(env.steps) + ".output is none }}"
        if kind == 2 and env.vars:
            return "{{ vars." + c.choice(env.vars) + " == 'x' }}"
        return "{{ (" + self.expression(env) + ") is defined }}"

    # -- scopes
    def scope(self, env: _Env, depth: int, top: bool = False) -> tuple[list[dict[str, Any]], str | None]:
        """A list of steps; returns it and the id of its first step when that step is always read-safe
        at the end of the list (for top-level output)."""
        c = self.c
        room = max(1, self.max_steps - self.total)
        if depth:
            count = c.integer(1, max(1, min(room, 5)))
        else:  # the top level takes what nested lists leave, so documents reach about max_steps
            count = c.integer(max(1, room // 3), max(1, room // 2))
        slots = [self.slot(depth) for _ in range(count)]
        self.total += count

        # a terminal tail at the top level: succeed, then fail steps reached only by jumps
        tail: list[_Slot] = []
        if top and c.chance(0.5):
            tail.append(_Slot(self.new_id(), "succeed"))
            for _ in range(c.integer(0, 2)):
                tail.append(_Slot(self.new_id(), "fail"))
        all_slots = slots + tail
        n = len(slots)

        # jumps, forward only and inside this list: (source index, target index, kind)
        jumps: list[tuple[int, int, str]] = []
        for k in range(n):
            if slots[k].kind != "switch":
                continue
            targets = list(range(k + 1, len(all_slots)))
            if not targets:  # a switch with nowhere to go: make it an ordinary step
                slots[k].kind = "action"
                continue
            cases = [c.choice(targets) for _ in range(c.integer(1, 3))]
            slots[k].body["_cases"] = cases
            jumps.extend((k, t, "case") for t in cases)
            if c.chance(0.3):  # a default to the next step keeps every step reachable
                slots[k].body["_default"] = k + 1
                jumps.append((k, k + 1, "case"))
        for t in range(n + 1, len(all_slots)):  # every fail in the tail needs a way in
            if any(jt == t for _, jt, _ in jumps) and c.chance(0.5):
                continue
            sources = [k for k in range(n) if slots[k].kind in ("http", "action", "workflow")]
            if sources:
                k = c.choice(sources)
                slots[k].body.setdefault("_catch", []).append(t)
                jumps.append((k, t, "catch"))
            elif not any(jt == t for _, jt, _ in jumps):
                slots[0].kind = "switch"
                slots[0].sets = ()  # a set turned into a switch assigns nothing any more
                slots[0].body.setdefault("_cases", []).append(t)
                jumps.append((0, t, "case"))
        # an in-list error handler h: reached only by a catch; the step before it jumps over it
        if n >= 3 and c.chance(0.4):
            h = c.integer(2, n - 1)
            sources = [k for k in range(h) if slots[k].kind in ("http", "action", "workflow")]
            before = slots[h - 1]
            if (
                sources
                and h + 1 < len(all_slots)
                and before.kind not in ("switch",)
                and "_next" not in before.body
            ):
                k = c.choice(sources)
                slots[k].body.setdefault("_catch", []).append(h)
                jumps.append((k, h, "catch"))
                before.body["_next"] = h + 1
                jumps.append((h - 1, h + 1, "next"))
        for t, slot in enumerate(all_slots):
            slot.catch_target = any(jt == t and kind == "catch" for _, jt, kind in jumps)

        # fill bodies in order, tracking what is guaranteed at each index
        out: list[dict[str, Any]] = []
        for i, slot in enumerate(all_slots):
            here = self.available(all_slots, jumps, i, env)
            out.append(self.step(slot, here, depth, all_slots, jumps, i))
        first = (
            all_slots[0].id if all_slots[0].kind in READABLE and "_catch" not in all_slots[0].body else None
        )
        return out, first

    def available(self, slots: list[_Slot], jumps: list[tuple[int, int, str]], i: int, env: _Env) -> _Env:
        """Steps (and vars) guaranteed to have completed before index ``i`` on every path."""
        steps = list(env.steps)
        vars_ = list(env.vars)
        for j in range(i):
            if slots[j].kind in ("succeed", "fail"):
                continue
            bypassed = any((k < j or (k == j and kind == "catch")) and j < t <= i for k, t, kind in jumps)
            if bypassed:
                continue
            if slots[j].kind in READABLE:
                steps.append(slots[j].id)
            vars_.extend(slots[j].sets)
        return _Env(tuple(steps), tuple(dict.fromkeys(vars_)), env.loop, slots[i].catch_target, False)

    def slot(self, depth: int) -> _Slot:
        c = self.c
        kinds = ["http", "http", "action", "action", "set", "wait", "switch", "workflow"]
        if depth < self.max_depth and self.total < self.max_steps - 2:
            kinds += ["parallel", "foreach"]
        kind = c.choice(kinds)
        sid = self.new_id()
        sets: tuple[str, ...] = ()
        if kind == "set":
            sets = tuple(
                dict.fromkeys(c.choice(("count", "status", "note", "total")) for _ in range(c.integer(1, 2)))
            )
            if depth > 0:
                self.shared.update(dict.fromkeys(sets))
        return _Slot(sid, kind, {}, sets)

    # -- steps
    def step(
        self,
        slot: _Slot,
        env: _Env,
        depth: int,
        slots: list[_Slot],
        jumps: list[tuple[int, int, str]],
        index: int,
    ) -> dict[str, Any]:
        c = self.c
        self.kinds.add(slot.kind)
        plan = slot.body
        step: dict[str, Any] = {"id": slot.id}
        if c.chance(0.15) and slot.kind not in ("succeed", "fail"):
            step["if"] = self.condition(env)
        kind = slot.kind
        if kind == "http":
            step["http"] = self.http(env)
        elif kind == "action":
            step["action"] = c.choice(ACTIONS)
            if c.chance(0.8):
                step["with"] = {
                    "a": self.template(env),
                    "b": self.template(env, native=True),
                    "n": c.integer(0, 9),
                }
        elif kind == "wait":
            step["wait"] = self.wait(env)
        elif kind == "switch":
            cases: list[dict[str, Any]] = [
                {"if": self.condition(env), "goto": slots[t].id} for t in plan.get("_cases", [])
            ]
            if "_default" in plan:
                cases.append({"default": slots[plan["_default"]].id})
            step["switch"] = cases
        elif kind == "set":
            step["set"] = {name: self.template(env, native=c.chance(0.5)) for name in slot.sets}
        elif kind == "workflow":
            step["workflow"] = {"name": c.choice(CHILD_WORKFLOWS[:3])}
            if c.chance(0.7):
                step["workflow"]["input"] = {"user": self.template(env), "n": c.integer(0, 5)}
        elif kind == "succeed":
            if c.chance(0.5):
                step["succeed"] = {"output": {"done": True, "who": self.template(env)}}
            else:
                step["succeed"] = {}
        elif kind == "fail":
            step["fail"] = {"error": c.choice(RAISED)}
            if c.chance(0.7):
                step["fail"]["message"] = "failed: " + self.template(env)
        elif kind == "parallel":
            branches = []
            for _ in range(c.integer(1, 3)):
                inner, _ = self.scope(env, depth + 1)
                branches.append({"steps": inner})
            step["parallel"] = {"branches": branches}
        elif kind == "foreach":
            name = c.choice(ITEM_NAMES)
            loops = (*(n for n in env.loop if n != name), name)
            inner, _ = self.scope(_Env(env.steps, env.vars, loops), depth + 1)
            items = (
                "{{ input." + c.choice([p for p in ITERABLE_INPUTS if p in self.props]) + " }}"
                if any(p in self.props for p in ITERABLE_INPUTS) and c.chance(0.8)
                else [1, 2, 3]
            )
            body: dict[str, Any] = {"items": items}
            if name != "item" or c.chance(0.5):
                body["as"] = name
            if c.chance(0.5):
                body["concurrency"] = c.integer(1, 20)
            body["steps"] = inner
            step["foreach"] = body
        # common keys
        if kind in ("http", "action", "workflow", "set", "parallel", "foreach") and c.chance(0.3):
            step["output"] = self.template(_Env(env.steps, env.vars, env.loop, env.error, True), native=True)
        if kind in ("http", "action", "workflow") and c.chance(0.3):
            step["retry"] = self.retry()
        if kind == "action" and c.chance(0.3):
            step["timeout"] = c.choice(SHORT)
        if "_catch" in plan:
            targets = plan["_catch"]
            if len(targets) == 1:
                errors = sorted({c.choice(ERRORS) for _ in range(c.integer(1, 2))})
                step["catch"] = [{"errors": errors, "goto": slots[targets[0]].id}]
            else:  # entries tried in order must not overlap, or the later ones never run
                step["catch"] = [
                    {
                        "errors": [DISJOINT_ERRORS[i] if i < len(DISJOINT_ERRORS) else f"action.Error{i}"],
                        "goto": slots[t].id,
                    }
                    for i, t in enumerate(targets)
                ]
        if "_next" in plan:
            step["next"] = slots[plan["_next"]].id
        if kind in ("http", "action", "workflow") and c.chance(0.35):
            step["compensate"] = self.compensation(_Env((*env.steps, slot.id), env.vars, env.loop))
        return step

    def http(self, env: _Env) -> dict[str, Any]:
        c = self.c
        out: dict[str, Any] = {
            "method": c.choice(("GET", "POST", "PUT", "DELETE")),
            "url": "{{ env."
            + c.choice(self.envs)
            + " }}/v1/"
            + c.choice(WORDS)
            + "/{{ "
            + self.expression(env)
            + " }}",
        }
        if c.chance(0.4):
            out["headers"] = {"X-Request": self.template(env), "X-Static": "yes"}
        if c.chance(0.3):
            out["query"] = {"page": c.integer(1, 9), "q": self.template(env)}
        if out["method"] in ("POST", "PUT") and c.chance(0.8):
            if c.chance(0.8):
                out["json"] = {"value": self.template(env, native=True), "note": self.template(env), "n": 1}
            else:
                out["body"] = "raw " + self.template(env)
        if c.chance(0.3):
            out["expect"] = sorted({c.choice((200, 201, 202, 204, 404, 409)) for _ in range(c.integer(1, 3))})
        if c.chance(0.15):
            out["offload"] = True
        return out

    def wait(self, env: _Env) -> dict[str, Any]:
        c = self.c
        mode = c.integer(0, 2)
        if mode == 0:
            return {"for": c.choice(DURATIONS)}
        if mode == 1:
            if "when" in self.props:
                return {"until": "{{ (input.when | datetime) - duration('" + c.choice(DURATIONS) + "') }}"}
            return {"until": "2030-01-31T19:00:00+01:00"}
        out: dict[str, Any] = {
            "event": c.choice(("approval.decided", "payment.settled", "doc-signed")),
            "key": "{{ " + self.expression(env, native=True) + " }}",
        }
        if c.chance(0.5):
            out["timeout"] = c.choice(("1h", "2d", "7d"))
        return out

    def compensation(self, env: _Env) -> dict[str, Any]:
        c = self.c
        kind = c.integer(0, 2)
        out: dict[str, Any]
        if kind == 0:
            out = {"action": c.choice(UNDO_ACTIONS)}
            if c.chance(0.8):
                out["with"] = {"ref": "{{ steps." + env.steps[-1] + ".output }}"}
        elif kind == 1:
            out = {
                "http": {
                    "method": "DELETE",
                    "url": "{{ env."
                    + c.choice(self.envs)
                    + " }}/undo/{{ steps."
                    + env.steps[-1]
                    + ".output }}",
                }
            }
        else:
            out = {
                "workflow": {
                    "name": CHILD_WORKFLOWS[3],
                    "input": {"ref": "{{ steps." + env.steps[-1] + ".output }}"},
                }
            }
        if c.chance(0.3):
            out["retry"] = self.retry()
        if kind != 2 and c.chance(0.3):
            out["timeout"] = c.choice(SHORT)
        return out


def generate(rng: random.Random, steps: int = 40, depth: int = 2) -> dict[str, Any]:
    """One valid workflow with about ``steps`` steps (seeded, for benchmarks and fixtures)."""
    return Builder(RandomChoices(rng), max_steps=steps, max_depth=depth).document()


def to_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def workflows(max_steps: int = 12, max_depth: int = 2) -> Any:
    """Strategy: a valid workflow as a plain dict."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        return Builder(DrawChoices(draw), max_steps=max_steps, max_depth=max_depth).document()

    return build()


def workflow_texts(max_steps: int = 12, max_depth: int = 2) -> Any:
    """Strategy: a valid workflow as YAML text."""
    return workflows(max_steps, max_depth).map(to_yaml)
