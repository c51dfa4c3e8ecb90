"""Hints for a line that is not indented enough name the key it most likely belongs under, and
following the advice does not lead to a second error."""

from __future__ import annotations

import textwrap

from dsl.validate import validate_text


def diagnostics(text: str) -> list[tuple[str, int, int, str]]:
    result = validate_text(textwrap.dedent(text).lstrip("\n"), "t.yaml")
    return [(d.rule, d.position.line, d.position.column, d.message) for d in result.diagnostics]


def test_an_unindented_compensate_body_is_named_not_a_new_list_item() -> None:
    text = """
        name: t
        steps:
          - id: book
            action: x.book
            compensate:
            action: x.cancel
    """
    ((rule, line, column, message),) = diagnostics(text)
    assert (rule, line, column) == ("yaml-duplicate-key", 6, 5)
    assert "belongs under 'compensate:' on line 5" in message and "deeper than 'compensate'" in message
    assert "'- '" not in message  # not the list-item advice
    fixed = text.replace("    action: x.cancel", "      action: x.cancel")
    assert diagnostics(fixed) == []  # the advice, followed, gives a valid file


def test_an_unindented_body_followed_by_a_deeper_line_is_named() -> None:
    text = """
        name: t
        steps:
          - id: book
            action: x.book
            compensate:
            action: x.cancel
              with:
                id: 1
    """
    ((rule, line, column, message),) = diagnostics(text)
    # not "line it up with 'action'", which would make 'action' a duplicate of the step's own
    assert (rule, line, column) == ("yaml-syntax", 6, 5)
    assert "body of 'compensate:' on line 5" in message and "line it up with 'action'" not in message
    fixed = textwrap.dedent(text).replace(
        "    action: x.cancel\n      with:", "      action: x.cancel\n      with:"
    )
    assert diagnostics(fixed) == []


def test_an_empty_with_and_its_entry_at_the_same_level() -> None:
    text = """
        name: t
        steps:
          - id: book
            action: x.book
            with:
            party: 2
    """
    ((rule, line, column, message),) = diagnostics(text)
    assert (rule, line, column) == ("unknown-key", 6, 5)
    assert "'with'" in message and "line 5" in message and "retry" not in message
    assert diagnostics(text.replace("    party: 2", "      party: 2")) == []


def test_a_key_between_two_levels_names_the_block_it_most_likely_belongs_to() -> None:
    text = """
        name: t
        steps:
          - id: book
            action: x.book
            compensate:
              action: x.cancel
             with: {id: 1}
    """
    ((rule, line, column, message),) = diagnostics(text)
    assert (rule, line, column) == ("yaml-syntax", 7, 6)
    assert "belongs with 'action' under 'compensate:' (line 5)" in message and "column 7" in message
    assert diagnostics(text.replace("     with: {id: 1}", "      with: {id: 1}")) == []


def test_a_with_after_a_branch_step_is_blamed_on_that_step() -> None:
    text = """
        name: t
        steps:
          - id: p
            parallel:
              branches:
                - steps:
                    - id: a
                      action: x.y
                  with:
                    v: 1
                - steps:
                    - id: b
                      action: x.y
    """
    found = diagnostics(text)
    assert [(r, line, c) for r, line, c, _ in found] == [("unknown-key", 9, 11)]
    message = found[0][3]
    assert "step 'a'" in message and "line it up with 'id' (column 15)" in message
    fixed = textwrap.dedent(text).replace(
        "          with:\n            v: 1", "              with:\n                v: 1"
    )
    assert diagnostics(fixed) == []
