"""The id, target, reference and reachability rules: rule, severity, exact line and column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import to_yaml, workflows

from dsl.checks import RULES, CheckContext, all_checks
from dsl.compiler import compile_document
from dsl.diagnostics import Diagnostic, sort
from dsl.source import load, loads
from dsl.testfile import examples

ROOT = Path(__file__).resolve().parent.parent
MINE = {
    "duplicate-id",
    "unknown-target",
    "cross-scope-target",
    "reference-unknown-step",
    "reference-attribute",
    "reference-dynamic",
    "reference-out-of-scope",
    "reference-not-completed",
    "reference-never-before",
    "unreachable-step",
    "endless-loop",
}


def check(text: str, *, graph: bool = True) -> list[Diagnostic]:
    doc = loads(textwrap.dedent(text), "w.yaml")
    ctx = CheckContext(doc, graph=compile_document(doc) if graph else None)
    found: list[Diagnostic] = []
    for name, fn in all_checks():
        if name in MINE:
            found.extend(fn(ctx))
    return sort(found)


def where(diags: list[Diagnostic]) -> list[tuple[str, str, int, int]]:
    return [(d.rule, d.severity, d.position.line, d.position.column) for d in diags]


def loc(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """(line, column) of the nth occurrence of ``needle`` in the (dedented) text — the expected
    position, computed independently of the source map."""
    text = textwrap.dedent(text)
    at = -1
    for _ in range(nth):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def expect(
    text: str, *items: tuple[str, str, str] | tuple[str, str, str, int]
) -> list[tuple[str, str, int, int]]:
    """[(rule, severity, needle[, nth])] → [(rule, severity, line, column)]."""
    out = []
    for rule, severity, needle, *nth in items:
        out.append((rule, severity, *loc(text, needle, *nth)))
    return out


def test_rules_are_registered_with_descriptions() -> None:
    all_checks()
    assert MINE <= set(RULES)
    assert all(RULES[name] for name in MINE)


# ---------------------------------------------------------------------------------------------- ids

DUP = """\
name: t
steps:
  - id: a
    set: {x: 1}
  - id: p
    parallel:
      branches:
        - steps:
            - id: a
              set: {x: 2}
"""


def test_duplicate_id() -> None:
    diags = check(DUP)
    assert where(diags) == [("duplicate-id", "error", 9, 19)]
    assert where(diags) == expect(DUP, ("duplicate-id", "error", "a\n", 2))
    assert "line 3" in diags[0].message and "'a'" in diags[0].message


def test_unique_ids_pass() -> None:
    assert check("name: t\nsteps:\n  - {id: a, set: {x: 1}}\n  - {id: b, set: {x: 1}}\n") == []


# ------------------------------------------------------------------------------------------ targets

TARGETS = """\
name: t
steps:
  - id: fetch
    action: x.y
    next: proces
    catch:
      - {errors: [any], goto: handlr}
  - id: route
    switch:
      - if: "{{ input.x }}"
        goto: zzz
      - default: fetchh
  - {id: process, set: {x: 1}}
  - {id: handler, set: {x: 1}}
"""


def test_unknown_targets_everywhere_with_suggestions() -> None:
    diags = [d for d in check(TARGETS) if d.rule == "unknown-target"]
    assert where(diags) == expect(
        TARGETS,
        ("unknown-target", "error", "proces\n"),
        ("unknown-target", "error", "handlr"),
        ("unknown-target", "error", "zzz"),
        ("unknown-target", "error", "fetchh"),
    )
    assert where(diags)[0][2:] == (5, 11)  # spelled out once, as a sanity check of `expect`
    assert "did you mean 'process'?" in diags[0].message
    assert "catch goto 'handlr'" in diags[1].message and "'handler'" in diags[1].message
    assert "did you mean" not in diags[2].message
    assert "default 'fetchh'" in diags[3].message


SCOPES = """\
name: t
steps:
  - {id: start, set: {x: 1}, next: inner}
  - id: fan
    parallel:
      branches:
        - steps:
            - {id: left, set: {x: 1}, next: right}
        - steps:
            - {id: right, set: {x: 1}}
  - id: each
    foreach:
      items: "{{ [1] }}"
      steps:
        - {id: inner, set: {x: 1}, next: start}
"""


def test_cross_scope_targets() -> None:
    diags = [d for d in check(SCOPES) if d.rule == "cross-scope-target"]
    assert where(diags) == expect(
        SCOPES,
        ("cross-scope-target", "error", "inner}"),
        ("cross-scope-target", "error", "right}"),
        ("cross-scope-target", "error", "start}"),
    )
    assert "into the body of foreach 'each'" in diags[0].message
    assert "from branch 0 of parallel 'fan' into branch 1 of parallel 'fan'" in diags[1].message
    assert "into the top-level steps" in diags[2].message


def test_targets_inside_their_own_list_pass() -> None:
    text = """\
        name: t
        steps:
          - id: fan
            parallel:
              branches:
                - steps:
                    - {id: a, set: {x: 1}, next: c}
                    - {id: b, set: {x: 1}}
                    - {id: c, set: {x: 1}}
          - {id: z, set: {x: 1}, next: fan}
        """
    diags = check(text)
    assert [d for d in diags if d.rule in ("unknown-target", "cross-scope-target")] == []


def test_document_rules_work_without_a_graph() -> None:
    text = "name: t\nsteps:\n  - {id: a, set: {x: 1}, next: nope}\n  - {id: a, set: {x: '{{ steps.zz }}'}}\n"
    assert where(check(text, graph=False)) == expect(
        text,
        ("unknown-target", "error", "nope"),
        ("duplicate-id", "error", "a, set: {x: '", 1),
        ("reference-unknown-step", "error", "steps.zz"),
    )


# --------------------------------------------------------------------------------------- references

UNKNOWN = """\
name: t
steps:
  - id: find_table
    action: x.y
  - id: use
    action: x.y
    with:
      plain: "{{ steps.find_tabel.output }}"
      quoted: "n={{ steps.nothing_alike.output }}"
      single: 'n={{ steps.also_nothing.output }}'
      block: |
        first line
          then {{ steps.find_tabl.output }}
"""


def test_reference_unknown_step_points_inside_the_string() -> None:
    diags = check(UNKNOWN)
    assert where(diags) == expect(
        UNKNOWN,
        ("reference-unknown-step", "error", "steps.find_tabel"),
        ("reference-unknown-step", "error", "steps.nothing_alike"),
        ("reference-unknown-step", "error", "steps.also_nothing"),
        ("reference-unknown-step", "error", "steps.find_tabl."),
    )
    assert "did you mean steps.find_table?" in diags[0].message
    assert "did you mean" not in diags[1].message


ATTR = """\
name: t
steps:
  - {id: a, action: x.y}
  - {id: b, action: x.y, with: {v: "{{ steps.a.outptu }}", w: "{{ steps.a.status }}"}}
  - {id: c, action: x.y, with: {v: "{{ steps.a.output.status }}", w: "{{ steps.a }}"}}
"""


def test_reference_attribute() -> None:
    diags = check(ATTR)
    assert where(diags) == expect(
        ATTR,
        ("reference-attribute", "error", "outptu"),
        ("reference-attribute", "error", "status }}"),
    )
    assert diags[0].message == "steps.a has only .output, not .outptu (did you mean steps.a.output?)"
    assert "did you mean steps.a.output.status?" in diags[1].message


def test_reference_dynamic() -> None:
    text = (
        'name: t\nsteps:\n  - {id: a, action: x.y}\n  - {id: b, action: x.y, with: {v: "{{ steps[k] }}"}}\n'
    )
    assert where(check(text)) == expect(text, ("reference-dynamic", "error", "steps["))


COMPLETION = """\
name: t
steps:
  - id: charge
    action: pay.charge
    catch:
      - {errors: [any], goto: declined}
  - id: ship
    action: ship.it
    with: {charge: "{{ steps.charge.output.id }}", later: "{{ steps.notify.output }}"}
    next: notify
  - id: declined
    action: notify.sorry
    with: {charge: "{{ steps.charge.output }}"}
  - id: notify
    action: notify.sms
    with: {ship: "{{ steps.ship.output }}"}
"""


def test_reference_not_completed_and_never_before() -> None:
    diags = check(COMPLETION)
    assert where(diags) == expect(
        COMPLETION,
        ("reference-never-before", "error", "steps.notify"),
        ("reference-never-before", "error", "steps.charge", 2),
        ("reference-not-completed", "error", "steps.ship"),
    )
    assert "read the failure as `error`" in diags[1].message
    assert "charge → declined → notify" in diags[2].message


OWN = """\
name: t
steps:
  - id: a
    action: x.y
    with: {v: "{{ steps.a.output }}"}
    output: "{{ steps.a.output.id }}"
    compensate:
      action: x.undo
      with: {id: "{{ steps.a.output.id }}"}
"""


def test_own_output_messages() -> None:
    diags = check(OWN)
    assert where(diags) == expect(
        OWN,
        ("reference-never-before", "error", "steps.a", 1),
        ("reference-never-before", "error", "steps.a", 2),
    )
    assert "cannot read its own output" in diags[0].message
    assert "use `result`" in diags[1].message


SCOPED = """\
name: t
steps:
  - id: fan
    parallel:
      branches:
        - steps:
            - {id: left, action: x.y}
        - steps:
            - {id: right, action: x.y, with: {v: "{{ steps.left.output }}"}}
  - id: each
    output: "{{ steps.body.output }}"
    foreach:
      items: "{{ [1, 2] }}"
      steps:
        - {id: body, action: x.y, with: {v: "{{ steps.left.output }}"}}
  - {id: after, action: x.y, with: {v: "{{ steps.body.output }}", w: "{{ steps.right.output }}"}}
"""


def test_reference_out_of_scope() -> None:
    diags = check(SCOPED)
    assert where(diags) == expect(
        SCOPED,
        ("reference-out-of-scope", "error", "steps.left", 1),
        ("reference-out-of-scope", "error", "steps.body", 1),
        ("reference-out-of-scope", "error", "steps.body", 2),
    )
    assert "another branch of parallel 'fan'" in diags[0].message
    assert "use result" in diags[1].message
    assert "use steps.each.output" in diags[2].message


def test_valid_references_pass() -> None:
    diags = check(
        """\
        name: t
        description: "not rendered, so {{ steps.anything }} here is just text"
        output: {id: "{{ steps.book.output.id }}", left: "{{ steps.left.output }}"}
        steps:
          - id: book
            action: r.book
            if: "{{ input.go }}"
            compensate:
              action: r.cancel
              with: {id: "{{ steps.book.output.id }}"}
          - id: fan
            output: "{{ [steps.left.output, result] }}"
            parallel:
              branches:
                - steps:
                    - {id: left, action: x.y, with: {b: "{{ steps.book.output }}"}}
                - steps:
                    - {id: right, action: x.y}
                    - {id: right2, action: x.y, with: {r: "{{ steps.right.output }}"}}
          - id: each
            foreach:
              items: "{{ steps.fan.output }}"
              steps:
                - {id: per, action: x.y, with: {v: "{{ steps.left.output }}"}}
                - {id: per2, action: x.y, with: {v: "{{ steps.per.output }}"}}
          - {id: done, action: x.y, with: {all: "{{ steps.each.output }}", r: "{{ steps.right2.output }}"}}
        """
    )
    assert diags == []


DEAD = """\
name: t
steps:
  - {id: a, succeed: {}}
  - {id: b, action: x.y, with: {v: "{{ steps.c.output }}"}}
  - {id: c, action: x.y}
"""


def test_references_in_unreachable_steps_are_left_to_unreachable_step() -> None:
    assert where(check(DEAD)) == expect(
        DEAD, ("unreachable-step", "warning", "b, action"), ("unreachable-step", "warning", "c, action")
    )


# -------------------------------------------------------------------------------------- reachability

UNREACHABLE = """\
name: t
steps:
  - id: route
    switch:
      - {if: "{{ input.x }}", goto: yes_path}
      - {default: no_path}
  - {id: forgotten, set: {x: 1}}
  - {id: yes_path, succeed: {}}
  - {id: no_path, fail: {error: E}}
"""


def test_unreachable_step() -> None:
    diags = check(UNREACHABLE)
    assert where(diags) == expect(UNREACHABLE, ("unreachable-step", "warning", "forgotten"))
    assert "'forgotten'" in diags[0].message


LOOP = """\
name: t
steps:
  - {id: start, set: {x: 1}}
  - id: spin
    wait: {for: 1s}
  - id: again
    switch:
      - {if: false, goto: out}
      - {default: spin}
  - {id: out, set: {x: 1}}
"""


def test_endless_loop() -> None:
    diags = check(LOOP)
    assert where(diags) == expect(
        LOOP, ("endless-loop", "warning", "spin\n"), ("unreachable-step", "warning", "out, set")
    )
    assert "'spin' and 'again' form a loop" in diags[0].message


def test_polling_loop_with_a_switch_exit_is_fine() -> None:
    diags = check(
        """\
        name: t
        steps:
          - {id: start, http: {url: "http://x"}}
          - {id: pause, wait: {for: 10s}}
          - {id: poll, http: {url: "http://x/{{ steps.start.output.id }}"}}
          - id: decide
            switch:
              - {if: "{{ steps.poll.output.done }}", goto: finish}
              - {default: pause}
          - {id: finish, set: {r: "{{ steps.poll.output }}"}}
        """
    )
    assert diags == []


# ------------------------------------------------------------------------------ shipped workflows


def _files() -> list[Path]:
    return examples(ROOT / "workflows")


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_shipped_workflows_are_clean(path: Path) -> None:
    doc = load(path)
    ctx = CheckContext(doc, graph=compile_document(doc))
    found = [d for name, fn in all_checks() if name in MINE for d in fn(ctx)]
    assert found == []


# ------------------------------------------------------------------------- generated workflows


def _ids(steps: list[dict], scope: str = "") -> list[tuple[str, str]]:
    """(id, scope kind) of every step: "" top level/branch, "foreach" inside a foreach body."""
    out = []
    for step in steps:
        out.append((step["id"], scope))
        if "parallel" in step:
            for branch in step["parallel"]["branches"]:
                out.extend(_ids(branch["steps"], scope))
        if "foreach" in step:
            out.extend(_ids(step["foreach"]["steps"], "foreach"))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows(max_steps=14))
def test_generated_valid_workflows_have_no_flow_diagnostics(doc: dict) -> None:
    # the generator computes its own dominators: two independent implementations must agree
    assert check(to_yaml(doc)) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows(max_steps=14), st.integers(min_value=1, max_value=10_000))
def test_reading_any_other_step_before_the_first_is_reported(doc: dict, pick: int) -> None:
    others = _ids(doc["steps"])[1:]
    if not others:
        return
    target, scope = others[pick % len(others)]
    doc["steps"][0]["if"] = "{{ steps." + target + ".output }}"
    rules = {d.rule for d in check(to_yaml(doc)) if d.rule.startswith("reference-")}
    expected = "reference-out-of-scope" if scope == "foreach" else "reference-never-before"
    assert rules == {expected}
