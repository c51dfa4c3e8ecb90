"""endless-catch-loop: a catch on timeout that loops back with nothing to stop it."""

from __future__ import annotations

import textwrap

from dsl.validate import validate_text

LOOP = """
    name: nag
    steps:
      - id: wait_paid
        wait: {event: paid, key: order-1, timeout: 1d}
        catch: [{errors: [ERRORS], goto: TARGET}]
      - id: done
        succeed: {}
      - id: remind
        action: x.remind
        next: wait_paid
"""


def found(text: str) -> list[tuple[str, str, int, int]]:
    result = validate_text(textwrap.dedent(text).lstrip("\n"), "t.yaml")
    return [(d.rule, d.severity, d.position.line, d.position.column) for d in result.diagnostics]


def test_a_timeout_catch_looping_back_warns_at_its_goto() -> None:
    text = LOOP.replace("ERRORS", "timeout").replace("TARGET", "remind")
    assert found(text) == [("endless-catch-loop", "warning", 5, 39)]
    (d,) = validate_text(textwrap.dedent(text).lstrip("\n")).diagnostics
    assert "'wait_paid' → 'remind'" in d.message and "max_attempts" in d.message


def test_a_catch_jumping_to_the_step_itself_and_catch_any_warn_too() -> None:
    text = LOOP.replace("ERRORS", "any").replace("TARGET", "wait_paid")
    assert [r for r, *_ in found(text)] == ["endless-catch-loop", "unreachable-step"]


def test_a_counter_and_a_switch_bound_the_loop() -> None:
    text = LOOP.replace("ERRORS", "timeout").replace("TARGET", "count") + textwrap.indent(
        textwrap.dedent(
            """
            - id: count
              set: {tries: "{{ (vars.tries | default(0)) + 1 }}"}
            - id: enough
              switch:
                - if: "{{ vars.tries >= 3 }}"
                  goto: give_up
              next: remind
            - id: give_up
              fail: {error: unpaid}
            """
        ),
        "  ",
    )
    assert [r for r, *_ in found(text) if r == "endless-catch-loop"] == []


def test_a_catch_that_does_not_come_back_or_catches_other_errors_is_fine() -> None:
    forward = LOOP.replace("ERRORS", "timeout").replace("TARGET", "done")
    assert [r for r, *_ in found(forward) if r == "endless-catch-loop"] == []
    other = LOOP.replace("ERRORS", "http.500").replace("TARGET", "remind")
    assert [r for r, *_ in found(other) if r == "endless-catch-loop"] == []
