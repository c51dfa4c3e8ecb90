"""Try to break the validator: mangled versions of every real workflow must only ever produce
well-formed diagnostics — never an exception, never an internal error, never a position outside the
file."""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import generate, to_yaml

from dsl.diagnostics import render_github, render_json, render_sarif, render_text
from dsl.testfile import examples
from dsl.validate import Result, rules, validate_path, validate_text

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = examples(ROOT / "workflows")  # the workflows, not their *.test.yaml files
CORPUS = [p.read_text(encoding="utf-8") for p in WORKFLOWS] + [
    to_yaml(generate(random.Random(seed), steps=25)) for seed in (1, 2, 3)
]
KNOWN_RULES = set(rules())

# tokens that tend to upset parsers, schema and checks alike
NASTY = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{{ }}",
    "{{ steps. }}",
    "{{ input[ }}",
    "{{ x | }}",
    "|",
    ":",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    "'",
    '"',
    "&a",
    "*a",
    "!!python/object:os.system",
    "!!binary",
    "<<",
    "\t",
    "null",
    "~",
    "0",
    "-1",
    "1e999",
    ".nan",
    "yes",
    "on",
    "steps",
    "id",
    "goto",
    "next",
    "catch",
    "compensate",
    "foreach",
    "parallel",
    "branches",
    "switch",
    "default",
    "if",
    "output",
    "result",
    "error",
    "item",
    "index",
    "vars",
    "env",
    "input",
    "timeout",
    "0s",
    "1m1h",
    "999999d",
    "offload",
    "true",
    "\u00e9",
    "\u202e",
    "\x00",
    "\x7f",
    "\ufeff",
    "#",
    "? ",
    "---",
    "...",
    "%YAML 1.1",
    "\\",
    "\r",
]


YAML_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def check(result: Result, text: str) -> None:
    lines = len(YAML_BREAK.split(text))
    for d in result.diagnostics:
        assert d.rule in KNOWN_RULES, d
        assert d.severity in ("error", "warning", "info"), d
        assert d.severity != "info" or d.rule == "checks-skipped", d
        assert d.rule != "internal-error", d.message
        assert d.position.file == result.file
        assert 1 <= d.position.line <= lines, (d, lines)
        assert d.position.column >= 1, d
        assert d.message and "\n" not in d.message.strip(), d
    if result.graph is not None:
        assert not result.errors and result.graph.hash
    # every renderer copes with whatever came out
    render_text(result.diagnostics, lambda _f, n: result.line(n))
    render_json(result.diagnostics)
    render_github(result.diagnostics)
    render_sarif(result.diagnostics, rules())


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text: str = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(1, 4))):
        lines = text.split("\n")
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "token", "insert", "truncate"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, max(0, len(lines) - 1)))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            delta = draw(st.sampled_from([-4, -2, -1, 1, 2, 4]))
            lines[i] = " " * delta + lines[i] if delta > 0 else lines[i][-delta:]
        elif op == "token":
            tokens = list(re.finditer(r"\w+|[^\s\w]", lines[i]))
            if tokens:
                tok = draw(st.sampled_from(tokens))
                words = re.findall(r"\w+", text)
                new = draw(st.one_of(st.sampled_from(NASTY), st.sampled_from(words or ["x"])))
                lines[i] = lines[i][: tok.start()] + new + lines[i][tok.end() :]
        elif op == "insert":
            at = draw(st.integers(0, len(lines[i])))
            junk = draw(st.text(min_size=1, max_size=6))
            lines[i] = lines[i][:at] + junk + lines[i][at:]
        text = "\n".join(lines)
        if op == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
    return text


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(mutated())
def test_mutated_workflows_only_ever_give_diagnostics(text: str) -> None:
    check(validate_text(text, "fuzz.yaml"), text)


TEMPLATES = [
    "{{ steps.charge.output }}",
    "{{ steps.x.output }}",
    "{{ error.name }}",
    "{{ result }}",
    "{{ item }}",
    "{{ index }}",
    "{{ line.sku }}",
    "{{ input.a.b | length }}",
    "{{ input.lines | datetime }}",
    "{{ env.X }}",
    "{{ vars.zz }}",
    "{{ x | nope }}",
    "{% for a in b %}{{ loop.index }}{% endfor %}{{ loop }}",
    "{{ steps[x] }}",
    "{{ steps }}",
    "{{ input['a'][0].b }}",
    "{{ (input.when | datetime) - duration('2h') }}",
    "{{ execution.foo }}",
    "{{ 1 is foo }}",
    "{% include 'a' %}",
    "{{ ",
    "{%",
    "{{ a.b.c.d[0]['x'] }}",
    "{{ input.total_cents.real }}",
    "{{ input | length }}",
    "{{ env }}",
    "0s",
    "1m1h",
    "99d",
    "any",
]
SHAPES = [
    None,
    0,
    -1,
    1.5,
    True,
    "",
    "x",
    [],
    {},
    [None],
    {"": None},
    {"id": "zz"},
    {"errors": [], "goto": 1},
]


def _paths(value: object, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*path, i)))
    return out


@st.composite
def restructured(draw: st.DrawFn) -> str:
    """Mutations of the parsed document (then dumped again), so most results get past the YAML
    parser and many past the schema: this is where the semantic checks meet odd shapes."""
    doc = yaml.safe_load(draw(st.sampled_from(CORPUS)))
    strings = [v for v in re.findall(r"[\w.{} |'\[\]()-]+", yaml.safe_dump(doc)) if v.strip()]
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        op = draw(st.sampled_from(["string", "shape", "delete", "duplicate", "copy-step"]))
        if op == "string":
            parent[key] = draw(st.one_of(st.sampled_from(TEMPLATES), st.sampled_from(strings)))
        elif op == "shape":
            parent[key] = copy.deepcopy(draw(st.sampled_from(SHAPES)))
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "copy-step":
            lists = [p for p in _paths(doc) if p and p[-1] == "steps"]
            steps = [p for p in _paths(doc) if len(p) >= 2 and p[-2] == "steps"]
            if lists and steps:
                target, source = draw(st.sampled_from(lists)), draw(st.sampled_from(steps))
                node, item = doc, doc
                for part in target:
                    node = node[part]
                for part in source:
                    item = item[part]
                if isinstance(node, list):
                    node.insert(draw(st.integers(0, len(node))), copy.deepcopy(item))
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(restructured())
def test_restructured_workflows_only_ever_give_diagnostics(text: str) -> None:
    check(validate_text(text, "shape.yaml"), text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.data())
def test_truncation_at_every_kind_of_point(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(text)))
    check(validate_text(text[:cut], "cut.yaml"), text[:cut])


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_from_disk(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "blob.yaml"
    path.write_bytes(data)
    result = validate_path(path)
    text = data.decode("utf-8", errors="replace")
    check(result, text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "---\n",
        "~\n",
        "[]\n",
        "42\n",
        "name: x\nsteps: 5\n",
        "name: x\nsteps: [5, null, [], {id: a}]\n",
        "name: x\nsteps:\n  - id: a\n    parallel: {branches: [5, {steps: 7}]}\n",
        "name: x\nsteps:\n  - id: a\n    foreach: {items: 5, steps: [{id: a, foreach: {steps: []}}]}\n",
        "name: x\ninput: {properties: {a: {$ref: '#/properties/a'}}}\nsteps:\n"
        "  - {id: a, action: x, with: {v: '{{ input.a.b.c }}'}}\n",
        "name: x\ninput: {allOf: [{$ref: '#'}]}\nsteps:\n"
        "  - {id: a, action: x, with: {v: '{{ input.a | length }}'}}\n",
        "a: &a [*a]\n",
        "a: &a\n  b: *a\n",
        "x: " + "[" * 500 + "]" * 500 + "\n",
        "name: x\nsteps:\n"
        + "".join(f"  - {{id: s{i}, set: {{v: 1}}, next: s{i - 1}}}\n" for i in range(1, 60)),
        'name: x\nsteps:\n  - id: a\n    action: x.y\n    with: {v: "' + "{{ a." * 300 + '"}\n',
    ],
)
def test_pathological_documents(text: str) -> None:
    check(validate_text(text, "edge.yaml"), text)


def test_a_directory_and_a_missing_file_are_diagnostics_not_exceptions(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing.yaml"):
        result = validate_path(path)
        assert [d.rule for d in result.diagnostics] == ["io"]
        assert result.diagnostics[0].position.line == 1
