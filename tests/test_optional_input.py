"""optional-input: reading an input property the schema does not require, without a default or guard."""

from __future__ import annotations

import textwrap

import pytest

from dsl.templates import TemplateError, render
from dsl.validate import validate_text

SCHEMA = """
    name: t
    input:
      type: object
      required: [email, address]
      properties:
        email: {type: string}
        nickname: {type: string}
        address:
          type: object
          required: [city]
          properties: {city: {type: string}, zip: {type: string}}
    steps:
      - id: a
        action: x.y
        with: {v: "EXPR"}
"""


def found(expr: str, schema: str = SCHEMA) -> list[tuple[str, int, int]]:
    text = textwrap.dedent(schema).lstrip("\n").replace("EXPR", expr)
    return [(d.rule, d.position.line, d.position.column) for d in validate_text(text, "t.yaml").diagnostics]


def test_an_optional_property_read_bare_warns_at_its_name() -> None:
    assert found("{{ input.nickname }}") == [("optional-input", 15, 25)]


def test_a_nested_optional_property_warns_at_the_optional_part() -> None:
    assert found("{{ input.address.zip }}") == [("optional-input", 15, 33)]


@pytest.mark.parametrize(
    "expr",
    [
        "{{ input.email }}",
        "{{ input.address.city }}",
        "{{ input.nickname | default('') }}",
        "{{ input.nickname | d(input.email) }}",
        "{{ input.nickname if input.nickname is defined else input.email }}",
        "{% if input.nickname is defined %}{{ input.nickname }}{% endif %}",
        "{{ input.address.zip if 'zip' in input.address else '' }}",
        "{{ input.nickname is not defined }}",
    ],
)
def test_required_or_guarded_reads_pass(expr: str) -> None:
    assert found(expr) == []


def test_the_step_if_guards_its_templates() -> None:
    text = SCHEMA.replace("action: x.y\n", 'action: x.y\n        if: "{{ input.nickname is defined }}"\n')
    assert found("{{ input.nickname }}", text) == []


def test_a_bare_truth_test_is_no_guard_and_says_why() -> None:
    # templates are strict: testing a missing name reads it, and fails like any other read
    with pytest.raises(TemplateError):
        render("{% if input.nickname %}x{% endif %}", {"input": {}})
    text = (
        textwrap.dedent(SCHEMA)
        .lstrip("\n")
        .replace("EXPR", "{% if input.nickname %}{{ input.nickname }}{% endif %}")
    )
    (d,) = validate_text(text, "t.yaml").diagnostics  # one warning per property and template
    assert d.rule == "optional-input" and "reads it too" in d.message


def test_alternatives_and_missing_schemas_are_not_judged() -> None:
    any_of = SCHEMA.replace(
        "      required: [email, address]\n", "      anyOf: [{required: [email]}, {required: [nickname]}]\n"
    )
    assert [r for r in found("{{ input.nickname }}", any_of) if r[0] == "optional-input"] == []
    no_schema = 'name: t\nsteps:\n  - id: a\n    action: x.y\n    with: {v: "{{ input.nickname }}"}\n'
    assert validate_text(no_schema, "t.yaml").diagnostics == ()
