"""Red-team cases for the validator: broken workflows written the way authors really get them wrong,
each with the one diagnostic it must produce (rule, line, column, a fragment of the message that
leads to the fix), and unusual-but-valid files that must produce none.

Columns count characters (Unicode code points), whatever the width of the characters before them.
"""

from __future__ import annotations

import os
import random
import stat
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl.diagnostics import Diagnostic, Position, render_text
from dsl.validate import validate_path, validate_text


def T(text: str) -> str:
    """A case's YAML: the literal is indented in this file; a leading newline is dropped."""
    return textwrap.dedent(text).lstrip("\n")


def found(text: str) -> list[tuple[str, int, int, str]]:
    """The errors and warnings (the ``checks-skipped`` infos are checked in check_infos)."""
    result = validate_text(text, "t.yaml")
    check_infos(result.diagnostics)
    return [
        (d.rule, d.position.line, d.position.column, d.message)
        for d in result.diagnostics
        if d.severity != "info"
    ]


def check_infos(diagnostics: tuple[Diagnostic, ...]) -> None:
    """An info only ever says that some rules were skipped, and only where there is an error."""
    infos = [d for d in diagnostics if d.severity == "info"]
    assert all(d.rule == "checks-skipped" for d in infos), infos
    assert not infos or any(d.is_error for d in diagnostics), infos


def check_invariants(text: str, diagnostics: list[tuple[str, int, int, str]]) -> None:
    """Whatever the input: no internal error, every position inside the file, nothing reported twice."""
    lines = max(1, len(text.splitlines()) + 1)
    for rule, line, column, message in diagnostics:
        assert rule != "internal-error", message
        assert 1 <= line <= lines, (rule, line, message)
        assert column >= 1, (rule, column, message)
        assert "Traceback" not in message
    assert len({d[:3] for d in diagnostics}) == len(diagnostics), diagnostics


# (name, text, [(rule, line, column, message fragment), ...])
CASES: list[tuple[str, str, list[tuple[str, int, int, str]]]] = [
    (
        "unquoted-template-url",
        T("""
            name: t
            env: [API]
            steps:
              - id: a
                http:
                  url: {{ env.API }}/x
            """),
        [("yaml-syntax", 6, 12, 'write url: "{{ env.API }}/x"')],
    ),
    (
        "unquoted-template-whole",
        T("""
            name: t
            env: [API]
            steps:
              - id: a
                http:
                  url: {{ env.API }}
            """),
        [("unquoted-template", 6, 12, 'write url: "{{ env.API }}"')],
    ),
    (
        "unquoted-template-with",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: {{ input.x }}
            """),
        [("unquoted-template", 6, 10, 'write v: "{{ input.x }}"')],
    ),
    (
        "unquoted-template-set",
        T("""
            name: t
            steps:
              - id: a
                set:
                  v: {{ input.x }}
            """),
        [("unquoted-template", 5, 10, 'write v: "{{ input.x }}"')],
    ),
    (
        "unquoted-template-output",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                output: {{ result.json }}
            """),
        [("unquoted-template", 5, 13, 'write output: "{{ result.json }}"')],
    ),
    (
        "unquoted-template-if",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                if: {{ input.x }}
            """),
        [("unquoted-template", 5, 9, 'write if: "{{ input.x }}"')],
    ),
    (
        "unquoted-items",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: {{ input.items }}
                  steps:
                    - id: b
                      action: x.y
            """),
        [("unquoted-template", 5, 14, 'write items: "{{ input.items }}"')],
    ),
    (
        "missing-close",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.x "}
            """),
        [("template-syntax", 5, 16, "template syntax error: '{{' is not closed: add '}}'")],
    ),
    (
        "missing-close-2",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "hello {{ input.x } world"
            """),
        [("template-syntax", 6, 28, "unexpected '}' (a template expression ends with '}}')")],
    ),
    (
        "jinja-error",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "{{ input.x | }}"
            """),
        [("template-syntax", 6, 22, "template syntax error: a filter name is missing after '|'")],
    ),
    (
        "jinja-if-unclosed",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "{% if input.x %}yes"
            """),
        [("template-syntax", 6, 11, "'{% if %}' is not closed: add '{% endif %}'")],
    ),
    (
        "on-key-top",
        T("""
            name: t
            on: push
            steps:
              - id: a
                action: x.y
            """),
        [("unknown-key", 2, 1, "name, version, description, input, env, vars, defaults, timeout,")],
    ),
    (
        "yes-id",
        T("""
            name: t
            steps:
              - id: yes
                action: x.y
            """),
        [("schema", 3, 9, "quote it: 'yes'")],
    ),
    (
        "null-id",
        T("""
            name: t
            steps:
              - id: null
                action: x.y
            """),
        [("schema", 3, 9, "quote it: 'null'")],
    ),
    (
        "empty-id",
        T("""
            name: t
            steps:
              - id:
                action: x.y
            """),
        [("schema", 3, 8, "expected a step id such as 'book_table', got an empty value")],
    ),
    (
        "octal-name",
        T("""
            name: 08
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 1, 7, "start with a lowercase letter, then use lowercase letters,")],
    ),
    (
        "sexagesimal-duration",
        T("""
            name: t
            steps:
              - id: a
                wait: {for: 12:30}
            """),
        [("schema", 4, 17, "quote it: '12:30'")],
    ),
    (
        "date-until",
        T("""
            name: t
            steps:
              - id: a
                wait: {until: 2030-01-31}
            """),
        [("schema", 4, 19, "expected a template or an ISO-8601 date-time with offset,")],
    ),
    (
        "datetime-until",
        T("""
            name: t
            steps:
              - id: a
                wait: {until: 2030-01-31T19:00:00Z}
            """),
        [("schema", 4, 19, "expected a template or an ISO-8601 date-time with offset,")],
    ),
    (
        "datetime-until-nooffset",
        T("""
            name: t
            steps:
              - id: a
                wait: {until: "2030-01-31T19:00:00"}
            """),
        [("schema", 4, 19, "use a template such as '{{ input.when }}' or an ISO-8601")],
    ),
    (
        "dur-space",
        T("""
            name: t
            steps:
              - id: a
                wait: {for: 5 min}
            """),
        [("schema", 4, 17, "did you mean '5m'?")],
    ),
    (
        "dur-frac-h",
        T("""
            name: t
            steps:
              - id: a
                wait: {for: 1.5h}
            """),
        [],
    ),
    (
        "dur-neg",
        T("""
            name: t
            steps:
              - id: a
                wait: {for: -1s}
            """),
        [("schema", 4, 17, "a duration cannot be negative")],
    ),
    (
        "dur-zero",
        T("""
            name: t
            steps:
              - id: a
                wait: {for: 0s}
            """),
        [("bad-duration", 4, 17, "remove the step or give a positive duration")],
    ),
    (
        "dur-int",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                timeout: 10
            """),
        [("schema", 5, 14, "write '10s' for seconds (or ms, m, h, d)")],
    ),
    (
        "dur-min",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                timeout: 5min
            """),
        [("schema", 5, 14, "did you mean '5m'?")],
    ),
    (
        "dur-sec",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                timeout: 5 seconds
            """),
        [("schema", 5, 14, "did you mean '5s'?")],
    ),
    (
        "dur-upper",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                timeout: 5S
            """),
        [("schema", 5, 14, "did you mean '5s'?")],
    ),
    (
        "dur-float",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                timeout: 2.5
            """),
        [("schema", 5, 14, "write '2.5s' for seconds (or ms, m, h, d)")],
    ),
    (
        "retry-zero",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempts: 0}
            """),
        [("schema", 5, 27, "expected at least 1, got 0 (it counts every attempt, the")],
    ),
    (
        "retry-string",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempts: "3"}
            """),
        [("schema", 5, 27, "write 3 without quotes")],
    ),
    (
        "retry-int",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: 3
            """),
        [("schema", 5, 12, "write retry: {max_attempts: 3}")],
    ),
    (
        "retry-backoff-lt1",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempts: 3, backoff: 0.5}
            """),
        [("schema", 5, 39, "expected at least 1, got 0.5 (the interval is multiplied by")],
    ),
    (
        "retry-on-string",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempts: 3, on: timeout}
            """),
        [("schema", 5, 34, "write it as a list: on: [timeout]")],
    ),
    (
        "retry-jitter-off",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempts: 3, jitter: off}
            """),
        [("schema", 5, 38, "did you mean 'none'?")],
    ),
    (
        "retry-typo",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempt: 3}
            """),
        [("unknown-key", 5, 13, "did you mean 'max_attempts'?")],
    ),
    (
        "retry-interval-int",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempts: 3, interval: 5}
            """),
        [("schema", 5, 40, "write '5s' for seconds (or ms, m, h, d)")],
    ),
    (
        "expect-strings",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", expect: ["200", "201"]}
            """),
        [("schema", 4, 42, "write 200 without quotes"), ("schema", 4, 49, "write 201 without quotes")],
    ),
    (
        "expect-int",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", expect: 200}
            """),
        [("schema", 4, 41, "write it as a list: expect: [200]")],
    ),
    (
        "expect-2xx",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", expect: [2xx]}
            """),
        [("schema", 4, 42, "any 2xx is already the default")],
    ),
    (
        "expect-range",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", expect: [200, 700]}
            """),
        [("schema", 4, 47, "item 2 of expect: expected at most 599, got 700")],
    ),
    (
        "catch-unknown",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{errors: [timout], goto: b}]
              - id: b
                action: x.y
            """),
        [("unknown-error", 5, 23, "did you mean 'timeout'?")],
    ),
    (
        "catch-string",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch:
                  - errors: timeout
                    goto: b
              - id: b
                action: x.y
            """),
        [("schema", 6, 17, "write it as a list: errors: [timeout]")],
    ),
    (
        "catch-mapping",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch:
                  errors: [timeout]
                  goto: b
              - id: b
                action: x.y
            """),
        [("schema", 6, 7, "write catch as a list: catch: [{errors: [...], goto: id}]")],
    ),
    (
        "catch-http500",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{errors: [http.50], goto: b}]
              - id: b
                action: x.y
            """),
        [("schema", 5, 23, "did you mean 'http.5xx'?")],
    ),
    (
        "catch-nogoto",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{errors: [any]}]
            """),
        [("missing-key", 5, 13, "there the caught error is readable as 'error' ({name,")],
    ),
    (
        "catch-error-key",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{error: [any], goto: b}]
              - id: b
                action: x.y
            """),
        [("unknown-key", 5, 14, "did you mean 'errors'?")],
    ),
    (
        "catch-5XX",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{errors: [http.5XX], goto: b}]
              - id: b
                action: x.y
            """),
        [("schema", 5, 23, "did you mean 'http.5xx'?")],
    ),
    (
        "catch-empty-errors",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{errors: [], goto: b}]
              - id: b
                action: x.y
            """),
        [("schema", 5, 22, "errors is empty: give at least one item")],
    ),
    (
        "goto-into-foreach",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  - if: "{{ input.x }}"
                    goto: inner
              - id: loop
                foreach:
                  items: [1, 2]
                  steps:
                    - id: inner
                      action: x.y
            """),
        [("cross-scope-target", 6, 15, "a jump must stay inside its own list")],
    ),
    (
        "switch-no-cases",
        T("""
            name: t
            steps:
              - id: a
                switch: []
            """),
        [("schema", 4, 13, "switch is empty: give at least one item")],
    ),
    (
        "switch-null",
        T("""
            name: t
            steps:
              - id: a
                switch:
            """),
        [("schema", 4, 12, "indent its entries on the lines below it, deeper than")],
    ),
    (
        "switch-mapping",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  if: "{{ input.x }}"
                  goto: b
              - id: b
                action: x.y
            """),
        [("schema", 5, 7, "switch is a list of cases: start each case with '- ', e.g.")],
    ),
    (
        "switch-default-not-last",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  - default: b
                  - if: "{{ input.x }}"
                    goto: b
              - id: b
                action: x.y
            """),
        [("schema", 5, 9, "the default of step 'a' must be its last case (cases after")],
    ),
    (
        "switch-cases-key",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  cases:
                    - if: "{{ input.x }}"
                      goto: b
              - id: b
                action: x.y
            """),
        [("schema", 5, 7, "switch is the list of cases itself: remove 'cases:' and put")],
    ),
    (
        "switch-then",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  - if: "{{ input.x }}"
                    then: b
              - id: b
                action: x.y
            """),
        [("unknown-key", 6, 9, "did you mean 'goto'?")],
    ),
    (
        "switch-if-plain",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  - if: input.x > 1
                    goto: b
              - id: b
                action: x.y
            """),
        [("schema", 5, 13, "write a template such as '{{ input.amount > 100 }}', or")],
    ),
    (
        "parallel-zero",
        T("""
            name: t
            steps:
              - id: a
                parallel:
                  branches: []
            """),
        [("schema", 5, 17, "branches is empty: give at least one item")],
    ),
    (
        "parallel-empty-branch",
        T("""
            name: t
            steps:
              - id: a
                parallel:
                  branches:
                    - steps: []
                    - steps:
                        - id: b
                          action: x.y
            """),
        [("schema", 6, 18, "steps is empty: add at least one step")],
    ),
    (
        "parallel-branch-no-steps",
        T("""
            name: t
            steps:
              - id: a
                parallel:
                  branches:
                    - id: b
                      action: x.y
            """),
        [("schema", 6, 11, "write '- steps:' and indent the step below it")],
    ),
    (
        "parallel-list",
        T("""
            name: t
            steps:
              - id: a
                parallel:
                  - steps:
                      - id: b
                        action: x.y
            """),
        [("schema", 5, 7, "write parallel: {branches: [{steps: [...]}, …]}: each")],
    ),
    (
        "parallel-no-branches-key",
        T("""
            name: t
            steps:
              - id: a
                parallel:
                  steps:
                    - id: b
                      action: x.y
            """),
        [("unknown-key", 5, 7, "write branches: [{steps: [...]}, {steps: [...]}]")],
    ),
    (
        "foreach-item-no-as",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: [1, 2]
                  steps:
                    - id: b
                      action: x.y
                      with: {v: "{{ item }}"}
            """),
        [],
    ),
    (
        "foreach-as-used-item",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: [1, 2]
                  as: order
                  steps:
                    - id: b
                      action: x.y
                      with: {v: "{{ item.id }}"}
            """),
        [("unknown-name", 10, 25, "order`): here a template can read env, execution, index,")],
    ),
    (
        "foreach-conc-zero",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: [1, 2]
                  concurrency: 0
                  steps:
                    - id: b
                      action: x.y
            """),
        [("schema", 6, 20, "leave it out for the default, 10)")],
    ),
    (
        "foreach-no-steps",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: [1, 2]
            """),
        [("missing-key", 4, 5, "an item's output is the output of the last step it ran)")],
    ),
    (
        "foreach-do",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: [1, 2]
                  do:
                    - id: b
                      action: x.y
            """),
        [("unknown-key", 6, 7, "did you mean 'steps'?")],
    ),
    (
        "foreach-items-string",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: input.items
                  steps:
                    - id: b
                      action: x.y
            """),
        [("schema", 5, 14, "write a template such as '{{ input.items }}' or a YAML list")],
    ),
    (
        "nested-dup-ids",
        T("""
            name: t
            steps:
              - id: a
                parallel:
                  branches:
                    - steps:
                        - id: x
                          action: x.y
                    - steps:
                        - id: x
                          action: x.y
            """),
        [("duplicate-id", 10, 19, "duplicate step id 'x': already used by the step at line 7")],
    ),
    (
        "compensate-with-id",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  id: undo
                  action: x.undo
            """),
        [("unknown-key", 6, 7, "it is a step body (http, action or workflow) with only its")],
    ),
    (
        "compensate-ref-later",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  action: x.undo
                  with: {v: "{{ steps.b.output }}"}
              - id: b
                action: x.y
            """),
        [("reference-never-before", 7, 21, "no path runs it first")],
    ),
    (
        "output-result-wrong",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ result.x }}"}
            """),
        [("out-of-scope", 5, 19, "`result` exists only in a step's `output` template (it is")],
    ),
    (
        "top-output-result",
        T("""
            name: t
            output: "{{ result }}"
            steps:
              - id: a
                action: x.y
            """),
        [("out-of-scope", 2, 13, "`result` exists only in a step's `output` template (it is")],
    ),
    (
        "input-propertiez",
        T("""
            name: t
            input:
              type: object
              propertiez:
                x: {type: string}
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.x }}"}
            """),
        [("input-schema", 4, 3, "did you mean 'properties'?")],
    ),
    (
        "input-type-int",
        T("""
            name: t
            input:
              type: object
              properties:
                x: {type: int}
            steps:
              - id: a
                action: x.y
            """),
        [("input-schema", 5, 15, "did you mean 'integer'?")],
    ),
    (
        "env-lower",
        T("""
            name: t
            env: [api_url]
            steps:
              - id: a
                http: {url: "{{ env.api_url }}"}
            """),
        [("schema", 2, 7, "did you mean 'API_URL'?")],
    ),
    (
        "name-upper",
        T("""
            name: MyFlow
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 1, 7, "did you mean 'myflow'?")],
    ),
    (
        "steps-mapping",
        T("""
            name: t
            steps: {}
            """),
        [("schema", 2, 8, "start each step with '- ' (steps is a list)")],
    ),
    (
        "steps-mapping-full",
        T("""
            name: t
            steps:
              a:
                action: x.y
            """),
        [("schema", 3, 3, "start each step with '- ' (steps is a list)")],
    ),
    (
        "empty",
        "",
        [("schema", 1, 1, "a workflow is a mapping with at least 'name' and 'steps'")],
    ),
    (
        "comment-only",
        T("""
            # just a comment
            """),
        [("schema", 1, 1, "a workflow is a mapping with at least 'name' and 'steps'")],
    ),
    (
        "json-file",
        T("""
            {"name": "t", "steps": [{"id": "a", "action": "x.y"}]}
            """),
        [],
    ),
    (
        "json-file-bad",
        T("""
            {"name": "t", "steps": [{"id": "a", "acton": "x.y"}]}
            """),
        [("unknown-key", 1, 37, "did you mean 'action'?")],
    ),
    (
        "key-wrong-level-with",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
              with: {v: 1}
            """),
        [("yaml-syntax", 5, 3, "to be a new item, start it with '- '")],
    ),
    (
        "with-under-wrong-step",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io"}
                with: {v: 1}
            """),
        [("schema", 5, 5, "'with' only goes with 'action' in step 'a'")],
    ),
    (
        "steps-not-list",
        T("""
            name: t
            steps:
              id: a
              action: x.y
            """),
        [("schema", 3, 3, "start each step with '- ' (steps is a list)")],
    ),
    (
        "steps-items-no-dash",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                id: b
                action: x.z
            """),
        [("yaml-duplicate-key", 5, 5, "if this line starts a new list item, begin it with '- '")],
    ),
    (
        "over-indent",
        T("""
            name: t
            steps:
              - id: a
                  action: x.y
            """),
        [("yaml-syntax", 4, 7, "this line is indented more than line 3, so YAML reads it as")],
    ),
    (
        "under-indent-http-body",
        T("""
            name: t
            steps:
              - id: a
                http:
                url: "https://x.io"
            """),
        [("unknown-key", 5, 5, "indent it deeper than 'http'")],
    ),
    (
        "http-body-at-step",
        T("""
            name: t
            steps:
              - id: a
                http:
                  method: GET
                url: "https://x.io"
            """),
        [("unknown-key", 6, 5, "it belongs inside 'http:' (indent it under http)")],
    ),
    (
        "step-keys-at-top",
        T("""
            name: t
            steps:
              - id: a
            action: x.y
            """),
        [("unknown-key", 4, 1, "line it up with 'id' (column 5)")],
    ),
    (
        "missing-colon",
        T("""
            name: t
            steps:
              - id a
                action: x.y
            """),
        [("yaml-syntax", 3, 5, "did you mean 'id: a'?")],
    ),
    (
        "missing-space-after-colon",
        T("""
            name: t
            steps:
              - id:a
                action: x.y
            """),
        [("yaml-syntax", 3, 8, "put a space after the ':' of 'id' on line 3: without it")],
    ),
    (
        "dash-no-space",
        T("""
            name: t
            steps:
              -id: a
               action: x.y
            """),
        [("yaml-syntax", 3, 4, "write '- id: a' on line 3")],
    ),
    (
        "unclosed-quote",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "hello}
              - id: b
                action: x.y
            """),
        [("yaml-syntax", 5, 15, 'this " is never closed (the string runs to the end of the')],
    ),
    (
        "unclosed-bracket-seq",
        T("""
            name: t
            env: [A, B
            steps:
              - id: a
                action: x.y
            """),
        [("yaml-syntax", 2, 6, "this '[' is never closed: add ']' at the end of its value")],
    ),
    (
        "unclosed-flow-map",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {a: 1
              - id: b
                action: x.y
            """),
        [("yaml-syntax", 5, 11, "this '{' is never closed: add '}' at the end of its value")],
    ),
    (
        "two-docs",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
            ---
            name: u
            """),
        [("yaml-syntax", 6, 1, "remove the '---' and what follows, or put the second")],
    ),
    (
        "colon-in-plain-value",
        T("""
            name: t
            steps:
              - id: a
                fail: {error: Oops, message: Error: something went wrong}
            """),
        [("yaml-syntax", 4, 39, "a plain value inside {…} cannot contain ': ' (nor ',', '[',")],
    ),
    (
        "colon-in-block-value",
        T("""
            name: t
            steps:
              - id: a
                fail:
                  error: Oops
                  message: Error: something: went wrong
            """),
        [("yaml-syntax", 6, 16, "this value contains ': ', which YAML reads as the start of")],
    ),
    (
        "hash-in-value",
        T("""
            name: t
            steps:
              - id: a
                http: {url: https://x.io/#frag}
            """),
        [],
    ),
    (
        "at-sign-start",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: @user}
            """),
        [("yaml-syntax", 5, 15, 'write "@user"')],
    ),
    (
        "backtick",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: `cmd`}
            """),
        [("yaml-syntax", 5, 15, 'write "`cmd`"')],
    ),
    (
        "percent-start",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: {% if input.x %}a{% endif %}
            """),
        [("yaml-syntax", 6, 10, 'write v: "{% if input.x %}a{% endif %}"')],
    ),
    (
        "star-alias-undefined",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: *missing}
            """),
        [("yaml-syntax", 5, 15, "write a literal '*', quote the value)")],
    ),
    (
        "dup-key-step",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                id: b
            """),
        [("yaml-duplicate-key", 5, 5, "if this line starts a new list item, begin it with '- '")],
    ),
    (
        "dup-key-top",
        T("""
            name: t
            name: u
            steps:
              - id: a
                action: x.y
            """),
        [("yaml-duplicate-key", 2, 1, "duplicate key 'name' (first defined at line 1, column 1)")],
    ),
    (
        "python-tag",
        T("""
            name: t
            steps:
              - id: a
                action: !!python/object/apply:os.system ["ls"]
            """),
        [("yaml-syntax", 4, 13, "the tag '!!python/object/apply:os.system' is not supported:")],
    ),
    (
        "unknown-tag",
        T("""
            name: t
            steps:
              - id: a
                action: !foo x.y
            """),
        [("yaml-syntax", 4, 13, "could not determine a constructor for the tag '!foo' (tags")],
    ),
    (
        "list-top",
        T("""
            - name: t
              steps: []
            """),
        [("schema", 1, 1, "a mapping with at least 'name' and 'steps', got a list")],
    ),
    (
        "scalar-top",
        T("""
            hello
            """),
        [("schema", 1, 1, "a mapping with at least 'name' and 'steps', got string")],
    ),
    (
        "step-is-string",
        T("""
            name: t
            steps:
              - a
            """),
        [("schema", 3, 5, "expected a step (a mapping with an id and one kind key such")],
    ),
    (
        "step-is-list",
        T("""
            name: t
            steps:
              - - id: a
                  action: x.y
            """),
        [("schema", 3, 5, "expected a step (a mapping with an id and one kind key such")],
    ),
    (
        "step-null",
        T("""
            name: t
            steps:
              -
              - id: a
                action: x.y
            """),
        [("schema", 3, 4, "expected a step (a mapping with an id and one kind key such")],
    ),
    (
        "wait-event-no-key",
        T("""
            name: t
            steps:
              - id: a
                wait: {event: order.paid}
            """),
        [("missing-key", 4, 12, "add key: '{{ ... }}' naming which event of that name to take")],
    ),
    (
        "wait-two-modes",
        T("""
            name: t
            steps:
              - id: a
                wait: {for: 1m, until: "2030-01-01T00:00:00Z"}
            """),
        [("schema", 4, 21, "use exactly one of for, until or event")],
    ),
    (
        "wait-timeout-with-for",
        T("""
            name: t
            steps:
              - id: a
                wait: {for: 1m, timeout: 5m}
            """),
        [("schema", 4, 21, "'timeout' only goes with 'event' in the wait of step 'a'")],
    ),
    (
        "wait-string",
        T("""
            name: t
            steps:
              - id: a
                wait: 5m
            """),
        [("schema", 4, 11, "write wait: {for: 5m}")],
    ),
    (
        "wait-event-template",
        T("""
            name: t
            steps:
              - id: a
                wait: {event: "{{ input.ev }}", key: "{{ input.k }}"}
            """),
        [("schema", 4, 19, "put what varies in 'key'")],
    ),
    (
        "wait-sleep-key",
        T("""
            name: t
            steps:
              - id: a
                sleep: 5m
            """),
        [("unknown-key", 4, 5, "did you mean 'wait'?")],
    ),
    (
        "wait-delay",
        T("""
            name: t
            steps:
              - id: a
                wait: {delay: 5m}
            """),
        [("unknown-key", 4, 12, "did you mean 'for'?")],
    ),
    (
        "workflow-no-name",
        T("""
            name: t
            steps:
              - id: a
                workflow: {input: {x: 1}}
            """),
        [("missing-key", 4, 5, "the child workflow of step 'a' has no 'name' (name of the")],
    ),
    (
        "workflow-string",
        T("""
            name: t
            steps:
              - id: a
                workflow: child
            """),
        [("schema", 4, 15, "write workflow: {name: child}")],
    ),
    (
        "workflow-args",
        T("""
            name: t
            steps:
              - id: a
                workflow: {name: child, args: {x: 1}}
            """),
        [("unknown-key", 4, 29, "did you mean 'input'?")],
    ),
    (
        "succeed-null",
        T("""
            name: t
            steps:
              - id: a
                succeed:
            """),
        [("schema", 4, 13, "indent its entries on the lines below it, deeper than")],
    ),
    (
        "succeed-string",
        T("""
            name: t
            steps:
              - id: a
                succeed: done
            """),
        [("schema", 4, 14, "write succeed: {output: done}")],
    ),
    (
        "fail-string",
        T("""
            name: t
            steps:
              - id: a
                fail: NoTable
            """),
        [("schema", 4, 11, "write fail: {error: NoTable}")],
    ),
    (
        "fail-no-error",
        T("""
            name: t
            steps:
              - id: a
                fail: {message: oops}
            """),
        [("missing-key", 4, 5, "the fail of step 'a' has no 'error' (the error name,")],
    ),
    (
        "fail-any",
        T("""
            name: t
            steps:
              - id: a
                fail: {error: any}
            """),
        [("schema", 4, 19, "it only matches errors (in catch and retry.on)")],
    ),
    (
        "fail-space-name",
        T("""
            name: t
            steps:
              - id: a
                fail: {error: No Table}
            """),
        [("schema", 4, 19, "use a name such as 'NoTable' or 'order.rejected' (or an")],
    ),
    (
        "set-empty",
        T("""
            name: t
            steps:
              - id: a
                set: {}
            """),
        [("schema", 4, 10, "set is empty: give at least one variable")],
    ),
    (
        "set-bad-name",
        T("""
            name: t
            steps:
              - id: a
                set: {my-var: 1}
            """),
        [("schema", 4, 11, "use letters, digits and '_', not starting with a digit")],
    ),
    (
        "set-list",
        T("""
            name: t
            steps:
              - id: a
                set:
                  - x: 1
            """),
        [("schema", 5, 7, "write set as a mapping: set: {name: value} (without '- ')")],
    ),
    (
        "http-lower-method",
        T("""
            name: t
            steps:
              - id: a
                http: {method: post, url: "https://x.io"}
            """),
        [("schema", 4, 20, "did you mean 'POST'?")],
    ),
    (
        "http-relative",
        T("""
            name: t
            steps:
              - id: a
                http: {url: /orders}
            """),
        [("schema", 4, 17, "write '{{ env.API }}/orders' with API listed under env")],
    ),
    (
        "http-no-url",
        T("""
            name: t
            steps:
              - id: a
                http: {method: GET}
            """),
        [("missing-key", 4, 5, "the http request of step 'a' has no 'url' (absolute http(s)")],
    ),
    (
        "http-json-body",
        T("""
            name: t
            steps:
              - id: a
                http: {method: POST, url: "https://x.io", json: {a: 1}, body: "x"}
            """),
        [("schema", 4, 61, "send one of them")],
    ),
    (
        "http-headers-list",
        T("""
            name: t
            steps:
              - id: a
                http:
                  url: "https://x.io"
                  headers:
                    - Authorization: x
            """),
        [("schema", 7, 9, "write headers as a mapping: headers: {Name: value} (without")],
    ),
    (
        "http-offload-string",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", offload: "true"}
            """),
        [("schema", 4, 42, "write true without quotes")],
    ),
    (
        "http-timeout-over",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io"}
                timeout: 30s
            """),
        [("timeout-budget", 5, 14, "set `offload: true` so QStash makes the call, or raise")],
    ),
    (
        "http-timeout-in-http",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", timeout: 5s}
            """),
        [("unknown-key", 4, 33, "move it out of 'http:' and line it up with 'http'")],
    ),
    (
        "http-retry-in-http",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", retry: {max_attempts: 3}}
            """),
        [("unknown-key", 4, 33, "move it out of 'http:' and line it up with 'http'")],
    ),
    (
        "action-dash",
        T("""
            name: t
            steps:
              - id: a
                action: my-module.do-thing
            """),
        [("schema", 4, 13, "use dotted Python identifiers such as 'payments.charge'")],
    ),
    (
        "action-with-list",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: [1, 2]
            """),
        [("schema", 5, 11, "write with as a mapping of argument names: with: {name:")],
    ),
    (
        "next-unknown",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                next: bb
              - id: b
                action: x.y
            """),
        [("unknown-target", 5, 11, "did you mean 'b'?")],
    ),
    (
        "next-self-loop",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                next: a
            """),
        [("endless-loop", 3, 9, "no path leaves it for the end of the top-level steps, a")],
    ),
    (
        "on-failure-bad",
        T("""
            name: t
            on_failure: rollback
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 2, 13, "expected one of compensate, stop, got string 'rollback'")],
    ),
    (
        "on-failure-bool",
        T("""
            name: t
            on_failure: no
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 2, 13, "write one of the words above")],
    ),
    (
        "defaults-bad-key",
        T("""
            name: t
            defaults:
              retries: 3
            steps:
              - id: a
                action: x.y
            """),
        [("unknown-key", 3, 3, "did you mean 'retry'?")],
    ),
    (
        "defaults-max-attempts",
        T("""
            name: t
            defaults:
              max_attempts: 3
            steps:
              - id: a
                action: x.y
            """),
        [("unknown-key", 3, 3, "it belongs inside 'retry:' (indent it under retry)")],
    ),
    (
        "version-float",
        T("""
            name: t
            version: 1.2
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 2, 10, "quote it: '1.2'")],
    ),
    (
        "env-string",
        T("""
            name: t
            env: API_URL
            steps:
              - id: a
                http: {url: "{{ env.API_URL }}"}
            """),
        [("schema", 2, 6, "write env: [API_URL]")],
    ),
    (
        "env-mapping",
        T("""
            name: t
            env:
              API_URL: https://x.io
            steps:
              - id: a
                http: {url: "{{ env.API_URL }}"}
            """),
        [("schema", 3, 3, "write env: [API_URL]")],
    ),
    (
        "if-string",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                if: input.x
            """),
        [("schema", 5, 9, "write a template such as '{{ input.amount > 100 }}', or")],
    ),
    (
        "steps-with-name-key",
        T("""
            name: t
            steps:
              - name: a
                action: x.y
            """),
        [("unknown-key", 3, 5, "did you mean 'id'?")],
    ),
    (
        "step-description",
        T("""
            name: t
            steps:
              - id: a
                description: does things
                action: x.y
            """),
        [("unknown-key", 4, 5, "write it as a YAML comment (# …)")],
    ),
    (
        "undeclared-env-and-unknown-filter",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ env.X | lenght }}"}
            """),
        [
            ("undeclared-env", 5, 23, "env.X is not declared: add X to the top-level `env:` list"),
            ("unknown-filter", 5, 27, "did you mean 'length'?"),
        ],
    ),
    (
        "comp-set",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  set: {x: 1}
            """),
        [("unknown-key", 6, 7, "use one of http, action (with 'with') or workflow")],
    ),
    (
        "comp-two-kinds",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  action: x.undo
                  http: {url: "https://x.io"}
            """),
        [("schema", 7, 7, "use exactly one of http, action or workflow")],
    ),
    (
        "comp-null",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
            """),
        [("schema", 5, 16, "indent its entries on the lines below it, deeper than")],
    ),
    (
        "comp-string",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate: x.undo
            """),
        [("schema", 5, 17, "write compensate: {action: x.undo}")],
    ),
    (
        "comp-list",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  - action: x.undo
            """),
        [],  # a list of compensation bodies is the language now (run in order; issue 12)
    ),
    (
        "comp-with-no-action",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  http: {url: "https://x.io"}
                  with: {a: 1}
            """),
        [("schema", 7, 7, "'with' only goes with 'action' in the compensation of step")],
    ),
    (
        "comp-result",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  action: x.undo
                  with: {v: "{{ result.id }}"}
            """),
        [("out-of-scope", 7, 21, "`result` exists only in a step's `output` template (it is")],
    ),
    (
        "comp-own-output",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  action: x.undo
                  with: {v: "{{ steps.a.output.id }}"}
            """),
        [],
    ),
    (
        "ref-outputs-typo",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
              - id: b
                action: x.y
                with: {v: "{{ steps.a.outputs }}"}
            """),
        [("reference-attribute", 7, 27, "steps.a has only .output, not .outputs (did you mean")],
    ),
    (
        "ref-sibling-branch",
        T("""
            name: t
            steps:
              - id: p
                parallel:
                  branches:
                    - steps:
                        - {id: a, action: x.y}
                    - steps:
                        - {id: b, action: x.y, with: {v: "{{ steps.a.output }}"}}
            """),
        [("reference-out-of-scope", 9, 50, "read it after the join")],
    ),
    (
        "ref-after-join",
        T("""
            name: t
            steps:
              - id: p
                parallel:
                  branches:
                    - steps:
                        - {id: a, action: x.y}
                    - steps:
                        - {id: b, action: x.y}
              - id: c
                action: x.y
                with: {v: "{{ steps.a.output }}{{ steps.b.output }}"}
            """),
        [],
    ),
    (
        "ref-dynamic",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
              - id: b
                action: x.y
                with: {v: "{{ steps['a'].output }}"}
            """),
        [],
    ),
    (
        "ref-self-if",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                if: "{{ steps.a.output }}"
            """),
        [("reference-never-before", 5, 13, "step 'a' cannot read its own output before it has run")],
    ),
    (
        "ref-self-output",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                output: "{{ steps.a.output.id }}"
            """),
        [("reference-never-before", 5, 17, "use `result` (the step's raw result)")],
    ),
    (
        "input-required-string",
        T("""
            name: t
            input:
              type: object
              required: x
              properties:
                x: {type: string}
            steps:
              - id: a
                action: x.y
            """),
        [("input-schema", 4, 13, "write required: [x]")],
    ),
    (
        "input-props-list",
        T("""
            name: t
            input:
              type: object
              properties:
                - x
            steps:
              - id: a
                action: x.y
            """),
        [("input-schema", 5, 5, "properties maps each name to its schema: properties: {name:")],
    ),
    (
        "input-type-list-bad",
        T("""
            name: t
            input:
              type: object
              properties:
                x: {type: [string, int]}
            steps:
              - id: a
                action: x.y
            """),
        [("input-schema", 5, 15, "did you mean 'integer'?")],
    ),
    (
        "input-addl-no",
        T("""
            name: t
            input:
              type: object
              additionalProperties: no
              properties:
                x: {type: string}
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.y }}"}
            """),
        [("input-reference", 10, 25, "the input schema allows no other properties")],
    ),
    (
        "input-ref-missing",
        T("""
            name: t
            input:
              type: object
              properties:
                x: {$ref: "#/$defs/nope"}
            steps:
              - id: a
                action: x.y
            """),
        [("input-schema", 5, 15, "$ref '#/$defs/nope' points at nothing in the input schema")],
    ),
    (
        "input-enum-string",
        T("""
            name: t
            input:
              type: object
              properties:
                x: {enum: a}
            steps:
              - id: a
                action: x.y
            """),
        [("input-schema", 5, 15, "write enum: [a]")],
    ),
    (
        "input-not-object",
        T("""
            name: t
            input: string
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 2, 8, "expected a JSON Schema object such as {type: object,")],
    ),
    (
        "env-dup",
        T("""
            name: t
            env: [API, API]
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 2, 12, "env lists 'API' more than once")],
    ),
    (
        "name-space",
        T("""
            name: my flow
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 1, 7, "did you mean 'my-flow'?")],
    ),
    (
        "name-long",
        T("""
            name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 1, 7, "start with a lowercase letter, then use lowercase letters,")],
    ),
    (
        "name-empty",
        T("""
            name: ""
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 1, 7, "start with a lowercase letter, then use lowercase letters,")],
    ),
    (
        "steps-null",
        T("""
            name: t
            steps:
            """),
        [("schema", 2, 7, "indent its entries on the lines below it, deeper than")],
    ),
    (
        "steps-empty",
        T("""
            name: t
            steps: []
            """),
        [("schema", 2, 8, "steps is empty: add at least one step")],
    ),
    (
        "version-bool",
        T("""
            name: t
            version: yes
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 2, 10, "quote it: 'yes'")],
    ),
    (
        "top-timeout-zero",
        T("""
            name: t
            timeout: 0s
            steps:
              - id: a
                action: x.y
            """),
        [("bad-duration", 2, 10, "every attempt would time out at once (remove it to use the")],
    ),
    (
        "defaults-timeout-over",
        T("""
            name: t
            defaults: {timeout: 30s}
            steps:
              - id: a
                action: x.y
            """),
        [("timeout-budget", 2, 21, "shorten it, or raise --time-budget / HOPFLOW_TIME_BUDGET if")],
    ),
    (
        "id-long",
        T("""
            name: t
            steps:
              - id: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
                action: x.y
            """),
        [("schema", 3, 9, "start with a lowercase letter, then use lowercase letters,")],
    ),
    (
        "id-dash",
        T("""
            name: t
            steps:
              - id: book-table
                action: x.y
            """),
        [("schema", 3, 9, "did you mean 'book_table'?")],
    ),
    (
        "id-int",
        T("""
            name: t
            steps:
              - id: 1
                action: x.y
            """),
        [("schema", 3, 9, "quote it, or better use a name: ids start with a letter,")],
    ),
    (
        "dup-id-foreach-top",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: [1]
                  steps:
                    - {id: b, action: x.y}
              - id: b
                action: x.y
            """),
        [("duplicate-id", 8, 9, "duplicate step id 'b': already used by the step at line 7")],
    ),
    (
        "catch-goto-self",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{errors: [any], goto: a}]
            """),
        # the step's success leaves the loop, but a step that keeps failing retries for ever
        [("endless-catch-loop", 5, 35, "repeats for ever")],
    ),
    (
        "switch-const-true",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  - if: true
                    goto: c
                  - if: "{{ input.x }}"
                    goto: b
              - id: b
                action: x.y
              - id: c
                action: x.y
            """),
        [("unreachable-step", 9, 9, "no path from the start of the top-level steps reaches it")],
    ),
    (
        "switch-default-only",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  - default: c
              - id: b
                action: x.y
              - id: c
                action: x.y
            """),
        [("unreachable-step", 6, 9, "no path from the start of the top-level steps reaches it")],
    ),
    (
        "wait-until-epoch",
        T("""
            name: t
            steps:
              - id: a
                wait: {until: 1700000000}
            """),
        [("schema", 4, 19, "a Unix timestamp is not read as a time: use an ISO-8601")],
    ),
    (
        "wait-key-int",
        T("""
            name: t
            steps:
              - id: a
                wait: {event: x, key: 123}
            """),
        [("schema", 4, 27, "key: expected a string, got integer 123")],
    ),
    (
        "http-ftp",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "ftp://x.io/a"}
            """),
        [("schema", 4, 17, "start with http:// or https://, or use a template such as")],
    ),
    (
        "http-host-template",
        T("""
            name: t
            env: [HOST]
            steps:
              - id: a
                http: {url: "https://{{ env.HOST }}/a"}
            """),
        [],
    ),
    (
        "http-headers-null",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", headers: {X-A: null}}
            """),
        [("schema", 4, 48, "quote it: 'null'")],
    ),
    (
        "http-body-map",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", method: POST, body: {a: 1}}
            """),
        [("schema", 4, 53, "send structured data with json: instead of body: (body is")],
    ),
    (
        "http-method-fetch",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", method: FETCH}
            """),
        [("schema", 4, 41, "use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS")],
    ),
    (
        "action-single",
        T("""
            name: t
            steps:
              - id: a
                action: charge
            """),
        [],
    ),
    (
        "with-null",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
            """),
        [("schema", 5, 10, "indent its entries on the lines below it, deeper than 'with'")],
    ),
    (
        "set-dotted",
        T("""
            name: t
            steps:
              - id: a
                set: {vars.x: 1}
            """),
        [("schema", 4, 11, "use letters, digits and '_', not starting with a digit")],
    ),
    (
        "tpl-now",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ now() }}"}
            """),
        [],  # now() is a built-in since issue 12 (the execution's clock, virtual under fast-forward)
    ),
    (
        "tpl-execution-typo",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ execution.start_at }}"}
            """),
        [("unknown-name", 5, 29, "did you mean 'started_at'?")],
    ),
    (
        "tpl-error-msg",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{errors: [any], goto: b}]
              - id: b
                action: x.y
                with: {v: "{{ error.msg }}"}
            """),
        [("unknown-name", 8, 25, "did you mean 'message'?")],
    ),
    (
        "tpl-index-outside",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ index }}"}
            """),
        [("out-of-scope", 5, 19, "`index` exists only inside a foreach body")],
    ),
    (
        "tpl-loop-outside",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ loop.index }}"}
            """),
        [("out-of-scope", 5, 19, "`loop` exists only inside a `{% for %}` block of the same")],
    ),
    (
        "tpl-one-brace-end",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.x }"}
            """),
        [("template-syntax", 5, 27, "unexpected '}' (a template expression ends with '}}')")],
    ),
    (
        "tpl-spaced-braces",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: { { input.x } }
            """),
        [("unquoted-template", 6, 10, 'write v: "{{ input.x }}"')],
    ),
    (
        "tpl-is-defined-unknown",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ foo is defined }}"}
            """),
        [("unknown-name", 5, 19, "here a template can read env, execution, input, steps, vars")],
    ),
    (
        "tpl-single-braces",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{ input.x }"}
            """),
        [("template-lookalike", 5, 16, "write '{{ input.x }}' to read input.x")],
    ),
    (
        "tpl-dollar",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "${{ input.x }}"}
            """),
        [],
    ),
    (
        "tpl-dollar-env",
        T("""
            name: t
            env: [API]
            steps:
              - id: a
                http: {url: "${API}/x"}
            """),
        [("schema", 5, 17, "write '{{ env.API }}/x'")],
    ),
    (
        "tpl-steps-no-output",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
              - id: b
                action: x.y
                with: {v: "{{ steps.a.id }}"}
            """),
        [("reference-attribute", 7, 27, "steps.a has only .output, not .id (did you mean")],
    ),
    (
        "tpl-vars-before-set",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ vars.count }}"}
              - id: b
                set: {count: 1}
            """),
        [],
    ),
    (
        "gh-if",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                if: "${{ input.vip }}"
            """),
        [("template-lookalike", 5, 10, "remove the '$'")],
    ),
    (
        "gh-url",
        T("""
            name: t
            env: [API]
            steps:
              - id: a
                http: {url: "${{ env.API }}/x"}
            """),
        [("template-lookalike", 5, 18, "remove the '$'")],
    ),
    (
        "shell-url-tpl",
        T("""
            name: t
            env: [API]
            steps:
              - id: a
                http: {url: "https://x.io/{{ input.x }}?k=$API"}
            """),
        [("template-lookalike", 5, 47, "write '{{ env.API }}'")],
    ),
    (
        "price-ok",
        (
            "name: t\n"
            "steps:\n"
            "  - id: a\n"
            "    action: x.y\n"
            '    with: {text: "Total: ${{ input.amount }}", b: "{ not: template }", c: "$HOME'
            ' is fine", d: "{index}"}\n'
        ),
        [],
    ),
    (
        "tab-indent",
        ("name: t\nsteps:\n  - id: a\n\taction: x.y\n"),
        [("yaml-syntax", 4, 1, "YAML allows only spaces: replace the tab with spaces")],
    ),
    (
        "tab-in-nested",
        ("name: t\nsteps:\n  - id: a\n    action: x.y\n    with:\n\t  v: 1\n"),
        [("yaml-syntax", 6, 1, "YAML allows only spaces: replace the tab with spaces")],
    ),
    (
        "crlf-template",
        ('name: t\r\nsteps:\r\n  - id: a\r\n    action: x.y\r\n    with: {v: "{{ inptu.x }}"}\r\n'),
        [("unknown-name", 5, 19, "did you mean 'input'?")],
    ),
    (
        "crlf-unknown-key",
        ("name: t\r\nsteps:\r\n  - id: a\r\n    actoin: x.y\r\n"),
        [("unknown-key", 4, 5, "did you mean 'action'?")],
    ),
    (
        "crlf-block-template",
        (
            "name: t\r\n"
            "steps:\r\n"
            "  - id: a\r\n"
            "    action: x.y\r\n"
            "    with:\r\n"
            "      v: |\r\n"
            "        line one\r\n"
            "        {{ inptu.x }}\r\n"
        ),
        [("unknown-name", 8, 12, "did you mean 'input'?")],
    ),
    (
        "crlf-unclosed-map",
        ("name: t\r\nsteps:\r\n  - id: a\r\n    with: {a: 1\r\n"),
        [("yaml-syntax", 4, 11, "this '{' is never closed: add '}' at the end of its value")],
    ),
    (
        "crlf-over-indent",
        ("name: t\r\nsteps:\r\n  - id: a\r\n      action: x.y\r\n"),
        [("yaml-syntax", 4, 7, "this line is indented more than line 3, so YAML reads it as")],
    ),
    (
        "crlf-unclosed-quote",
        ('name: t\r\nsteps:\r\n  - id: a\r\n    action: "x.y\r\n'),
        [("yaml-syntax", 4, 13, 'this " is never closed (the string runs to the end of the')],
    ),
    (
        "cr-only",
        "name: t\rsteps:\r  - id: a\r    actoin: x.y\r",
        [("unknown-key", 4, 5, "did you mean 'action'?")],
    ),
    (
        "line-separator",
        "name: t\u2028steps:\u2028  - id: a\u2028    actoin: x.y\u2028",
        [("unknown-key", 4, 5, "did you mean 'action'?")],
    ),
    (
        "next-line-char",
        "name: t\x85steps:\x85  - id: a\x85    actoin: x.y\x85",
        [("unknown-key", 4, 5, "did you mean 'action'?")],
    ),
    (
        "bom",
        T("""
            \ufeffname: t
            steps:
              - id: a
                actoin: x.y
            """),
        [("unknown-key", 4, 5, "did you mean 'action'?")],
    ),
    (
        "bom-inside-value",
        T("""
            name: t
            steps:
              - id: a
                action: x.y\ufeff
            """),
        [("schema", 4, 13, "use dotted Python identifiers such as 'payments.charge': it")],
    ),
    (
        "unicode-id",
        T("""
            name: t
            steps:
              - id: café
                action: x.y
            """),
        [("schema", 3, 9, "did you mean 'cafe'?")],
    ),
    (
        "wide-chars-before-template",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "日本語 {{ inptu.x }}"}
            """),
        [("unknown-name", 5, 23, "did you mean 'input'?")],
    ),
    (
        "combining-before-template",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "éé {{ inptu.x }}"}
            """),
        [("unknown-name", 5, 24, "did you mean 'input'?")],
    ),
    (
        "emoji-before-template",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "😀😀 {{ inptu.x }}"}
            """),
        [("unknown-name", 5, 22, "did you mean 'input'?")],
    ),
    (
        "emoji-before-key",
        T("""
            name: t
            steps:
              - {id: a, action: x.y, with: {v: "😀"}, retyr: 1}
            """),
        [("unknown-key", 3, 42, "did you mean 'retry'?")],
    ),
    (
        "emoji-template-syntax",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "😀 {{ a + }}"}
            """),
        [("template-syntax", 5, 25, "unexpected '}}': a value is missing after '+'")],
    ),
    (
        "nbsp-indent",
        T("""
            name: t
            steps:
              - id: a
            \xa0   action: x.y
            """),
        [("yaml-syntax", 4, 1, "this line is indented with a no-break space (U+00A0), which")],
    ),
    (
        "zero-width-in-key",
        T("""
            name: t
            steps:
              - id: a
                act\u200bion: x.y
            """),
        [("unknown-key", 4, 5, "did you mean 'action'?")],
    ),
    (
        "nul-byte",
        T("""
            name: t
            steps:
              - id: a
                action: x.y\x00
            """),
        [("yaml-syntax", 4, 16, "unacceptable character #x0000: control characters are not")],
    ),
    (
        "bell-char",
        T("""
            name: t
            steps:
              - id: a
                action: x\x07y
            """),
        [("yaml-syntax", 4, 14, "unacceptable character #x0007: control characters are not")],
    ),
    (
        "escapes-in-double-quotes",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "a\\tb\\u00e9 {{ inptu.x }}"}
            """),
        [("unknown-name", 5, 30, "did you mean 'input'?")],
    ),
    (
        "quote-in-single-quotes",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: 'it''s {{ inptu.x }}'}
            """),
        [("unknown-name", 5, 25, "did you mean 'input'?")],
    ),
    (
        "multiline-plain",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: hello {{ input.x }}
                    and {{ inptu.y }}
            """),
        [("unknown-name", 7, 16, "did you mean 'input'?")],
    ),
    (
        "multiline-double-quoted",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "hello {{ input.x }}
                    and {{ inptu.y }}"
            """),
        [("unknown-name", 7, 16, "did you mean 'input'?")],
    ),
    (
        "folded-block",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: >
                    hello {{ input.x }}
                    and {{ inptu.y }}
            """),
        [("unknown-name", 8, 16, "did you mean 'input'?")],
    ),
    (
        "literal-keep",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: |+
                    hello

                    and {{ inptu.y }}
            """),
        [("unknown-name", 9, 16, "did you mean 'input'?")],
    ),
    (
        "literal-indent-indicator",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: |2
                      hello
                      and {{ inptu.y }}
            """),
        [("unknown-name", 8, 18, "did you mean 'input'?")],
    ),
    (
        "escaped-line-break",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "hello \\
                    and {{ inptu.y }}"
            """),
        [("unknown-name", 7, 16, "did you mean 'input'?")],
    ),
    (
        "fullwidth-colon",
        T("""
            name: t
            steps:
              - id\uff1a a
                action: x.y
            """),
        [("yaml-syntax", 3, 7, "'\uff1a' (a fullwidth colon) looks like ':' but is not YAML")],
    ),
    (
        "en-dash-list-item",
        T("""
            name: t
            steps:
              \u2013 id: a
                action: x.y
            """),
        [("yaml-syntax", 3, 3, "'\u2013' (a dash or bullet from a word processor) looks like '-'")],
    ),
    (
        "typographic-quotes-flow",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: \u201c{{ input.x }}\u201d}
            """),
        [("yaml-syntax", 5, 15, "'\u201c' (a typographic quote) looks like '\"' but is not YAML")],
    ),
    (
        "typographic-quotes-block",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: \u201c{{ input.x }}\u201d
            """),
        [("template-lookalike", 6, 10, 'use straight quotes " "')],
    ),
    (
        "json-comment",
        T("""
            {"name": "t", // c
             "steps": [{"id": "a", "action": "x.y"}]}
            """),
        [("yaml-syntax", 1, 15, "'//' does not start a comment in YAML (or JSON): YAML")],
    ),
    (
        "json-bad",
        T("""
            {"name": "t", "steps": [}
            """),
        [("yaml-syntax", 1, 25, "unexpected '}': a value is missing before it, or it closes")],
    ),
    (
        "mixed-brackets",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {a: [1}
            """),
        [("yaml-syntax", 5, 17, "the '[' at column 15 is closed with '}': close it with ']'")],
    ),
    (
        "no-final-newline",
        ("name: t\nsteps:\n  - id: a\n    actoin: x.y"),
        [("unknown-key", 4, 5, "did you mean 'action'?")],
    ),
    (
        "only-whitespace",
        ("   \n\n  \n"),
        [("schema", 1, 1, "a workflow is a mapping with at least 'name' and 'steps'")],
    ),
    (
        "only-document-marker",
        T("""
            ---
            """),
        [("schema", 2, 1, "a workflow is a mapping with at least 'name' and 'steps'")],
    ),
    (
        "bad-escape",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "C:\\path"}
            """),
        [("yaml-syntax", 5, 18, "write '\\\\' for one backslash")],
    ),
    (
        "dup-key-in-flow",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {a: 1, a: 2}
            """),
        [("yaml-duplicate-key", 5, 18, "duplicate key 'a' (first defined at line 5, column 12)")],
    ),
    (
        "on-under-step",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                on: [timeout]
            """),
        [("unknown-key", 5, 5, "it belongs inside 'retry:' (indent it under retry)")],
    ),
    (
        "deep-nested-typo",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: [1]
                  steps:
                    - id: b
                      parallel:
                        branches:
                          - steps:
                              - id: c
                                action: x.y
                                retyr: 3
            """),
        [("unknown-key", 13, 21, "did you mean 'retry'?")],
    ),
    (
        "not-a-workflow",
        T("""
            version: '3'
            services:
              web:
                image: nginx
            volumes: {}
            networks: {}
            """),
        [("schema", 2, 1, "a workflow has at least 'name' and 'steps'")],
    ),
    (
        "github-actions-file",
        T("""
            on: push
            jobs:
              build:
                runs-on: ubuntu-latest
                steps:
                  - uses: actions/checkout@v4
            """),
        [("schema", 1, 1, "a workflow has at least 'name' and 'steps'")],
    ),
    (
        "x-extension-key",
        T("""
            name: t
            x-common: &c
              retry: {max_attempts: 2}
            steps:
              - id: a
                action: x.y
            """),
        [("unknown-key", 2, 1, "to reuse a value, put its anchor (&name) where it is first")],
    ),
    (
        "catch-fail-name-typo",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{errors: [NoTabel], goto: b}]
              - id: b
                fail: {error: NoTable}
            """),
        [("unknown-error", 5, 23, "did you mean 'NoTable'?")],
    ),
    (
        "retry-on-typo",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempts: 3, on: [http.5xx, timout]}
            """),
        [("unknown-error", 5, 45, "did you mean 'timeout'?")],
    ),
    (
        "input-ref-remote",
        T("""
            name: t
            input:
              type: object
              properties:
                x: {$ref: 'https://example.com/s.json'}
            steps:
              - id: a
                action: x.y
            """),
        [("input-schema", 5, 15, "the start payload is validated offline, so only local")],
    ),
    (
        "now-in-template",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {at: "{{ now() }}"}
            """),
        [],  # now() is a built-in since issue 12 (the execution's clock, virtual under fast-forward)
    ),
    (
        "unknown-kind-no-suggestion",
        T("""
            name: t
            steps:
              - id: a
                frobnicate: x.y
            """),
        [("unknown-key", 4, 5, "use one of http, action, wait, switch, parallel, foreach,")],
    ),
    (
        "key-typo-and-template-typo-both-reported",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                outptu: "{{ reslt.x }}"
            """),
        [("unknown-key", 5, 5, "did you mean 'output'?"), ("unknown-name", 5, 17, "did you mean 'result'?")],
    ),
    (
        "two-unknown-names",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ inptu.a }} and {{ inptu.b }} {{ foo }}"}
            """),
        [
            ("unknown-name", 5, 19, "did you mean 'input'?"),
            ("unknown-name", 5, 37, "did you mean 'input'?"),
            ("unknown-name", 5, 51, "here a template can read env, execution, input, steps, vars"),
        ],
    ),
    (
        "same-filter-twice",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.a | lenght }} {{ input.b | lenght }}"}
            """),
        [
            ("unknown-filter", 5, 29, "did you mean 'length'?"),
            ("unknown-filter", 5, 52, "did you mean 'length'?"),
        ],
    ),
    (
        "tpl-key-set",
        T("""
            name: t
            steps:
              - id: a
                set: {"{{ input.k }}": 1}
            """),
        [("schema", 4, 11, "use letters, digits and '_', not starting with a digit")],
    ),
    (
        "timeout-template",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                timeout: "{{ input.t }}"
            """),
        [("schema", 5, 14, "a duration cannot be a template: it must be known before")],
    ),
    (
        "offload-template",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", offload: "{{ input.o }}"}
            """),
        [("schema", 4, 42, "this value cannot be a template: it must be known before")],
    ),
    (
        "name-template",
        T("""
            name: "{{ input.name }}"
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 1, 7, "a workflow name cannot be a template: it must be known")],
    ),
    (
        "next-template",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                next: "{{ input.n }}"
              - id: b
                action: x.y
            """),
        [("schema", 5, 11, "a step id cannot be a template: it must be known before the")],
    ),
    (
        "goto-template",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  - if: "{{ input.x }}"
                    goto: "{{ input.target }}"
              - id: b
                action: x.y
            """),
        [("schema", 6, 15, "a step id cannot be a template: it must be known before the")],
    ),
    (
        "deep-comp-position",
        T("""
            name: t
            steps:
              - id: p
                parallel:
                  branches:
                    - steps:
                        - id: f
                          foreach:
                            items: [1, 2]
                            steps:
                              - id: c
                                action: x.y
                                compensate:
                                  action: x.undo
                                  with: {v: "{{ item.id }} {{ steps.c.outptu }}"}
            """),
        [("reference-attribute", 15, 59, "steps.c has only .output, not .outptu (did you mean")],
    ),
    (
        "foreach-steps-ref-outside",
        T("""
            name: t
            steps:
              - id: f
                foreach:
                  items: [1, 2]
                  steps:
                    - id: c
                      action: x.y
              - id: d
                action: x.y
                with: {v: "{{ steps.c.output }}"}
            """),
        [("reference-out-of-scope", 11, 19, "outside the body, use steps.f.output (the list of per-item")],
    ),
    (
        "env-in-key-position",
        T("""
            name: t
            env: [API]
            steps:
              - id: a
                http:
                  url: "{{ env.API }}"
                  headers: {Authorization: "Bearer {{ env.TOKEN }}"}
            """),
        [("undeclared-env", 7, 47, "declared: API")],
    ),
    (
        "set-then-read-typo",
        T("""
            name: t
            steps:
              - id: a
                set: {counter: 0}
              - id: b
                set: {counter: "{{ vars.countr + 1 }}"}
            """),
        [("undefined-var", 6, 29, "did you mean 'counter'?")],
    ),
    (
        "error-outside-catch",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ error.message }}"}
            """),
        [("out-of-scope", 5, 19, "`error` exists only in the step a `catch` jumps to, and no")],
    ),
    (
        "result-in-if",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                if: "{{ result.ok }}"
            """),
        [("out-of-scope", 5, 13, "`result` exists only in a step's `output` template (it is")],
    ),
    (
        "succeed-output-later-ref",
        T("""
            name: t
            steps:
              - id: a
                succeed: {output: "{{ steps.b.output }}"}
              - id: b
                action: x.y
            """),
        [
            ("reference-never-before", 4, 27, "no path runs it first"),
            ("unreachable-step", 5, 9, "no path from the start of the top-level steps reaches it"),
        ],
    ),
    (
        "switch-goto-self",
        T("""
            name: t
            steps:
              - id: a
                switch:
                  - if: "{{ input.x }}"
                    goto: a
            """),
        [],
    ),
    (
        "parallel-step-outputs",
        T("""
            name: t
            steps:
              - id: p
                parallel:
                  branches:
                    - steps:
                        - {id: a, action: x.y}
                output: "{{ result[0] }} {{ steps.a.output }}"
            """),
        [],
    ),
    (
        "input-type-misuse",
        T("""
            name: t
            input:
              type: object
              required: [n, s]
              properties:
                n: {type: integer}
                s: {type: string}
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.n | length }}", w: "{{ input.s.foo }}"}
              - id: b
                foreach:
                  items: "{{ input.n }}"
                  steps:
                    - {id: c, action: x.y}
            """),
        [
            ("input-type", 11, 29, "it needs a string, a list or a mapping"),
            ("input-type", 11, 56, "input.s is a string (input schema), so it has no attribute"),
            ("input-type", 14, 18, "foreach items must be a list, but input.n is an integer"),
        ],
    ),
    (
        "catch-any-and-others",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch:
                  - errors: [any]
                    goto: b
                  - errors: [timeout]
                    goto: b
              - id: b
                action: x.y
            """),
        [("unreachable-catch", 8, 9, "put the more specific entry first")],
    ),
    (
        "retry-on-empty-list",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempts: 3, on: []}
            """),
        [],
    ),
    (
        "two-errors-one-line",
        T("""
            name: t
            steps:
              - {id: A, actoin: x.y}
            """),
        [("schema", 3, 10, "did you mean 'a'?"), ("unknown-key", 3, 13, "did you mean 'action'?")],
    ),
    (
        "quote-unclosed-swallows-lines",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: "max_attempts: 6, interval: 1s}
              - id: b
                action: x.y
                with:
                  v: "{{ input.x }}"
            """),
        [("yaml-syntax", 5, 12, 'this " is not closed on its line, so the string runs on to')],
    ),
    (
        "text-after-closing-bracket",
        T("""
            name: t
            input:
              type: object
              properties:
                x: {type: string}o
            steps:
              - id: a
                action: x.y
            """),
        [("yaml-syntax", 5, 22, "quote the whole value if the brackets are part of the text")],
    ),
    (
        "dashed-input-key",
        T("""
            name: t
            input:
              type: object
              additionalProperties: false
              properties:
                order-id: {type: string}
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.order-id }}"}
            """),
        [
            ("input-reference", 10, 25, "write input['order-id'])"),
            ("unknown-name", 10, 31, "write input['order-id']): here a template can read env,"),
        ],
    ),
    (
        "dashed-output-key",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
              - id: b
                action: x.y
                with: {v: "{{ steps.a.output.x-request-id }}"}
            """),
        [("unknown-name", 7, 36, "write steps.a.output['x-request-id']): here a template can")],
    ),
    (
        "half-open-template",
        T("""
            name: t
            env: [API]
            steps:
              - id: a
                http: {url: "https://x.io/{ env.API }}/v"}
            """),
        [("template-lookalike", 5, 31, "write '{{ env.API }}'")],
    ),
    (
        "template-in-description-is-prose",
        T("""
            name: t
            description: "uses {{ not checked }"
            steps:
              - id: a
                action: x.y
            """),
        [],
    ),
    (
        "date-in-with",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {day: 2030-01-01}
            """),
        [("schema", 5, 17, "the unquoted 2030-01-01 is a YAML timestamp, not text:")],
    ),
    (
        "binary-in-with",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {b: !!binary aGVsbG8=}
            """),
        [("schema", 5, 15, "binary values (!!binary) are not supported: give the text")],
    ),
    (
        "date-in-input-default",
        T("""
            name: t
            input: {type: object, default: 2020-01-01}
            steps:
              - id: a
                action: x.y
            """),
        [("schema", 2, 32, "the unquoted 2020-01-01 is a YAML timestamp, not text:")],
    ),
    (
        "template-under-unknown-key-not-checked",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                frobnicate: "{{ reslt.x }}"
            """),
        [("unknown-key", 5, 5, "unknown key 'frobnicate' in step 'a'")],
    ),
    (
        "typo-in-set-key-no-cascade",
        T("""
            name: t
            steps:
              - id: a
                seyt: {count: 1}
              - id: b
                action: x.y
                with: {v: "{{ vars.count }}"}
            """),
        [("unknown-key", 4, 5, "did you mean 'set'?")],
    ),
    (
        "typo-in-catch-key-no-cascade",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                cacth: [{errors: [any], goto: b}]
              - id: b
                action: x.y
                with: {v: "{{ error.message }}"}
            """),
        [("unknown-key", 5, 5, "did you mean 'catch'?")],
    ),
    (
        "typo-in-env-key-no-cascade",
        T("""
            name: t
            evn: [API]
            steps:
              - id: a
                http: {url: "{{ env.API }}/x"}
            """),
        [("unknown-key", 2, 1, "did you mean 'env'?")],
    ),
    (
        "typo-in-id-key-no-cascade",
        T("""
            name: t
            steps:
              - ib: fetch
                action: x.y
              - id: b
                action: x.y
                with: {v: "{{ steps.fetch.output }}"}
            """),
        [("unknown-key", 3, 5, "did you mean 'id'?")],
    ),
    (
        "bad-id-no-cascade",
        T("""
            name: t
            steps:
              - id: Fetch
                action: x.y
              - id: b
                action: x.y
                with: {v: "{{ steps.fetch.output }}"}
                next: fetch
            """),
        [("schema", 3, 9, "did you mean 'fetch'?")],
    ),
    (
        "missing-id-foreach-body-scope",
        T("""
            name: t
            steps:
              - foreach:
                  items: [1, 2]
                  steps:
                    - id: b
                      action: x.y
                      with: {v: "{{ item }}"}
            """),
        [("missing-key", 3, 5, "every step needs a unique id such as 'book_table'")],
    ),
    (
        "env-missing-used-thrice-one-error",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "{{ env.API }}/a"}
              - id: b
                http: {url: "{{ env.API }}/b"}
              - id: c
                http: {url: "{{ env.API }}/c"}
            """),
        [("undeclared-env", 4, 25, "add API to the top-level `env:` list (also on lines 6, 8)")],
    ),
    (
        "renamed-step-referenced-twice",
        T("""
            name: t
            steps:
              - id: fetch_user
                action: x.y
              - id: b
                action: x.y
                with: {a: "{{ steps.fetch.output }}", b: "{{ steps.fetch.output.id }}"}
            """),
        [("reference-unknown-step", 7, 19, "there is no step 'fetch' (did you mean steps.fetch_user?)")],
    ),
    (
        "input-type-typo-no-cascade",
        T("""
            name: t
            input:
              type: objct
              properties:
                x: {type: string}
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.x }}", w: "{{ input.x | length }}"}
            """),
        [("input-schema", 3, 9, "did you mean 'object'?")],
    ),
    (
        "input-properties-typo-no-cascade",
        T("""
            name: t
            input:
              type: object
              additionalProperties: false
              prperties:
                x: {type: string}
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.x }}"}
            """),
        [("input-schema", 5, 3, "did you mean 'properties'?")],
    ),
    (
        "input-properties-lost-indentation",
        T("""
            name: t
            input:
              type: object
              additionalProperties: false
            properties:
              x: {type: string}
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.x }}"}
            """),
        [("unknown-key", 5, 1, "it belongs inside 'input:' (indent it under input)")],
    ),
    (
        "succeed-output-line-lost",
        T("""
            name: t
            steps:
              - id: a
                succeed:
                  status: ok
                  id: "{{ input.id }}"
            """),
        [("unknown-key", 5, 7, "write 'output:' and indent them under it)")],
    ),
    (
        "parallel-branches-line-lost",
        T("""
            name: t
            steps:
              - id: p
                parallel:
                  - steps:
                      - {id: a, action: x.y}
              - id: b
                action: x.y
                with: {v: "{{ steps.a.output }}"}
            """),
        [("schema", 5, 7, "write parallel: {branches: [{steps: [...]}, …]}: each")],
    ),
    (
        "short-key-typo",
        T("""
            name: t
            steps:
              - id: f
                foreach:
                  items: [1, 2]
                  ks: line
                  steps:
                    - {id: b, action: x.y, with: {v: "{{ line }}"}}
            """),
        [("unknown-key", 6, 7, "did you mean 'as'?")],
    ),
    (
        "two-steps-run-together",
        T("""
            name: t
            steps:
              - id: pick
                switch:
                  - {if: "{{ input.x }}", goto: done}
                action: x.book
              - id: done
                action: x.y
                with: {v: "{{ steps.book.output }}"}
            """),
        [("schema", 6, 5, "to run several things, use several steps")],
    ),
    (
        "duplicated-id-line",
        T("""
            name: t
            steps:
              - id: each
              - id: each
                foreach:
                  items: [1]
                  as: line
                  steps:
                    - {id: b, action: x.y, with: {v: "{{ line }}"}}
            """),
        [
            ("missing-key", 3, 5, "add exactly one of http, action, wait, switch, parallel,"),
            ("duplicate-id", 4, 9, "duplicate step id 'each': already used by the step at line 3"),
        ],
    ),
    (
        "catch-goto-lost-no-error-cascade",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch:
                  - errors: [any]
              - id: b
                action: x.y
                with: {v: "{{ error.message }}"}
            """),
        [("missing-key", 6, 9, "there the caught error is readable as 'error' ({name,")],
    ),
    (
        "compensation-http-line-lost",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  method: DELETE
                  url: "https://x.io/a"
                  expect: [204]
            """),
        [("unknown-key", 6, 7, "write 'http:' and indent them under it)")],
    ),
    (
        "compensation-http-body-under-indented",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                compensate:
                  http:
                  method: DELETE
                  url: "https://x.io/a"
            """),
        [("unknown-key", 7, 7, "indent them deeper than 'http'")],
    ),
    (
        "env-case",
        T("""
            name: t
            env: [API_URL]
            steps:
              - id: a
                http: {url: "{{ env.api_url }}/x"}
            """),
        [("undeclared-env", 5, 25, "did you mean 'API_URL'?")],
    ),
    (
        "if-quoted-true",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                if: "true"
            """),
        [("schema", 5, 9, "write true without quotes")],
    ),
    (
        "cyrillic-id-ref",
        T("""
            name: t
            steps:
              - id: b\u043e\u043ek
                action: x.y
            """),
        [("schema", 3, 9, "look-alike letter (U+043E CYRILLIC SMALL LETTER O)")],
    ),
    (
        "cyrillic-key",
        T("""
            name: t
            steps:
              - id: a
                \u0430ction: x.y
            """),
        [("unknown-key", 4, 5, "look-alike letter (U+0430 CYRILLIC SMALL LETTER A)")],
    ),
    (
        "ref-case",
        T("""
            name: t
            steps:
              - id: fetch
                action: x.y
              - id: b
                action: x.y
                with: {v: "{{ steps.Fetch.output }}"}
            """),
        [("reference-unknown-step", 7, 19, "there is no step 'Fetch' (did you mean steps.fetch?)")],
    ),
    (
        "vars-case",
        T("""
            name: t
            steps:
              - id: a
                set: {Count: 1}
              - id: b
                action: x.y
                with: {v: "{{ vars.count }}"}
            """),
        [("undefined-var", 7, 24, "did you mean 'Count'?")],
    ),
    (
        "input-case",
        T("""
            name: t
            input:
              type: object
              additionalProperties: false
              properties:
                userId: {type: string}
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.userid }}"}
            """),
        [("input-reference", 10, 25, "did you mean 'userId'?")],
    ),
    (
        "filter-case",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {v: "{{ input.x | Upper }}"}
            """),
        [("unknown-filter", 5, 29, "did you mean 'upper'?")],
    ),
    (
        "kind-case",
        T("""
            name: t
            steps:
              - id: a
                Action: x.y
            """),
        [("unknown-key", 4, 5, "did you mean 'action'?")],
    ),
    (
        "method-mixed",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io", method: Post}
            """),
        [("schema", 4, 41, "did you mean 'POST'?")],
    ),
    (
        "url-with-space",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "https://x.io/a b"}
            """),
        [],
    ),
    (
        "url-no-scheme",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "x.io/a"}
            """),
        [("schema", 4, 17, "did you mean 'https://x.io/a'?")],
    ),
    (
        "url-localhost",
        T("""
            name: t
            steps:
              - id: a
                http: {url: "localhost:8080/a"}
            """),
        [("schema", 4, 17, "did you mean 'http://localhost:8080/a'?")],
    ),
    (
        "first-entry-not-indented-under-with",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                account_id: "{{ input.a }}"
                  reason: "{{ input.r }}"
            """),
        [("yaml-syntax", 6, 5, "this line is not indented under 'with' (line 5), so 'with'")],
    ),
    (
        "first-property-not-indented",
        T("""
            name: t
            input:
              type: object
              properties:
              account_id: {type: string}
                email: {type: string}
            steps:
              - id: a
                action: x.y
            """),
        [("yaml-syntax", 5, 3, "this line is not indented under 'properties' (line 4), so")],
    ),
]

# files that are unusual but right: no diagnostic at all
VALID: list[tuple[str, str]] = [
    (
        "v-block-templates",
        T("""
            name: t
            input:
              type: object
              required: [x, items]
              properties:
                x: {type: string}
                items: {type: array}
            steps:
              - id: a
                action: x.y
                with:
                  literal: |
                    Hello {{ input.x }}
                    {% if input.x == "a" %}yes{% else %}no{% endif %}
                  folded: >
                    Hello {{ input.x }}
                    and {{ input.x | upper }}
                  kept: |+
                    {{ input.x }}

                  strip: |-
                    {{ input.x }}
            """),
    ),
    (
        "v-flow-and-anchors",
        T("""
            name: t
            defaults:
              retry: &r {max_attempts: 3, interval: 1s}
            steps:
              - &base
                id: a
                action: x.y
                retry: *r
              - id: b
                action: x.z
                retry:
                  <<: *r
                  max_attempts: 5
            """),
    ),
    (
        "v-merge-step2",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: &rr {max_attempts: 2}
              - <<: {retry: *rr}
                id: b
                action: x.z
            """),
    ),
    (
        "v-comments",
        T("""
            # top comment
            name: t   # trailing
            # between
            steps:   # steps
              # before item
              - id: a   # id
                # inside
                action: x.y  # act
                with:
                  # c
                  v: "{{ input }}"  # c2
            # end
            """),
    ),
    (
        "v-quoted-keys",
        T("""
            "name": t
            'steps':
              - "id": a
                'action': x.y
                "with": {"v": 1}
            """),
    ),
    (
        "v-multiline-plain",
        T("""
            name: t
            description: this is a long
              description spanning
              lines
            steps:
              - id: a
                action: x.y
                with:
                  v: hello {{ input }}
                    world
            """),
    ),
    (
        "v-jinja-set",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "{% set n = input | length %}{{ n * 2 }}"
            """),
    ),
    (
        "v-for-loop",
        (
            "name: t\n"
            "steps:\n"
            "  - id: a\n"
            "    action: x.y\n"
            "    with:\n"
            '      v: "{% for i in input %}{{ loop.index }}:{{ i }}{% if not loop.last %},{% '
            'endif %}{% endfor %}"\n'
        ),
    ),
    (
        "v-filters-args",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "{{ input.names | join(', ') | replace('a', 'b') | truncate(10) }}"
                  w: "{{ input.items | selectattr('ok') | map(attribute='id') | list }}"
                  d: "{{ input.x | default('none', true) }}"
                  t: "{{ (input.when | datetime) - duration('2h') }}"
                  r: "{{ range(3) | list }}"
                  j: "{{ input | tojson(indent=2) }}"
                  s: "{{ '5m' | seconds }}"
            """),
    ),
    (
        "v-jinja-comment-raw",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "{# comment #}{{ input.x }}"
                  w: "{% raw %}{{ not a template }}{% endraw %}"
            """),
    ),
    (
        "v-whitespace-control",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "{%- if input.x -%} a {%- endif -%}"
                  w: "{{- input.x -}}"
            """),
    ),
    (
        "v-foreach-loop-nested",
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: "{{ input.orders }}"
                  as: order
                  steps:
                    - id: b
                      foreach:
                        items: "{{ order.lines }}"
                        as: line
                        steps:
                          - id: c
                            action: x.y
                            with: {o: "{{ order.id }}", l: "{{ line.sku }}", i: "{{ index }}"}
            """),
    ),
    (
        "v-json-style",
        T("""
            {
              "name": "t",
              "steps": [
                {"id": "a", "action": "x.y", "with": {"v": "{{ input.x }}"}}
              ]
            }
            """),
    ),
    (
        "v-unicode-values",
        T("""
            name: t
            description: "Ünïcödé 日本語 😀"
            steps:
              - id: a
                action: x.y
                with: {v: "😀 {{ input.x }} 日本語", w: ünïcode}
            """),
    ),
    (
        "v-doc-start",
        T("""
            ---
            name: t
            steps:
              - id: a
                action: x.y
            ...
            """),
    ),
    (
        "v-catch-error-name",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                catch: [{errors: [action.ValueError, http.404, http.4xx, Custom.err], goto: b}]
              - id: b
                action: x.log
                with: {e: "{{ error.name }}"}
              - id: c
                fail: {error: Custom.err}
            """),
    ),
    (
        "v-expression-dict",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  v: "{{ {'a': 1, 'b': [1, 2]} }}"
                  w: "{{ input.x if input.x else 'n' }}"
                  z: "{{ input['x'] }}"
                  q: "{{ input.get('x', 1) }}"
            """),
    ),
    (
        "v-on-key-retry",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry:
                  max_attempts: 3
                  on: [timeout]
            """),
    ),
    (
        "v-yaml-tags",
        T("""
            name: t
            steps:
              - id: a
                action: !!str x.y
                with: {v: !!str 123}
            """),
    ),
    (
        "v-empty-lines-crlf",
        T("""
            name: t

            steps:

              - id: a

                action: x.y
            """),
    ),
    (
        "v-text-that-is-not-a-template",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with:
                  text: "Total: ${{ input.amount }}"
                  fmt: "Hello {name}, item {index}"
                  json_text: '{"a": 1}'
                  shell: "echo $HOME"
                  braces: "{ not: a template }"
            """),
    ),
    (
        "v-merge-override",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: &r {max_attempts: 3, interval: 1s}
              - id: b
                action: x.z
                retry:
                  <<: *r
                  max_attempts: 5
            """),
    ),
    (
        "v-merge-list",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: &w {a: 1, b: 2}
              - id: b
                action: x.y
                with: &v {b: 3, c: 4}
              - id: c
                action: x.y
                with:
                  <<: [*w, *v]
                  d: 5
            """),
    ),
    (
        "v-typographic-quotes-inside-text",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {text: "She said \u201chello\u201d to {{ input.name }}"}
            """),
    ),
    (
        "v-sexagesimal-in-free-value",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {at: 12:30, flag: yes}
            """),
    ),
    (
        "v-child-workflow-error-name",
        T("""
            name: t
            steps:
              - id: a
                workflow: {name: child}
                catch: [{errors: [ChildFailed], goto: b}]
              - id: b
                action: x.y
            """),
    ),
    (
        "v-wait-forms",
        T("""
            name: t
            steps:
              - id: a
                wait: {for: 1h30m}
              - id: b
                wait: {until: "2030-01-31T19:00:00+01:00"}
              - id: c
                wait: {event: order.paid, key: "{{ input.order_id }}", timeout: 7d}
                timeout: 1d
            """),
    ),
    (
        "v-unicode-keys-in-free-mappings",
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                with: {"名前": "{{ input.x }}", "emoji😀": 1}
            """),
    ),
    (
        "v-long-line",
        'name: t\nsteps:\n  - id: a\n    action: x.y\n    with: {v: "' + "x" * 5000 + ' {{ input.x }}"}\n',
    ),
    (
        "v-crlf-everything",
        (
            "name: t\r\n"
            "input:\r\n"
            "  type: object\r\n"
            "  required: [x]\r\n"
            "  properties:\r\n"
            "    x: {type: string}\r\n"
            "steps:\r\n"
            "  - id: a\r\n"
            "    action: x.y\r\n"
            "    with:\r\n"
            "      v: |\r\n"
            "        {{ input.x }}\r\n"
        ),
    ),
    (
        "v-bom",
        T("""
            \ufeffname: t
            steps:
              - id: a
                action: x.y
            """),
    ),
    (
        "v-no-final-newline",
        ("name: t\nsteps:\n  - id: a\n    action: x.y"),
    ),
    (
        "v-comment-with-braces",
        T("""
            name: t  # {{ not a template }}
            steps:
              # url: {{ env.API }}
              - id: a
                action: x.y
            """),
    ),
    (
        "v-action-template",  # issue 12: a template here is rendered when the step runs
        T("""
            name: t
            steps:
              - id: a
                action: "{{ input.fn }}"
            """),
    ),
    (
        "v-wait-for-template",  # issue 12: a template here is rendered when the step runs
        T("""
            name: t
            steps:
              - id: a
                wait: {for: "{{ input.delay }}"}
            """),
    ),
    (
        "v-concurrency-template",  # issue 12: a template here is rendered when the step runs
        T("""
            name: t
            steps:
              - id: a
                foreach:
                  items: "{{ input.xs }}"
                  concurrency: "{{ input.n }}"
                  steps:
                    - {id: b, action: x.y}
            """),
    ),
    (
        "v-max-attempts-template",  # issue 12: a template here is rendered when the step runs
        T("""
            name: t
            steps:
              - id: a
                action: x.y
                retry: {max_attempts: "{{ input.n }}"}
            """),
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_broken_workflow(name: str, text: str, expected: list[tuple[str, int, int, str]]) -> None:
    got = found(text)
    check_invariants(text, got)
    assert [(r, line, col) for r, line, col, _ in got] == [(r, line, col) for r, line, col, _ in expected]
    for (_, _, _, message), (_, _, _, fragment) in zip(got, expected, strict=True):
        assert fragment in message, (message, fragment)


@pytest.mark.parametrize(("name", "text"), VALID, ids=[v[0] for v in VALID])
def test_unusual_but_valid(name: str, text: str) -> None:
    assert found(text) == []


def test_there_are_many_cases() -> None:
    assert len(CASES) >= 200
    assert len(VALID) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- paths that are not files


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    result = validate_path(fifo)  # would block forever if it were opened for a blocking read
    assert [(d.rule, d.message) for d in result.diagnostics] == [
        ("io", "cannot read file: it is a named pipe (FIFO); skipped")
    ]


def test_a_device_is_refused(tmp_path: Path) -> None:
    result = validate_path("/dev/null")
    assert [d.rule for d in result.diagnostics] == ["io"]
    assert "not a regular file" in result.diagnostics[0].message


def test_a_folder_named_like_a_file_and_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert [d.rule for d in validate_path(tmp_path / "dir.yaml").diagnostics] == ["io"]
    (tmp_path / "broken.yaml").symlink_to(tmp_path / "nowhere")
    assert [d.rule for d in validate_path(tmp_path / "broken.yaml").diagnostics] == ["io"]


def test_a_symlink_loop_in_a_folder_does_not_hang(tmp_path: Path) -> None:
    from dsl.validate import expand

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to(tmp_path / "sub")
    (tmp_path / "sub" / "ok.yaml").write_text("name: ok\nsteps:\n  - {id: a, action: x.y}\n")
    (tmp_path / "self.yaml").symlink_to(tmp_path / "self.yaml")
    files = expand([tmp_path])
    assert tmp_path / "sub" / "ok.yaml" in files
    for file in files:
        assert all(not d.is_error or d.rule == "io" for d in validate_path(file).diagnostics)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file whatever its mode")
def test_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("name: t\n")
    path.chmod(0)
    try:
        assert [d.rule for d in validate_path(path).diagnostics] == ["io"]
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_bytes_on_disk_bom_crlf_and_binary(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: t\r\nsteps:\r\n  - id: a\r\n    actoin: x.y\r\n")
    [d] = validate_path(path).diagnostics
    assert (d.rule, d.position.line, d.position.column) == ("unknown-key", 4, 5)
    path.write_bytes(b"name: t\nsteps:\n  - id: a\n    action: x.\xff\n")
    [d] = validate_path(path).diagnostics
    assert (d.rule, d.position.line, d.position.column) == ("yaml-syntax", 4, 15)
    assert "not UTF-8" in d.message


def test_random_bytes_never_raise(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "blob.yaml"
    for size in (1, 10, 100, 1000, 5000):
        for _ in range(5):
            path.write_bytes(bytes(rng.randrange(256) for _ in range(size)))
            result = validate_path(path)
            assert all(d.rule != "internal-error" for d in result.diagnostics)


# ---------------------------------------------------------------------------------- what people read


def test_the_caret_sits_under_the_culprit_after_wide_characters() -> None:
    text = 'name: t\nsteps:\n  - id: a\n    action: x.y\n    with: {v: "日本語 😀 {{ inptu.x }}"}\n'
    result = validate_text(text, "t.yaml")
    [d] = result.diagnostics
    assert (d.position.line, d.position.column) == (5, 25)  # characters, not display cells
    shown = render_text(result.diagnostics, lambda _f, n: result.line(n)).splitlines()
    source, caret = shown[1], shown[2]
    # 日本語 and 😀 take two cells each: the caret is four cells further right than the column
    assert caret.index("^") == 4 + 24 + 4
    assert source[4:].startswith('    with: {v: "日本語')


def test_a_long_line_is_shown_as_a_window_around_the_column() -> None:
    line = "x" * 3000 + "!" + "y" * 3000
    diagnostic = Diagnostic("schema", "error", "m", Position("f", 1, 3001))
    out = render_text([diagnostic], lambda _f, _n: line).splitlines()
    assert len(out[1]) < 120
    assert out[1][out[2].index("^")] == "!"


def test_control_characters_do_not_shift_the_caret() -> None:
    diagnostic = Diagnostic("schema", "error", "m", Position("f", 1, 4))
    out = render_text([diagnostic], lambda _f, _n: "\t\x07ab").splitlines()
    assert out[1][out[2].index("^")] == "b"


# ------------------------------------------------------------------------------------ mangled input


_PIECES = [
    "name: t\n",
    "steps:\n",
    "  - id: a\n",
    "    action: x.y\n",
    "    with: {v: 1\n",
    "      v: |\n",
    "        {{ input.x }}\n",
    "\t",
    "  ",
    "- ",
    ": ",
    '"',
    "'",
    "{{",
    "}}",
    "{%",
    "%}",
    "[",
    "]",
    "{",
    "}",
    "#",
    "&a ",
    "*a",
    "<<: ",
    "\u00a0",
    "\u2013 ",
    "\uff1a",
    "\u201c",
    "\r\n",
    "\r",
    "\x85",
    "---\n",
    "? ",
    "!!str ",
    "%YAML 1.1\n",
    "@",
    "`",
    "\\",
    "\ufeff",
    "😀",
    "日本",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=25))
def test_mangled_yaml_gets_clean_diagnostics(pieces: list[str]) -> None:
    text = "".join(pieces)
    got = found(text)
    check_invariants(text.replace("\r\n", "\n").replace("\r", "\n").replace("\x85", "\n"), got)


# ----------------------------------------------------------------------------------------- big files


def _nested_parallel(depth: int) -> str:
    step = "{id: leaf, action: x.y}"
    for level in range(depth):
        step = f"{{id: p{level}, parallel: {{branches: [{{steps: [{step}]}}]}}}}"
    return f"name: t\nsteps:\n  - {step}\n"


def test_deep_nesting_is_one_clear_error_not_a_crash() -> None:
    assert found(_nested_parallel(15)) == []
    [(rule, line, _, message)] = found(_nested_parallel(60))
    assert (rule, line) == ("yaml-syntax", 3)
    assert "nested more than 100 levels deep" in message
    deep_data = "name: t\nsteps:\n  - id: a\n    action: x.y\n    with: {v: " + "[" * 400 + "]" * 400 + "}\n"
    [(rule, _, _, message)] = found(deep_data)
    assert rule == "yaml-syntax" and "nested" in message


def test_the_same_mistake_in_many_steps_is_reported_for_each_step() -> None:
    steps = "".join(f"  - id: s{i}\n    actoin: x.y\n" for i in range(500))
    got = found("name: t\nsteps:\n" + steps)
    assert [(r, line) for r, line, _, _ in got] == [("unknown-key", 4 + 2 * i) for i in range(500)]
