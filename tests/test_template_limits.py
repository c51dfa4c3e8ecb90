"""Hostile templates: every operation that can grow a value or run long ends as the catchable step
error ``template.limit`` before it allocates (memory stays small) and within the operation budget,
never as a ``MemoryError``, a 500 or a worker stuck for minutes."""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import pytest
from starlette.testclient import TestClient

from dsl import template_limits as limits
from dsl.templates import TemplateError, TemplateLimit, render_string

# each builds (or used to build) hundreds of MB, or an integer of millions of digits
GROWTH = {
    "center filter": "{{ 'x'|center(500000000) }}",
    "indent filter": "{{ 'a\nb'|indent(300000000) }}",
    "indent filter, string width": "{{ ('a\n' * 50000)|indent('x' * 100000) }}",
    "percent width": "{{ '%0500000000d' % 1 }}",
    "percent star width": "{{ '%*d' % (500000000, 1) }}",
    "percent repeated argument": "{{ ('%(a)s' * 20000) % {'a': 'y' * 100000} }}",
    "format filter": "{{ '%0500000000d'|format(1) }}",
    "str.format width": "{{ '{:>500000000}'.format(1) }}",
    "str.format precision": "{{ '{:.500000000f}'.format(1.5) }}",
    "str.format nested width": "{{ '{:>{w}}'.format(1, w=500000000) }}",
    "str.format repeated field": "{{ ('{0:>900000}' * 10).format(1) }}",
    "format_map": "{{ '{a:>500000000}'.format_map({'a': 1}) }}",
    "join over a range": "{{ range(100000)|join('x' * 100000) }}",
    "join of big items": "{{ (['y' * 100000] * 100)|join }}",
    "str.join": "{{ ('x' * 100000).join(['a'] * 1000) }}",
    "string repeat": "{{ 'x' * 500000000 }}",
    "list repeat": "{{ [1] * 500000000 }}",
    "repeat of a big item": "{{ ['y' * 100000] * 1000 }}",
    "string concatenation": "{% set a = 'x' * 100000 %}{% set b = a + a %}{% set c = b + b %}"
    "{% set d = c + c %}{% set e = d + d %}{% set f = e + e %}{% set g = f + f %}{{ g|length }}",
    "tilde concatenation": "{% set a = 'x' * 100000 %}{% set b = a ~ a %}{% set c = b ~ b %}"
    "{% set d = c ~ c %}{% set e = d ~ d %}{% set f = e ~ e %}{% set g = f ~ f %}{{ g|length }}",
    "list concatenation": "{% set a = [1] * 100000 %}{{ (a + a)|length }}",
    "replace filter": "{{ ('x' * 100000)|replace('x', 'y' * 100000) }}",
    "str.replace": "{{ ('x' * 100000).replace('x', 'y' * 100000) }}",
    "wordwrap": "{{ ('x ' * 50000)|wordwrap(1, wrapstring='y' * 100000) }}",
    "ljust": "{{ 'x'.ljust(500000000) }}",
    "rjust": "{{ 'x'.rjust(500000000) }}",
    "str.center": "{{ 'x'.center(500000000) }}",
    "zfill": "{{ '1'.zfill(500000000) }}",
    "expandtabs": "{{ '\t'.expandtabs(500000000) }}",
    "batch fill": "{{ [1]|batch(500000000, 'x')|list }}",
    "slice": "{{ [1]|slice(500000000)|list|length }}",
    "sum of lists": "{{ ([[1] * 1000] * 1000)|sum(start=[])|length }}",
    "tojson indent": "{{ [[[[[1]]]]]|tojson(indent=100000000) }}",
    "range": "{{ range(500000000)|length }}",
    "captured block": "{% set x %}{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}{% endset %}"
    "{{ x|length }}",
    "macro output": "{% macro m() %}{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}{% endmacro %}"
    "{{ m()|length }}",
    "power": "{{ ((10 ** 1000) ** 1000) ** 1000 }}",
    "power of two": "{{ 2 ** 100000000 }}",
    "product": "{% set a = 10 ** 4000 %}{{ a * a * a * a * a }}",
    "float overflow": "{{ 2.0 ** 100000 }}",
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
}

CPU = {
    "nested loops": "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}",
    "loops over data": "{% for a in input.items %}{% for b in input.items %}{% for c in input.items %}"
    "{{ c }}{% endfor %}{% endfor %}{% endfor %}",
    "doubling macro": "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
    "{{ f(60) }}",
    "recursive loop": "{% for x in input.items recursive %}{% if loop.depth < 50 %}{{ loop(input.items) }}"
    "{% endif %}{% endfor %}",
    "filters in a loop": "{% for a in range(100000) %}{{ a|string|upper|lower }}{% endfor %}",
}

SCOPE = {"input": {"items": list(range(1000)), "tree": [1, 2, 3]}}


def _render_measured(source: str) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        render_string(source, SCOPE)
    except BaseException as exc:  # the test judges whatever came out
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


@pytest.mark.parametrize("source", GROWTH.values(), ids=GROWTH.keys())
def test_growth_is_refused_before_it_allocates(source: str) -> None:
    error, peak = _render_measured(source)
    assert isinstance(error, TemplateLimit), repr(error)
    assert error.message.startswith("template limit:")
    # a bound is checked before the allocation: at most a few times the largest value a template keeps
    assert peak < 6 * limits.MAX_VALUE_CHARS + 20_000_000, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("source", CPU.values(), ids=CPU.keys())
def test_long_templates_stop_at_the_operation_budget(source: str) -> None:
    with limits.budget(seconds=3600) as spent:
        with pytest.raises(TemplateLimit, match="operations"):
            render_string(source, SCOPE)
    assert spent.ops_left < 0  # it was the operation count that stopped it, not a clock


def test_the_time_budget_stops_a_render_that_spends_few_operations() -> None:
    # each item of this loop is a filter over a 100,000-item list: few operations, much work
    source = "{% for a in range(100000) %}{{ range(100000)|map('string')|join|length }}{% endfor %}"
    with pytest.raises(TemplateLimit, match="longer than"):
        render_string(source, SCOPE, seconds=0.2)


def test_ordinary_templates_still_work() -> None:
    assert render_string("{{ 'x'|center(9) }}", {}) == "    x    "
    assert render_string("{{ '%05d' % 42 }}", {}) == "00042"
    assert render_string("{{ '{:>6}'.format('ab') }}", {}) == "    ab"
    assert render_string("{{ range(3)|join(', ') }}", {}) == "0, 1, 2"
    assert render_string("{{ [[1], [2]]|sum(start=[]) }}", {}) == [1, 2]
    assert render_string("{{ [1, 2]|sum }}", {}) == 3
    assert render_string("{{ 2 ** 64 }}", {}) == 2**64
    assert render_string("{{ 'ab' ~ 'cd' }}", {}) == "abcd"
    assert render_string("{{ users|join(',', attribute='n') }}", {"users": [{"n": "a"}, {"n": "b"}]}) == "a,b"
    recursive = "{% for x in [[1, [2]]] recursive %}{{ loop(x) if x is iterable else x }}{% endfor %}"
    assert render_string(recursive, {}) == "12"
    text = "{% for i in range(3) %}{{ loop.index }}{% if loop.last %}.{% endif %}{% endfor %}"
    assert render_string(text, {}) == "123."
    assert render_string("{{ {'a': [1]}|tojson(indent=2) }}", {}) == '{\n  "a": [\n    1\n  ]\n}'


def test_a_plain_template_error_is_not_a_limit() -> None:
    with pytest.raises(TemplateError) as caught:
        render_string("{{ 1 + 'a' }}", {})
    assert not isinstance(caught.value, TemplateLimit)


# ------------------------------------------------------------------------- through the interpreter

HOSTILE = """
name: hostile
input: {type: object}
steps:
  - id: build
    set: {v: "{{ input.payload }}"}
    catch:
      - errors: [template]
        goto: handled
  - id: fine
    succeed: {output: {ok: true}}
  - id: handled
    succeed: {output: {caught: "{{ error.name }}", message: "{{ error.message }}"}}
"""


def _hostile(payload: str) -> str:
    # the hostile expression is the workflow's own; the test substitutes one per case
    return HOSTILE.replace("{{ input.payload }}", payload.replace('"', '\\"'))


@pytest.mark.parametrize(
    "source",
    [GROWTH["center filter"], GROWTH["join over a range"], GROWTH["power"], CPU["nested loops"]],
    ids=["center", "join", "power", "loops"],
)
def test_the_interpreter_turns_a_limit_into_a_catchable_step_error(harness: Any, source: str) -> None:
    h = harness(_hostile(source), unchecked=True)
    tracemalloc.start()
    record = h.run("hostile", {})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert record["status"] == "succeeded", record
    assert record["output"]["caught"] == "template.limit"
    assert record["output"]["message"].startswith("template limit:")
    assert peak < 100_000_000


def test_an_uncaught_limit_fails_the_execution_with_its_name(harness: Any) -> None:
    text = "name: bare\nsteps:\n  - id: build\n    set: {v: \"{{ 'x'|center(500000000) }}\"}\n"
    h = harness(text, unchecked=True)
    record = h.run("bare", {})
    assert record["status"] == "failed"
    assert record["error"]["name"] == "template.limit"


def test_the_node_time_budget_bounds_rendering(harness: Any) -> None:
    source = "{% for a in range(100000) %}{{ range(100000)|map('string')|join|length }}{% endfor %}"
    h = harness(_hostile(source), unchecked=True, time_budget_s=0.4)
    started = time.monotonic()
    record = h.run("hostile", {})
    assert record["output"]["caught"] == "template.limit"
    assert "longer than 0.2s" in record["output"]["message"]
    assert time.monotonic() - started < 60  # a hang guard only; the budget above is what stops it


def test_a_hostile_template_through_the_webhook_is_caught_not_dead(harness: Any, redis_db: Any) -> None:
    from engine.asgi import create_app
    from engine.config import Config
    from engine.signing import sign_qstash

    public, key = "https://hopflow.test", "sig_current_0123456789abcdef"
    h = harness(_hostile(CPU["nested loops"]), unchecked=True)
    app = create_app(
        h.runtime,
        config=Config(public_url=public, qstash_current_signing_key=key, qstash_next_signing_key=key),
    )
    eid = h.start("hostile", {})
    # by the public name, as QStash delivers (the request guard answers no other Host)
    with TestClient(app, client=("203.0.113.7", 40000), base_url="https://hopflow.test") as client:
        while (outgoing := h.dispatcher.pop()) is not None:
            body = outgoing.message.to_json()
            r = client.post(
                "/v1/step",
                content=body,
                headers={
                    "Upstash-Signature": sign_qstash(body, public + "/v1/step", key),
                    "Content-Type": "application/json",
                },
            )
            assert r.status_code == 200, r.text
            assert json.loads(r.text)["result"] != "dead"
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded"
    assert record["output"]["caught"] == "template.limit"


def test_template_catches_its_limit_and_the_limit_is_a_known_name() -> None:
    from dsl.validate import validate_text
    from engine.model import error_matches

    assert error_matches("template", "template.limit")
    assert error_matches("template.limit", "template.limit")
    assert not error_matches("template.limit", "template")
    assert not error_matches("templ", "template.limit")
    text = _hostile("{{ 1 }}").replace("errors: [template]", "errors: [template.limit]")
    result = validate_text(text, "hostile.yaml")
    assert not [d for d in result.diagnostics if d.rule in ("unknown-error", "schema")], result.diagnostics
