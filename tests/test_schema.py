"""The workflow JSON Schema, the example workflows, and how schema problems are reported."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from dsl import schema as dsl_schema
from dsl.durations import PATTERN as DURATION_PATTERN
from dsl.schema import load_schema, validate_document
from dsl.source import loads
from dsl.testfile import examples
from schemas import WORKFLOW_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = examples(ROOT / "workflows")  # the workflows, not their *.test.yaml files
KINDS = ("http", "action", "wait", "switch", "parallel", "foreach", "set", "workflow", "succeed", "fail")
COMMON = ("id", "if", "output", "next", "retry", "timeout", "catch", "compensate")
TOP_LEVEL = (
    "name",
    "version",
    "description",
    "input",
    "env",
    "defaults",
    "timeout",
    "output",
    "on_failure",
    "steps",
)


def check(text: str) -> list[tuple[str, str, int, int]]:
    doc = loads(text, "w.yaml")
    return [(d.rule, d.message, d.position.line, d.position.column) for d in validate_document(doc)]


# ------------------------------------------------------------------------------------ the schema


def test_schema_is_valid_2020_12() -> None:
    schema = json.loads(WORKFLOW_SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"]


def test_schema_loads_from_the_package() -> None:
    assert load_schema() == json.loads(WORKFLOW_SCHEMA.read_text())


def test_duration_pattern_is_the_one_in_durations() -> None:
    assert load_schema()["$defs"]["duration"]["pattern"] == DURATION_PATTERN


def _walk_schema(node: Any, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            if key in ("examples", "default", "enum", "required"):
                continue
            out.extend(_walk_schema(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_walk_schema(value, f"{path}/{i}"))
    return out


def test_every_property_has_a_description() -> None:
    missing = []
    for path, node in _walk_schema(load_schema()):
        for name, prop in (
            node.get("properties", {}).items() if isinstance(node.get("properties"), dict) else ()
        ):
            if not (isinstance(prop, dict) and prop.get("description")):
                missing.append(f"{path}/properties/{name}")
    assert not missing


def test_closed_objects_everywhere_except_free_form_values() -> None:
    open_objects = []
    for path, node in _walk_schema(load_schema()):
        if "properties" in node and node.get("additionalProperties") is not False:
            open_objects.append(path)
    assert open_objects == []


def test_fast_path_compiles_for_our_schema() -> None:
    assert dsl_schema.fast_check() is not None


def test_unknown_keywords_disable_the_fast_path_instead_of_checking_less() -> None:
    with pytest.raises(dsl_schema._Unsupported):
        dsl_schema._compile({"if": {"required": ["a"]}, "then": False})
    with pytest.raises(dsl_schema._Unsupported):
        dsl_schema._compile({"$ref": "https://example.com/other.json"})


# ---------------------------------------------------------------------------------- the examples


def test_there_are_the_promised_examples() -> None:
    names = {p.stem for p in WORKFLOWS}
    assert {
        "dinner-reservation",
        "order-fulfilment",
        "approval",
        "reminder",
        "onboarding",
        "poll-export",
    } <= names
    assert len(names) >= 6


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/workflow.schema.json\n")
    doc = loads(text, str(path))
    assert validate_document(doc) == []
    assert list(dsl_schema.validator().iter_errors(doc.value)) == []
    assert doc.value["name"] == path.stem  # executions and child workflows find it by name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_example_has_a_valid_start_payload(path: Path) -> None:
    payload_file = path.with_name(path.stem + ".input.json")
    assert payload_file.exists(), f"{payload_file.name} is missing"
    payload = json.loads(payload_file.read_text())
    input_schema = loads(path.read_text()).value.get("input", {"type": "object"})
    Draft202012Validator.check_schema(input_schema)
    errors = list(Draft202012Validator(input_schema).iter_errors(payload))
    assert errors == []


def _steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for step in steps:
        out.append(step)
        for branch in (step.get("parallel") or {}).get("branches", []):
            out.extend(_steps(branch["steps"]))
        if "foreach" in step:
            out.extend(_steps(step["foreach"]["steps"]))
    return out


def test_examples_together_use_the_whole_language() -> None:
    docs = [loads(p.read_text()).value for p in WORKFLOWS]
    steps = [s for d in docs for s in _steps(d["steps"])]
    used_kinds = {k for s in steps for k in KINDS if k in s}
    assert used_kinds == set(KINDS)
    assert {k for s in steps for k in COMMON if k in s} == set(COMMON)
    assert {k for d in docs for k in d} == set(TOP_LEVEL)
    assert {d["on_failure"] for d in docs if "on_failure" in d} == {"compensate", "stop"}
    retries = [s["retry"] for s in steps if "retry" in s] + [
        d["defaults"]["retry"] for d in docs if "retry" in d.get("defaults", {})
    ]
    assert {k for r in retries for k in r} == {
        "max_attempts",
        "interval",
        "backoff",
        "max_interval",
        "jitter",
        "on",
    }
    assert {r["jitter"] for r in retries if "jitter" in r} == {"full", "none"}
    https = [s["http"] for s in steps if "http" in s]
    assert {k for h in https for k in h} == {
        "method",
        "url",
        "headers",
        "query",
        "json",
        "body",
        "expect",
        "offload",
    }
    waits = [s["wait"] for s in steps if "wait" in s]
    assert {k for w in waits for k in w} == {"for", "until", "event", "key", "timeout"}
    compensations = [s["compensate"] for s in steps if "compensate" in s]
    assert {k for c in compensations for k in ("http", "action", "workflow") if k in c} == {
        "http",
        "action",
        "workflow",
    }
    assert any("retry" in c for c in compensations) and any("timeout" in c for c in compensations)
    assert any("default" in case for s in steps for case in s.get("switch", []))
    succeeds = [s["succeed"] for s in steps if "succeed" in s]
    assert any(x == {} for x in succeeds) and any("output" in x for x in succeeds)
    foreach = [s["foreach"] for s in steps if "foreach" in s]
    assert any("as" in f and "concurrency" in f for f in foreach)


# ------------------------------------------------------------------------------- broken files

# (name, yaml, rule, message fragment, line, column); each must give exactly that one diagnostic
BROKEN = [
    (
        "unknown key with suggestion",
        "name: t\nsteps:\n  - id: a\n    http:\n      methd: GET\n      url: http://x\n",
        "unknown-key",
        "unknown key 'methd' in the http request of step 'a'; did you mean 'method'?",
        5,
        7,
    ),
    (
        "unknown step key with suggestion",
        "name: t\nsteps:\n  - id: a\n    set: {x: 1}\n    retyr: {max_attempts: 2}\n",
        "unknown-key",
        "unknown key 'retyr' in step 'a'; did you mean 'retry'?",
        5,
        5,
    ),
    (
        "misspelt kind key says so once",
        "name: t\nsteps:\n  - id: a\n    actoin: demo.x\n",
        "unknown-key",
        "unknown key 'actoin' in step 'a'; did you mean 'action'?",
        4,
        5,
    ),
    (
        "misspelt required top-level key says so once",
        "name: t\nstep:\n  - id: a\n    set: {x: 1}\n",
        "unknown-key",
        "unknown key 'step' in the workflow; did you mean 'steps'?",
        2,
        1,
    ),
    (
        "missing id",
        "name: t\nsteps:\n  - id: a\n    set: {x: 1}\n  - set: {y: 2}\n",
        "missing-key",
        "step 2 has no 'id'",
        5,
        5,
    ),
    (
        "bad id pattern",
        "name: t\nsteps:\n  - id: Book-Table\n    set: {x: 1}\n",
        "schema",
        "'Book-Table' is not a valid step id",
        3,
        9,
    ),
    (
        "bad id suggests a fix",
        "name: t\nsteps:\n  - id: Book-Table\n    set: {x: 1}\n",
        "schema",
        "did you mean 'book_table'?",
        3,
        9,
    ),
    (
        "two kind keys",
        "name: t\nsteps:\n  - id: a\n    fail: {error: E}\n    set: {x: 1}\n",
        "schema",
        "step 'a' has 2 kinds ('fail', 'set'): use exactly one of http, action",
        5,
        5,
    ),
    (
        "no kind key",
        "name: t\nsteps:\n  - id: book\n    output: 1\n",
        "missing-key",
        "step 'book' has no kind: add exactly one of http, action, wait, switch",
        3,
        5,
    ),
    (
        "bad duration",
        "name: t\nsteps:\n  - id: a\n    set: {x: 1}\n    timeout: 5 minutes\n",
        "schema",
        "timeout: '5 minutes' is not a duration (use a number and a unit",
        5,
        14,
    ),
    (
        "duration given as a number",
        "name: t\nsteps:\n  - id: a\n    wait: {for: 30}\n",
        "schema",
        "for: expected a duration such as '30s' or '1h30m', got integer 30",
        4,
        17,
    ),
    (
        "wrong type",
        "name: t\nsteps:\n  - id: a\n    set: {x: 1}\n    retry:\n      max_attempts: three\n",
        "schema",
        "max_attempts: expected an integer, got string 'three'",
        6,
        21,
    ),
    (
        "wrong type: mapping where a list goes",
        "name: t\nsteps:\n  id: a\n  set: {x: 1}\n",
        "schema",
        "steps: expected a list of steps, got a mapping",
        3,
        3,
    ),
    (
        "step that is not a mapping",
        "name: t\nsteps:\n  - book\n",
        "schema",
        "step 1: expected a step (a mapping with an id and one kind key",
        3,
        5,
    ),
    (
        "bad jitter enum",
        "name: t\ndefaults:\n  retry: {jitter: sometimes}\nsteps:\n  - id: a\n    set: {x: 1}\n",
        "schema",
        "jitter: expected one of full, none, got string 'sometimes'",
        3,
        19,
    ),
    (
        "jitter read as a YAML boolean",
        "name: t\ndefaults:\n  retry: {jitter: off}\nsteps:\n  - id: a\n    set: {x: 1}\n",
        "schema",
        "got boolean false (YAML reads yes/no/on/off as booleans",
        3,
        19,
    ),
    (
        "bad on_failure",
        "name: t\non_failure: compensat\nsteps:\n  - id: a\n    set: {x: 1}\n",
        "schema",
        "on_failure: expected one of compensate, stop, got string 'compensat'; did you mean 'compensate'?",
        2,
        13,
    ),
    (
        "empty steps",
        "name: t\nsteps: []\n",
        "schema",
        "steps is empty: add at least one step",
        2,
        8,
    ),
    (
        "missing steps",
        "name: t\n",
        "missing-key",
        "the workflow has no 'steps'",
        1,
        1,
    ),
    (
        "compensate with a set body",
        "name: t\nsteps:\n  - id: a\n    action: demo.x\n    compensate:\n      set: {undone: true}\n",
        "unknown-key",
        "a compensation cannot be a 'set' step: use one of http, action",
        6,
        7,
    ),
    (
        "compensate with an id",
        "name: t\nsteps:\n  - id: a\n    action: demo.x\n    compensate: {id: b, action: demo.y}\n",
        "unknown-key",
        "a compensation has no 'id'",
        5,
        18,
    ),
    (
        "compensate with two kinds",
        "name: t\nsteps:\n  - id: a\n    action: demo.x\n    compensate: {action: demo.y, http: {url: "
        "'http://u'}}\n",
        "schema",
        "the compensation of step 'a' has 2 kinds ('action', 'http')",
        5,
        34,
    ),
    (
        "with without action",
        "name: t\nsteps:\n  - id: a\n    http: {url: 'http://u'}\n    with: {x: 1}\n",
        "schema",
        "'with' only goes with 'action' in step 'a'",
        5,
        5,
    ),
    (
        "http key beside http",
        "name: t\nsteps:\n  - id: a\n    http: {method: POST, url: 'http://u'}\n    json: {x: 1}\n",
        "unknown-key",
        "unknown key 'json' in step 'a': it belongs inside 'http:'",
        5,
        5,
    ),
    (
        "json and body",
        "name: t\nsteps:\n  - id: a\n    http:\n      url: http://u\n      json: {}\n      body: x\n",
        "schema",
        "has both 'json' and 'body'",
        7,
        7,
    ),
    (
        "missing url",
        "name: t\nsteps:\n  - id: a\n    http:\n      method: GET\n",
        "missing-key",
        "the http request of step 'a' has no 'url'",
        4,
        5,
    ),
    (
        "lowercase method",
        "name: t\nsteps:\n  - id: a\n    http: {method: post, url: 'http://u'}\n",
        "schema",
        "'post' is not an HTTP method: methods are uppercase; did you mean 'POST'?",
        4,
        20,
    ),
    (
        "relative url",
        "name: t\nsteps:\n  - id: a\n    http: {url: /orders}\n",
        "schema",
        "'/orders' is not an absolute URL",
        4,
        17,
    ),
    (
        "headers with a list value",
        "name: t\nsteps:\n  - id: a\n    http: {url: 'http://u', headers: {X-A: [1]}}\n",
        "schema",
        "headers.X-A: expected a string, a number or true or false, got a list",
        4,
        44,
    ),
    (
        "wait for an event without a key",
        "name: t\nsteps:\n  - id: a\n    wait: {event: approved}\n",
        "missing-key",
        "waits for event 'approved' but has no 'key'",
        4,
        12,
    ),
    (
        "wait with two modes",
        "name: t\nsteps:\n  - id: a\n    wait: {for: 1s, until: '{{ x }}'}\n",
        "schema",
        "the wait of step 'a' has 2 modes ('for', 'until')",
        4,
        21,
    ),
    (
        "wait with no mode",
        "name: t\nsteps:\n  - id: a\n    wait: {}\n",
        "missing-key",
        "the wait of step 'a' has no mode: add one of for, until or event",
        4,
        5,
    ),
    (
        "unquoted timestamp",
        "name: t\nsteps:\n  - id: a\n    wait: {until: 2030-01-01T10:00:00Z}\n",
        "schema",
        "got a YAML timestamp 2030-01-01T10:00:00+00:00 (quote it to keep it a string)",
        4,
        19,
    ),
    (
        "until that is neither a template nor a time",
        "name: t\nsteps:\n  - id: a\n    wait: {until: tomorrow}\n",
        "schema",
        "'tomorrow' is not a point in time",
        4,
        19,
    ),
    (
        "switch default not last",
        "name: t\nsteps:\n  - id: a\n    switch:\n      - default: a\n"
        "      - if: '{{ x }}'\n        goto: a\n",
        "schema",
        "the default of step 'a' must be its last case",
        5,
        9,
    ),
    (
        "switch case without goto",
        "name: t\nsteps:\n  - id: a\n    switch:\n      - if: '{{ x }}'\n",
        "missing-key",
        "switch case 1 of step 'a' has no 'goto'",
        5,
        9,
    ),
    (
        "switch condition that is not a template",
        "name: t\nsteps:\n  - id: a\n    switch:\n      - if: x > 1\n        goto: a\n",
        "schema",
        "'x > 1' is not a condition: write a template",
        5,
        13,
    ),
    (
        "foreach items not a template",
        "name: t\nsteps:\n  - id: a\n    foreach:\n      items: input.lines\n      steps:\n"
        "        - id: b\n          set: {x: 1}\n",
        "schema",
        "'input.lines' is not a list or a template",
        5,
        14,
    ),
    (
        "foreach as a reserved name",
        "name: t\nsteps:\n  - id: a\n    foreach:\n      items: [1]\n      as: index\n      steps:\n"
        "        - id: b\n          set: {x: 1}\n",
        "schema",
        "'index' cannot name the foreach item",
        6,
        11,
    ),
    (
        "foreach concurrency zero",
        "name: t\nsteps:\n  - id: a\n    foreach:\n      items: [1]\n      concurrency: 0\n      steps:\n"
        "        - id: b\n          set: {x: 1}\n",
        "schema",
        "concurrency: expected at least 1, got 0",
        6,
        20,
    ),
    (
        "deep problem inside a foreach inside a parallel branch",
        "name: t\nsteps:\n  - id: a\n    parallel:\n      branches:\n        - steps:\n            - id: b\n"
        "              foreach:\n                items: '{{ input.x }}'\n                steps:\n"
        "                  - id: c\n                    action: demo.x\n                    wiht: {}\n",
        "unknown-key",
        "unknown key 'wiht' in step 'c'; did you mean 'with'?",
        13,
        21,
    ),
    (
        "parallel branch without steps",
        "name: t\nsteps:\n  - id: a\n    parallel:\n      branches:\n        - {}\n",
        "missing-key",
        "branch 1 of the parallel block of step 'a' has no 'steps'",
        6,
        11,
    ),
    (
        "bad variable name points at the key",
        "name: t\nsteps:\n  - id: a\n    set:\n      total-cents: 1\n",
        "schema",
        "'total-cents' is not a valid variable name",
        5,
        7,
    ),
    (
        "empty set",
        "name: t\nsteps:\n  - id: a\n    set: {}\n",
        "schema",
        "set is empty: give at least one variable",
        4,
        10,
    ),
    (
        "lowercase env name",
        "name: t\nenv: [api_url]\nsteps:\n  - id: a\n    set: {x: 1}\n",
        "schema",
        "'api_url' is not an environment variable name: use uppercase letters, digits and '_'; "
        "did you mean 'API_URL'?",
        2,
        7,
    ),
    (
        "duplicate env name",
        "name: t\nenv: [API, DB, API]\nsteps:\n  - id: a\n    set: {x: 1}\n",
        "schema",
        "env lists 'API' more than once",
        2,
        16,
    ),
    (
        "bad error name in catch",
        "name: t\nsteps:\n  - id: a\n    action: demo.x\n    catch:\n"
        "      - errors: [http.50x]\n        goto: a\n",
        "schema",
        "'http.50x' is not an error name",
        6,
        18,
    ),
    (
        "fail raising any",
        "name: t\nsteps:\n  - id: a\n    fail: {error: any}\n",
        "schema",
        "'any' cannot be raised",
        4,
        19,
    ),
    (
        "bad workflow name",
        "name: Order Fulfilment\nsteps:\n  - id: a\n    set: {x: 1}\n",
        "schema",
        "'Order Fulfilment' is not a valid workflow name",
        1,
        7,
    ),
    (
        "input that is not an object",
        "name: t\ninput: [a, b]\nsteps:\n  - id: a\n    set: {x: 1}\n",
        "schema",
        "input: expected a JSON Schema object",
        2,
        8,
    ),
    (
        "succeed with nothing",
        "name: t\nsteps:\n  - id: a\n    succeed:\n",
        "schema",
        "succeed: expected a mapping: {} or {output: ...}, got an empty value (null)",
        4,
        13,
    ),
    (
        "empty file",
        "",
        "schema",
        "the file is empty",
        1,
        1,
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "rule", "fragment", "line", "column"), BROKEN, ids=[b[0] for b in BROKEN]
)
def test_broken_file(name: str, text: str, rule: str, fragment: str, line: int, column: int) -> None:
    found = check(text)
    assert len(found) == 1, found
    got_rule, message, got_line, got_column = found[0]
    assert got_rule == rule
    assert fragment in message
    assert (got_line, got_column) == (line, column), message
    assert "valid under" not in message and "is not of type" not in message


def test_every_problem_in_a_file_is_reported_once() -> None:
    text = """\
name: Bad Name
env: [API, API]
defaults:
  retry: {max_attempts: 0, jitter: partial}
steps:
  - id: find
    http:
      methd: POST
      url: "{{ env.API }}/x"
  - id: both
    set: {x: 1}
    action: demo.x
  - output: 1
  - id: pause
    wait: {for: soon}
"""
    found = check(text)
    positions = [(line, column) for _, _, line, column in found]
    assert positions == sorted(positions)
    assert len(found) == len(set(positions)) == 8, found
    messages = " | ".join(m for _, m, _, _ in found)
    for fragment in (
        "'Bad Name'",
        "lists 'API' more than once",
        "max_attempts: expected at least 1",
        "'partial'",
        "'methd'",
        "2 kinds",
        "step 3 has no 'id' and no kind: add a unique id and exactly one of http",
        "'soon' is not a duration",
    ):
        assert fragment in messages
    assert {rule for rule, *_ in found} == {"schema", "unknown-key", "missing-key"}


def test_missing_id_survives_when_the_kind_message_is_replaced_by_a_suggestion() -> None:
    found = check("name: t\nsteps:\n  - actoin: demo.x\n")
    assert [(rule, line, column) for rule, _, line, column in found] == [
        ("missing-key", 3, 5),
        ("unknown-key", 3, 5),
    ]
    assert "step 1 has no 'id'" in found[0][1] and "did you mean 'action'?" in found[1][1]


def test_same_error_in_many_steps_is_reported_for_each() -> None:
    steps = "".join(f"  - id: s{i}\n    set: {{x: 1}}\n    timeout: {i}x\n" for i in range(5))
    found = check("name: t\nsteps:\n" + steps)
    assert [(line, column) for *_, line, column in found] == [(5 + 3 * i, 14) for i in range(5)]


# ---------------------------------------------------- the fast path never disagrees with jsonschema

_EXAMPLES = [loads(p.read_text()).value for p in WORKFLOWS]
_KEYS = sorted(
    {
        *KINDS,
        *COMMON,
        *TOP_LEVEL,
        "method",
        "url",
        "json",
        "body",
        "with",
        "for",
        "until",
        "event",
        "key",
        "items",
        "as",
        "steps",
        "branches",
        "errors",
        "goto",
        "default",
        "max_attempts",
        "jitter",
        "on",
        "methd",
        "stepz",
    }
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 700),
    st.floats(allow_nan=False, width=32),
    st.sampled_from(
        [
            "",
            "x",
            "5s",
            "1h30m",
            "5 minutes",
            "GET",
            "post",
            "http://u",
            "{{ input.x }}",
            "Bad Id",
            "ok_id",
            "full",
            "none",
            "timeout",
            "http.5xx",
            "any",
            "API",
            "demo.x",
        ]
    ),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*path, i)))
    return out


@st.composite
def _mutated(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(_EXAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(_VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(_KEYS))] = draw(_VALUES)
        else:
            parent.append(draw(_VALUES))
    return doc


def _error_set(errors: Any) -> set[tuple[tuple[Any, ...], str]]:
    return {(tuple(e.absolute_path), e.message) for e in errors}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_fast_path_and_localised_errors_agree_with_jsonschema(doc: Any) -> None:
    full = dsl_schema.validator()
    valid = full.is_valid(doc)
    fast = dsl_schema.fast_check()
    assert fast is not None
    if fast(doc):
        assert valid  # the fast path may only be stricter, never laxer
    compiled = dsl_schema._fast()
    assert _error_set(dsl_schema._schema_errors(doc, compiled)) == _error_set(full.iter_errors(doc))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_diagnostics_for_any_mutation_are_clean(doc: Any) -> None:
    import yaml

    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    try:
        loaded = loads(text, "m.yaml")
    except Exception:  # pragma: no cover - safe_dump output is always loadable
        pytest.fail("unloadable dump")
    diagnostics = validate_document(loaded)
    schema_valid = dsl_schema.validator().is_valid(loaded.value)
    if not schema_valid:
        assert diagnostics
    lines = len(text.splitlines())
    for d in diagnostics:
        assert d.rule in dsl_schema.RULES
        assert 1 <= d.position.line <= max(lines, 1)
        assert "valid under" not in d.message
        assert not re.search(r"\bis not of type\b", d.message)
