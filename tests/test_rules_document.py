"""The document-level rules: for each, a failing case (rule, severity, exact line and column) and a
passing one; plus the pipeline's promises (every rule documented, crashing checks contained)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsl import checks as checks_module
from dsl.checks import CheckContext
from dsl.checks.input_schema import KEYWORDS as KEYWORDS_FOR_FUZZ
from dsl.diagnostics import Diagnostic
from dsl.validate import rules, validate_text
from dsl.workspace import RULES as WORKSPACE_RULES

ROOT = Path(__file__).resolve().parent.parent


def found(text: str, rule: str | None = None, budget_ms: int = 7500) -> list[tuple[str, str, int, int]]:
    """(rule, severity, line, column) of the diagnostics of ``text`` (of one rule, when given)."""
    result = validate_text(textwrap.dedent(text).lstrip("\n"), "t.yaml", time_budget_ms=budget_ms)
    return [
        (d.rule, d.severity, d.position.line, d.position.column)
        for d in result.diagnostics
        if rule is None or d.rule == rule
    ]


def messages(text: str, rule: str) -> list[str]:
    result = validate_text(textwrap.dedent(text).lstrip("\n"), "t.yaml")
    return [d.message for d in result.diagnostics if d.rule == rule]


# ------------------------------------------------------------------------------------ template-syntax


def test_template_syntax_points_inside_the_string() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with: {v: "ok {{ input.x + }}"}
    """
    # at the '}}' where the value after '+' is missing (Jinja2 reports only a line; hopflow finds
    # the token the parser stopped at)
    assert found(text) == [("template-syntax", "error", 5, 32)]


def test_template_syntax_in_a_block_scalar_points_at_its_line() -> None:
    text = """
        name: t
        steps:
          - id: a
            http:
              method: POST
              url: https://example.com
              body: |
                first line
                second {% if %}
    """
    # at the '%}' where the condition of the `if` is missing
    assert found(text) == [("template-syntax", "error", 9, 22)]


def test_include_is_a_template_syntax_error() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with: {v: "{% include 'x.txt' %}"}
    """
    assert found(text) == [("template-syntax", "error", 5, 19)]


def test_valid_templates_and_prose_descriptions_pass() -> None:
    text = """
        name: t
        description: "mentions {{ braces }} and {% tags in prose"
        steps:
          - id: a
            action: x.y
            with:
              v: "{% for t in [1, 2] %}{{ t }}{{ loop.index }}{% endfor %}"
              w: "{{ duration('2h') | seconds }}"
    """
    assert found(text) == []


# ------------------------------------------------------------------------------------ unknown-filter


def test_unknown_filter_points_at_the_filter_with_a_suggestion() -> None:
    text = """
        name: t
        input: {type: object, required: [n], properties: {n: {type: array}}}
        steps:
          - id: a
            action: x.y
            with: {v: "{{ input.n | lenght }}"}
    """
    assert found(text) == [("unknown-filter", "error", 6, 29)]
    assert messages(text, "unknown-filter") == ["unknown filter 'lenght' (did you mean 'length'?)"]


def test_known_filters_pass() -> None:
    text = """
        name: t
        input: {type: object, required: [when], properties: {when: {type: string}}}
        steps:
          - id: a
            action: x.y
            with: {v: "{{ input.when | datetime | isoformat }} {{ [1] | tojson }} {{ '2s' | seconds }}"}
    """
    assert found(text) == []


def test_unknown_test_points_at_the_test_name() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with: {v: "{{ 3 is od }}"}
    """
    assert found(text) == [("unknown-test", "error", 5, 24)]
    assert found(text.replace("is od", "is odd")) == []


# ------------------------------------------------------------------------------------ undeclared-env


def test_undeclared_env_points_at_the_name() -> None:
    text = """
        name: t
        env: [API_URL]
        steps:
          - id: a
            http: {url: "{{ env.API_URI }}/x"}
    """
    assert found(text) == [("undeclared-env", "error", 5, 25)]
    assert "did you mean 'API_URL'" in messages(text, "undeclared-env")[0]


def test_undeclared_env_subscript_and_whole_env() -> None:
    text = """
        name: t
        env: [API_URL]
        steps:
          - id: a
            action: x.y
            with: {a: "{{ env['TOKEN'] }}", b: "{{ env | tojson }}"}
    """
    assert found(text) == [("undeclared-env", "error", 6, 24), ("undeclared-env", "error", 6, 44)]


def test_declared_env_passes() -> None:
    text = """
        name: t
        env: [API_URL]
        steps:
          - id: a
            http: {url: "{{ env.API_URL }}/x"}
    """
    assert found(text) == []


# ------------------------------------------------------------------------------------ bad-duration


def test_units_out_of_order_are_a_bad_duration() -> None:
    text = """
        name: t
        steps:
          - id: a
            wait: {for: 1m1h}
    """
    assert found(text) == [("bad-duration", "error", 4, 17)]


def test_repeated_unit_in_a_retry_interval() -> None:
    text = """
        name: t
        defaults:
          retry: {max_attempts: 2, interval: 1s1s}
        steps:
          - id: a
            action: x.y
    """
    assert found(text) == [("bad-duration", "error", 3, 38)]


def test_zero_timeout_is_an_error_and_zero_wait_a_warning() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            timeout: 0s
          - id: b
            wait: {for: 0ms}
    """
    assert found(text) == [("bad-duration", "error", 5, 14), ("bad-duration", "warning", 7, 17)]


def test_good_durations_pass() -> None:
    text = """
        name: t
        timeout: 1d12h
        steps:
          - id: a
            action: x.y
            timeout: 2500ms
            retry: {max_attempts: 3, interval: 0s, max_interval: 1h30m}
          - id: b
            wait: {event: e, key: "{{ input.k }}", timeout: 7d}
    """
    assert found(text) == []


# ------------------------------------------------------------------------------------ timeout-budget


def test_step_timeout_over_the_budget() -> None:
    text = """
        name: t
        steps:
          - id: a
            http: {url: "https://example.com"}
            timeout: 30s
    """
    assert found(text) == [("timeout-budget", "error", 5, 14)]
    (message,) = messages(text, "timeout-budget")
    assert "7.5s" in message and "offload: true" in message and "--time-budget" in message


def test_default_timeout_over_the_budget_is_reported_once_at_defaults() -> None:
    text = """
        name: t
        defaults: {timeout: 10s}
        steps:
          - id: a
            action: x.y
          - id: b
            action: x.z
    """
    assert found(text) == [("timeout-budget", "error", 2, 21)]


def test_compensation_timeout_over_the_budget() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            compensate: {action: x.undo, timeout: 1m}
    """
    assert found(text) == [("timeout-budget", "error", 5, 43)]


def test_offloaded_waits_children_and_a_larger_budget_pass() -> None:
    text = """
        name: t
        defaults: {timeout: 1h}
        steps:
          - id: a
            http: {url: "https://example.com", offload: true}
            timeout: 10m
          - id: b
            wait: {event: e, key: k, timeout: 2d}
          - id: c
            workflow: {name: child}
            timeout: 1h
    """
    assert found(text) == []
    assert found("name: t\nsteps:\n  - id: a\n    action: x.y\n    timeout: 9s\n", budget_ms=10_000) == []
    assert found("name: t\nsteps:\n  - id: a\n    action: x.y\n    timeout: 9s\n") == [
        ("timeout-budget", "error", 5, 14)
    ]


# ------------------------------------------------------------------------------------ useless-compensate


@pytest.mark.parametrize(
    "body",
    ["set: {x: 1}", "wait: {for: 1s}", "switch: [{default: b}]", "succeed: {}", "fail: {error: Oops}"],
)
def test_useless_compensate_warns_at_the_key(body: str) -> None:
    text = f"""
        name: t
        steps:
          - id: a
            {body}
            compensate: {{action: x.undo}}
          - id: b
            action: x.y
    """
    assert found(text, "useless-compensate") == [("useless-compensate", "warning", 5, 5)]


def test_compensate_on_work_passes() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            compensate: {action: x.undo, with: {id: "{{ steps.a.output.id }}"}}
          - id: b
            http: {url: "https://example.com", method: POST}
            compensate: {http: {url: "https://example.com/undo", method: DELETE}}
    """
    assert found(text) == []


# ------------------------------------------------------------------------------------ input-schema


def test_input_schema_bad_type_name() -> None:
    text = """
        name: t
        input:
          type: object
          properties:
            n: {type: integr}
        steps:
          - id: a
            action: x.y
    """
    assert found(text) == [("input-schema", "error", 5, 15)]
    assert "did you mean 'integer'" in messages(text, "input-schema")[0]


def test_input_schema_wrong_shape_and_bad_regex() -> None:
    text = """
        name: t
        input:
          type: object
          required: n
          properties:
            s: {type: string, pattern: "(unclosed"}
        steps:
          - id: a
            action: x.y
    """
    assert found(text) == [("input-schema", "error", 4, 13), ("input-schema", "error", 6, 32)]


def test_input_schema_misspelt_keyword_is_a_warning_at_the_key() -> None:
    text = """
        name: t
        input:
          type: object
          propertes:
            n: {type: integer}
        steps:
          - id: a
            action: x.y
    """
    assert found(text) == [("input-schema", "warning", 4, 3)]


def test_valid_input_schema_passes() -> None:
    text = """
        name: t
        input:
          type: object
          $defs: {money: {type: integer, minimum: 0}}
          properties:
            cents: {$ref: "#/$defs/money"}
            tags: {type: array, items: {type: string}, x-ui: chips}
        steps:
          - id: a
            action: x.y
    """
    assert found(text) == []


def test_every_metaschema_keyword_is_checked_by_the_fast_path_or_left_to_jsonschema() -> None:
    import jsonschema_specifications

    from dsl.checks import input_schema as m

    keywords: set[str] = set()
    for uri in jsonschema_specifications.REGISTRY:
        if "2020-12" in uri:
            keywords |= set(jsonschema_specifications.REGISTRY[uri].contents.get("properties", {}))
    handled = {*m._PLAIN_VALUES, *m._SCHEMA_MAPS, *m._SCHEMA_ONE, *m._SCHEMA_LISTS}
    deferred = {k for k in keywords - handled if k.startswith("$") or k in m.KEYWORDS}
    assert keywords - handled == deferred


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.floats(-1, 2),
    st.sampled_from(["", "x", "string", "integr"]),
    st.lists(st.sampled_from(["a", "a", "string", "null"]), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.dictionaries(st.sampled_from(sorted(KEYWORDS_FOR_FUZZ)), _VALUES, max_size=4),
        lambda inner: st.one_of(
            st.dictionaries(st.sampled_from(sorted(KEYWORDS_FOR_FUZZ)), inner | _VALUES, max_size=4),
            st.dictionaries(
                st.sampled_from(["properties", "$defs"]), st.dictionaries(st.text(max_size=2), inner)
            ),
            st.dictionaries(st.sampled_from(["allOf", "anyOf", "prefixItems"]), st.lists(inner, max_size=2)),
        ),
        max_leaves=8,
    )
)
def test_the_fast_metaschema_check_never_passes_an_invalid_schema(schema: dict) -> None:
    from jsonschema import Draft202012Validator

    from dsl.checks.input_schema import _plainly_valid

    if _plainly_valid(schema):
        assert Draft202012Validator(Draft202012Validator.META_SCHEMA).is_valid(schema), schema


# ------------------------------------------------------------------------------------ input-reference


CLOSED = """
    name: t
    input:
      type: object
      required: [user, n]
      additionalProperties: false
      properties:
        user: {type: object, required: [email], properties: {email: {type: string}}}
        n: {type: integer}
    steps:
      - id: a
        action: x.y
        with: {v: "{{ EXPR }}"}
"""


def test_undeclared_input_is_an_error_when_closed() -> None:
    text = CLOSED.replace("EXPR", "input.usr")
    assert found(text) == [("input-reference", "error", 12, 25)]
    assert "did you mean 'user'" in messages(text, "input-reference")[0]


def test_undeclared_input_is_a_warning_when_open() -> None:
    text = CLOSED.replace("additionalProperties: false", "additionalProperties: true")
    assert found(text.replace("EXPR", "input.usr")) == [("input-reference", "warning", 12, 25)]


def test_undeclared_nested_input_property() -> None:
    text = CLOSED.replace("EXPR", "input.user.emial")
    assert found(text) == [("input-reference", "warning", 12, 30)]


def test_subscript_spelling_is_checked_too() -> None:
    text = CLOSED.replace("EXPR", "input['nn']")
    assert found(text) == [("input-reference", "error", 12, 26)]


def test_declared_input_passes() -> None:
    for expr in (
        "input.user.email",
        "input.n + 1",
        "input['user']['email']",
        "input.user | tojson",
        "input.user.items() | list",
        "input.user.get('email')",
    ):
        assert found(CLOSED.replace("EXPR", expr)) == [], expr


def test_no_input_schema_means_no_reference_check() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with: {v: "{{ input.anything.at_all }}"}
    """
    assert found(text) == []


# ------------------------------------------------------------------------------------ input-type


TYPED = """
    name: t
    input:
      type: object
      required: [party_size, name, amount, tags]
      properties:
        party_size: {type: integer}
        name: {type: string}
        amount: {type: number}
        tags: {type: array, items: {type: string}}
    steps:
      - id: a
        action: x.y
        with: {v: "{{ EXPR }}"}
"""


@pytest.mark.parametrize(
    ("expr", "column"),
    [
        ("input.party_size | length", 38),
        ("input.name.foo", 30),
        ("input.amount | datetime", 34),
        ("input.tags | datetime", 32),
        ("input.party_size | isoformat", 38),
    ],
)
def test_obvious_type_misuse(expr: str, column: int) -> None:
    assert found(TYPED.replace("EXPR", expr)) == [("input-type", "error", 13, column)]


@pytest.mark.parametrize(
    "expr",
    [
        "input.name | length",
        "input.tags | length",
        "input.name.upper()",
        "input.tags[0] | length",
        "input.party_size | string | length",
        "input.amount | round",
        "input.name | datetime",
        "input.party_size * 2",
    ],
)
def test_type_correct_use_passes(expr: str) -> None:
    assert found(TYPED.replace("EXPR", expr)) == []


def test_foreach_over_a_non_list_input() -> None:
    text = """
        name: t
        input: {type: object, required: [n, l], properties: {n: {type: integer}, l: {type: array}}}
        steps:
          - id: a
            foreach:
              items: "{{ input.n }}"
              steps:
                - id: b
                  action: x.y
    """
    assert found(text) == [("input-type", "error", 6, 18)]
    assert found(text.replace("input.n ", "input.l ")) == []


# ------------------------------------------------------------------------------------ unknown-name


def test_unknown_root_name_with_suggestion() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with: {v: "{{ inptu.x }}"}
    """
    assert found(text) == [("unknown-name", "error", 5, 19)]
    assert "did you mean 'input'" in messages(text, "unknown-name")[0]


def test_unknown_attribute_of_execution() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with: {v: "{{ execution.started }}"}
    """
    assert found(text) == [("unknown-name", "error", 5, 29)]


def test_locals_globals_and_loop_pass() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with:
              v: "{% set n = 2 %}{{ n }}{{ range(3) | list }}{{ duration('1h') }}{{ execution.id }}"
              w: "{% for x in [1] %}{{ x }}{{ loop.index }}{% endfor %}"
    """
    assert found(text) == []


# ------------------------------------------------------------------------------------ undefined-var


def test_undefined_var() -> None:
    text = """
        name: t
        steps:
          - id: a
            set: {count: 1}
          - id: b
            action: x.y
            with: {v: "{{ vars.cont }}"}
    """
    assert found(text) == [("undefined-var", "error", 7, 24)]
    assert "did you mean 'count'" in messages(text, "undefined-var")[0]
    assert found(text.replace("vars.cont", "vars.count")) == []


# ------------------------------------------------------------------------------------ out-of-scope


def test_foreach_item_and_index_outside_the_body() -> None:
    text = """
        name: t
        steps:
          - id: a
            foreach:
              items: [1, 2]
              as: line
              steps:
                - id: b
                  action: x.y
                  with: {v: "{{ line }} {{ index }}"}
          - id: c
            action: x.y
            with: {v: "{{ line }}", w: "{{ index }}"}
    """
    assert found(text) == [("out-of-scope", "error", 13, 19), ("out-of-scope", "error", 13, 36)]


def test_result_outside_an_output_template() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            with: {v: "{{ result }}"}
            output: "{{ result.id }}"
    """
    assert found(text) == [("out-of-scope", "error", 5, 19)]


def test_error_only_in_a_catch_target() -> None:
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            catch: [{errors: [any], goto: handle}]
            next: done
          - id: handle
            action: x.log
            with: {v: "{{ error.message }}"}
          - id: done
            action: x.z
            with: {v: "{{ error.name }}"}
    """
    assert found(text) == [("out-of-scope", "error", 12, 19)]


def test_a_compensation_reads_error_the_failure_that_started_the_unwinding() -> None:
    """Issue 12: docs/semantics.md says a compensation can read `error`; the checker agrees (it used to
    refuse it in a catch target's compensation)."""
    text = """
        name: t
        steps:
          - id: a
            action: x.y
            catch: [{errors: [any], goto: handle}]
          - id: handle
            action: x.log
            compensate: {action: x.undo, with: {v: "{{ error }}", n: "{{ error.name }}"}}
    """
    assert found(text) == []


def test_nested_foreach_sees_both_items() -> None:
    text = """
        name: t
        steps:
          - id: a
            foreach:
              items: [[1], [2]]
              as: row
              steps:
                - id: b
                  foreach:
                    items: "{{ row }}"
                    as: cell
                    steps:
                      - id: c
                        action: x.y
                        with: {v: "{{ row }}{{ cell }}{{ index }}"}
    """
    assert found(text) == []


# ------------------------------------------------------------------------------------ the pipeline


def test_every_rule_is_documented() -> None:
    doc = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### `([a-z0-9-]+)`", doc, re.MULTILINE))
    missing = sorted(set(rules()) - headings)
    assert not missing, f"rules missing from docs/rules.md: {missing}"
    stale = sorted(headings - set(rules()))
    assert not stale, f"docs/rules.md documents rules that do not exist: {stale}"


def test_every_example_in_the_rules_document_triggers_exactly_its_rule() -> None:
    doc = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    sections = re.split(r"^### `([a-z0-9-]+)`", doc, flags=re.MULTILINE)
    checked = 0
    for name, body in zip(sections[1::2], sections[2::2], strict=True):
        examples = re.findall(r"```yaml\n(.*?)```", body, re.DOTALL)
        if not examples:
            # io and internal-error cannot be provoked by a text; the folder rules need several
            # files and are exercised in tests/test_workspace.py
            assert name in ("io", "internal-error", *WORKSPACE_RULES), f"{name} has no example"
            continue
        for example in examples:  # every example of a section, not only the first
            result = validate_text(example, "example.yaml")
            rules_found = {d.rule for d in result.diagnostics}
            if name == "checks-skipped":  # an info exists only beside the error that causes it
                assert "checks-skipped" in rules_found and rules_found <= {name, "schema"}, result.diagnostics
            else:  # (a schema error may come with the info saying what it kept from being checked)
                assert {d.rule for d in result.diagnostics if d.severity != "info"} == {name}, (
                    name,
                    result.diagnostics,
                )
        checked += 1
    assert checked >= 25


def test_all_problems_are_reported_at_once() -> None:
    text = """
        name: t
        env: [API]
        steps:
          - id: a
            action: x.y
            with: {a: "{{ env.APY }}", b: "{{ x | nope }}", c: "{{ vars.v }}"}
            timeout: 1m
    """
    assert {r for r, *_ in found(text)} == {
        "undeclared-env",
        "unknown-filter",
        "unknown-name",
        "undefined-var",
        "timeout-budget",
    }


@pytest.fixture()
def crashing_check() -> Iterator[None]:
    def boom(ctx: CheckContext) -> Iterator[Diagnostic]:
        raise RuntimeError("kaboom")
        yield  # pragma: no cover

    checks_module.all_checks()
    checks_module._CHECKS.append(("zz-crash", boom))
    try:
        yield
    finally:
        checks_module._CHECKS.remove(("zz-crash", boom))


@pytest.mark.usefixtures("crashing_check")
def test_a_crashing_check_is_an_internal_error_on_a_valid_document() -> None:
    result = validate_text("name: t\nsteps:\n  - id: a\n    action: x.y\n", "t.yaml")
    (diag,) = result.diagnostics
    assert (diag.rule, diag.severity, diag.position.line, diag.position.column) == (
        "internal-error",
        "error",
        1,
        1,
    )
    assert "kaboom" in diag.message and "zz-crash" in diag.message
    assert result.graph is None


@pytest.mark.usefixtures("crashing_check")
def test_a_crashing_check_is_skipped_on_a_schema_invalid_document() -> None:
    result = validate_text("name: t\nsteps:\n  - id: a\n    actoin: x.y\n", "t.yaml")
    assert result.diagnostics and all(d.rule != "internal-error" for d in result.diagnostics)


def test_graph_only_without_errors_and_diagnostics_sorted_and_unique() -> None:
    ok = validate_text("name: t\nsteps:\n  - id: a\n    action: x.y\n", "t.yaml")
    assert ok.graph is not None and ok.graph.hash
    bad = validate_text(
        "name: t\nsteps:\n  - id: a\n    action: x.y\n    timeout: 1m\n    with: {a: '{{ q }}'}\n"
    )
    assert bad.graph is None
    keys = [d.sort_key() for d in bad.diagnostics]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
