"""Compiler: document → Graph shapes, defaults, next resolution, scopes, templates, hashing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from strategies import to_yaml, workflows

from dsl.compiler import CompileError, compile_document, compile_file
from dsl.graph import DEFAULT_RETRY_ON, TOP_SCOPE, Graph, Retry, thaw
from dsl.source import loads
from dsl.testfile import examples

ROOT = Path(__file__).resolve().parent.parent


def compile_text(text: str, **kw: object) -> Graph:
    return compile_document(loads(textwrap.dedent(text), "w.yaml"), **kw)  # type: ignore[arg-type]


KINDS = """
name: kinds
version: 3
description: every kind
env: [B_API, A_API]
timeout: 1h30m
on_failure: stop
input: {type: object, properties: {n: {type: integer}}}
steps:
  - id: call
    http:
      method: post
      url: "{{ env.A_API }}/x"
      headers: {X-Token: abc}
      query: {q: "{{ input.n }}"}
      json: {n: "{{ input.n }}"}
      expect: [200, 404]
      offload: true
  - id: plain
    http: {url: "https://example.com"}
  - id: templated_method
    http: {method: "{{ input.method }}", url: "https://example.com"}
  - id: act
    action: shop.buy
    with: {n: 1}
  - id: bare_action
    action: shop.noop
  - id: pause
    wait: {for: 1m30s}
  - id: until
    wait: {until: "{{ input.when }}"}
  - id: event
    wait: {event: paid, key: "{{ input.n }}", timeout: 2d}
  - id: event_forever
    wait: {event: paid, key: k}
  - id: route
    switch:
      - if: "{{ input.n > 1 }}"
        goto: fan
      - default: child
  - id: fan
    parallel:
      branches:
        - steps:
            - id: left
              set: {l: 1}
        - steps:
            - id: right
              set: {r: 2}
  - id: each
    foreach:
      items: "{{ [1, 2] }}"
      as: it
      concurrency: 3
      steps:
        - id: inner
          set: {v: "{{ it }}"}
  - id: each_default
    foreach:
      items: "{{ [1] }}"
      steps:
        - id: inner2
          set: {v: 1}
  - id: vars
    set: {a: 1, b: "{{ input.n }}"}
  - id: child
    workflow: {name: other, input: {n: "{{ input.n }}"}}
  - id: child_bare
    workflow: {name: other}
  - id: ok
    succeed: {output: {n: 1}}
  - id: ok_empty
    succeed: {}
  - id: bad
    fail: {error: Nope, message: "no {{ input.n }}"}
  - id: bad_quiet
    fail: {error: Nope}
"""


@pytest.fixture(scope="module")
def kinds() -> Graph:
    return compile_text(KINDS)


def cfg(graph: Graph, sid: str) -> object:
    return thaw(graph.nodes[sid].config)


def test_every_kind_config(kinds: Graph) -> None:
    assert cfg(kinds, "call") == {
        "method": "POST",
        "url": "{{ env.A_API }}/x",
        "headers": {"X-Token": "abc"},
        "query": {"q": "{{ input.n }}"},
        "json": {"n": "{{ input.n }}"},
        "expect": [200, 404],
        "offload": True,
    }
    assert cfg(kinds, "plain") == {
        "method": "GET",
        "url": "https://example.com",
        "expect": None,
        "offload": False,
    }
    assert cfg(kinds, "templated_method")["method"] == "{{ input.method }}"  # type: ignore[index]
    assert cfg(kinds, "act") == {"name": "shop.buy", "with": {"n": 1}}
    assert cfg(kinds, "bare_action") == {"name": "shop.noop", "with": {}}
    assert cfg(kinds, "pause") == {"mode": "for", "ms": 90_000}
    assert cfg(kinds, "until") == {"mode": "until", "until": "{{ input.when }}"}
    assert cfg(kinds, "event") == {
        "mode": "event",
        "event": "paid",
        "key": "{{ input.n }}",
        "timeout_ms": 2 * 86_400_000,
    }
    assert cfg(kinds, "event_forever")["timeout_ms"] is None  # type: ignore[index]
    assert cfg(kinds, "route") == {"cases": [{"if": "{{ input.n > 1 }}", "goto": "fan"}], "default": "child"}
    assert cfg(kinds, "fan") == {"branches": ["fan/0", "fan/1"]}
    assert cfg(kinds, "each") == {"items": "{{ [1, 2] }}", "as": "it", "concurrency": 3, "body": "each"}
    assert cfg(kinds, "each_default") == {
        "items": "{{ [1] }}",
        "as": "item",
        "concurrency": 10,
        "body": "each_default",
    }
    assert cfg(kinds, "vars") == {"vars": {"a": 1, "b": "{{ input.n }}"}}
    assert cfg(kinds, "child") == {"name": "other", "input": {"n": "{{ input.n }}"}}
    assert cfg(kinds, "child_bare") == {"name": "other", "input": {}}
    assert cfg(kinds, "ok") == {"output": {"n": 1}, "has_output": True}
    assert cfg(kinds, "ok_empty") == {"output": None, "has_output": False}
    assert cfg(kinds, "bad") == {"error": "Nope", "message": "no {{ input.n }}"}
    assert cfg(kinds, "bad_quiet") == {"error": "Nope", "message": None}
    assert {n.kind for n in kinds.nodes.values()} >= {
        "http", "action", "wait", "switch", "parallel", "foreach", "set", "workflow", "succeed", "fail",
    }  # fmt: skip


def test_top_level_fields(kinds: Graph) -> None:
    assert kinds.name == "kinds"
    assert kinds.version == 3
    assert kinds.description == "every kind"
    assert kinds.env == ("A_API", "B_API")
    assert kinds.timeout_ms == 5_400_000
    assert kinds.on_failure == "stop"
    assert thaw(kinds.input_schema) == {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert kinds.has_output is False and kinds.output is None
    assert kinds.entry == "call"
    assert len(kinds.hash) == 64


def test_scopes_and_next(kinds: Graph) -> None:
    top = kinds.scopes[TOP_SCOPE]
    assert top.owner is None
    assert top.nodes[:4] == ("call", "plain", "templated_method", "act")
    assert "left" not in top.nodes and "inner" not in top.nodes
    assert kinds.scopes["fan/0"].nodes == ("left",) and kinds.scopes["fan/0"].owner == "fan"
    assert kinds.scopes["fan/1"].nodes == ("right",)
    assert kinds.scopes["each"].nodes == ("inner",) and kinds.scopes["each"].owner == "each"
    assert kinds.nodes["left"].scope == "fan/0"
    assert kinds.nodes["inner"].scope == "each"
    assert kinds.scope_of("right").id == "fan/1"
    assert kinds.nodes["call"].next == "plain"
    assert kinds.nodes["fan"].next == "each"  # nested steps do not interrupt the list
    assert kinds.nodes["left"].next is None  # end of its branch
    assert kinds.nodes["bad_quiet"].next is None  # end of the top level


def test_explicit_next_and_lenient_targets() -> None:
    g = compile_text(
        """
        name: n
        steps:
          - {id: a, set: {x: 1}, next: c}
          - {id: b, set: {x: 1}, next: nowhere}
          - {id: c, set: {x: 1}}
          - {id: d, succeed: {}, if: "{{ false }}"}
          - {id: e, set: {x: 1}}
        """
    )
    assert g.nodes["a"].next == "c"
    assert g.nodes["b"].next == "nowhere"  # kept as written; the targets check reports it
    assert g.nodes["d"].next == "e"  # where a skipped succeed continues
    with pytest.raises(CompileError) as err:
        compile_document(loads("name: n\nsteps:\n  - {id: b, set: {x: 1}, next: nowhere}\n"), strict=True)
    assert err.value.diagnostic.position.line == 3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("  - {id: a, set: {x: 1}, next: zz}\n", "zz"),
        ("  - id: a\n    switch:\n      - {if: '{{ x }}', goto: zz}\n", "zz"),
        ("  - id: a\n    switch:\n      - {default: zz}\n", "zz"),
        ("  - id: a\n    action: x.y\n    catch: [{errors: [any], goto: zz}]\n", "zz"),
        ("  - id: p\n    parallel: {branches: [{steps: [{id: b, set: {x: 1}, next: p}]}]}\n", "p}"),
    ],
)
def test_strict_mode_points_at_the_bad_target(text: str, needle: str) -> None:
    full = "name: n\nsteps:\n" + text
    at = full.index(needle)
    expected = (full.count("\n", 0, at) + 1, at - full.rfind("\n", 0, at))
    with pytest.raises(CompileError) as err:
        compile_document(loads(full), strict=True)
    position = err.value.diagnostic.position
    assert (position.line, position.column) == expected
    assert compile_document(loads(full)).name == "n"  # lenient: compiles


def test_defaults_apply_by_kind() -> None:
    g = compile_text(
        """
        name: d
        defaults:
          retry: {max_attempts: 3, interval: 1s, backoff: 3, on: [timeout]}
          timeout: 5s
        steps:
          - {id: h, http: {url: "http://x"}}
          - id: a
            action: x.y
            compensate: {action: x.undo}
          - {id: own, action: x.y, retry: {max_attempts: 2}, timeout: 2s}
          - {id: w, wait: {for: 1d}}
          - {id: s, set: {x: 1}}
          - {id: c, workflow: {name: other}}
          - id: comp_own
            action: x.y
            compensate: {http: {url: "http://undo"}, retry: {max_attempts: 9}, timeout: 1s}
          - id: comp_wf
            action: x.y
            compensate: {workflow: {name: undo}}
        """
    )
    dflt = Retry(max_attempts=3, interval_ms=1000, backoff=3.0, on=("timeout",))
    assert g.nodes["h"].retry == dflt and g.nodes["h"].timeout_ms == 5000
    assert g.nodes["a"].retry == dflt and g.nodes["a"].timeout_ms == 5000
    # a step's own retry replaces the defaults entirely (unset fields take the language defaults)
    assert g.nodes["own"].retry == Retry(max_attempts=2) and g.nodes["own"].timeout_ms == 2000
    assert g.nodes["own"].retry.on == DEFAULT_RETRY_ON
    # waits, sets: no attempt to retry or bound; a child workflow is retried but not bounded
    assert g.nodes["w"].retry == Retry() and g.nodes["w"].timeout_ms is None
    assert g.nodes["s"].retry == Retry() and g.nodes["s"].timeout_ms is None
    assert g.nodes["c"].retry == dflt and g.nodes["c"].timeout_ms is None
    # compensations get the defaults too, unless they set their own
    comp = g.nodes["a"].compensate
    assert comp is not None and comp.kind == "action"
    assert comp.retry == dflt and comp.timeout_ms == 5000
    assert thaw(comp.config) == {"name": "x.undo", "with": {}}
    own = g.nodes["comp_own"].compensate
    assert own is not None and own.retry == Retry(max_attempts=9) and own.timeout_ms == 1000
    assert thaw(own.config)["url"] == "http://undo"
    wf = g.nodes["comp_wf"].compensate
    assert wf is not None and wf.retry == dflt and wf.timeout_ms is None


def test_no_defaults_means_language_defaults() -> None:
    g = compile_text("name: d\nsteps:\n  - {id: h, http: {url: 'http://x'}}\n")
    assert g.nodes["h"].retry == Retry()
    assert g.nodes["h"].timeout_ms is None  # = the runtime's time budget, not baked in
    text = "name: d\nsteps:\n  - {id: h, action: x.y}\n"
    assert compile_text(text, time_budget_ms=10_000).hash == compile_text(text).hash


def test_retry_fields_and_catch() -> None:
    g = compile_text(
        """
        name: r
        steps:
          - id: a
            action: x.y
            retry: {max_attempts: 4, interval: 250ms, backoff: 1.5, max_interval: 1m, jitter: none, on: [any]}
            catch:
              - {errors: [http.404, NoTable], goto: b}
              - {goto: b}
          - {id: b, set: {x: 1}}
        """
    )
    a = g.nodes["a"]
    assert a.retry == Retry(4, 250, 1.5, 60_000, "none", ("any",))
    assert [(c.errors, c.goto) for c in a.catch] == [(("http.404", "NoTable"), "b"), (("any",), "b")]


TEMPLATES = """
name: t
output: {booked: "{{ steps.book.output.id }}", n: "{{ input.n }}"}
steps:
  - id: find
    if: "{{ input.n > 0 }}"
    http:
      url: "{{ env.API }}/find?n={{ input.n }}"
      json: {tables: ["{{ input.n }}", "fixed"]}
    output: "{{ result.json.tables }}"
  - id: book
    action: r.book
    with: {table: "{{ steps.find.output[0].id }}", who: "{{ vars.who }}"}
    compensate:
      action: r.cancel
      with: {id: "{{ steps.book.output.id }}", again: "{{ steps.find.output }}"}
  - id: loop
    foreach:
      items: "{{ steps.find.output }}"
      steps:
        - id: per
          set: {x: "{{ item.id }} {{ steps.book.output.id }}"}
"""


def test_templates_and_reads() -> None:
    g = compile_text(TEMPLATES)
    find = g.nodes["find"]
    assert [t.path for t in find.templates] == [
        ("http", "json", "tables", 0),
        ("http", "url"),
        ("if",),
        ("output",),
    ]
    url = next(t for t in find.templates if t.path == ("http", "url"))
    assert url.native is False and url.names == ("env.API", "input.n")
    assert next(t for t in find.templates if t.path == ("output",)).native is True
    assert find.when == "{{ input.n > 0 }}"
    assert find.has_output and find.output == "{{ result.json.tables }}"
    assert find.reads == ()

    book = g.nodes["book"]
    assert book.reads == ("find",)  # compensate templates are not the step's reads
    assert ("compensate", "with", "id") in [t.path for t in book.templates]
    assert book.compensate is not None and book.compensate.reads == ("book", "find")

    loop = g.nodes["loop"]
    assert [t.path for t in loop.templates] == [("foreach", "items")]  # nested steps are their own nodes
    assert loop.reads == ("find",)
    assert g.nodes["per"].reads == ("book",)
    assert g.nodes["per"].templates[0].names == ("item.id", "steps.book.output.id")

    assert g.has_output and g.output_reads == ("book",)


def test_template_syntax_error_is_kept_leniently() -> None:
    g = compile_text('name: t\nsteps:\n  - {id: a, set: {x: "{{ broken"}}\n')
    (ref,) = g.nodes["a"].templates
    assert ref.source == "{{ broken" and ref.names == () and ref.native is False


def test_duplicate_ids_first_definition_wins() -> None:
    text = """
    name: dup
    steps:
      - {id: a, set: {first: 1}}
      - id: p
        parallel:
          branches:
            - steps: [{id: x, set: {v: 1}}]
      - id: a
        set: {second: 2}
      - id: p
        parallel:
          branches:
            - steps: [{id: y, set: {v: 1}}]
      - {id: z, set: {v: 1}}
    """
    g = compile_text(text)
    assert thaw(g.nodes["a"].config) == {"vars": {"first": 1}}
    assert g.scopes[TOP_SCOPE].nodes == ("a", "p", "z")
    assert g.nodes["p"].next == "z"
    assert "y" not in g.nodes and g.scopes["p/0"].nodes == ("x",)
    with pytest.raises(CompileError) as err:
        compile_document(loads(textwrap.dedent(text), "w.yaml"), strict=True)
    assert err.value.diagnostic.position.line == 9  # the second `a`'s id


def test_bad_duration_lenient_and_strict() -> None:
    text = "name: t\nsteps:\n  - {id: a, action: x.y, timeout: 1s1h}\n  - {id: w, wait: {for: 5s5m}}\n"
    g = compile_text(text)
    assert g.nodes["a"].timeout_ms is None and thaw(g.nodes["w"].config) == {"mode": "for", "ms": None}
    with pytest.raises(CompileError) as err:
        compile_document(loads(text, "w.yaml"), strict=True)
    assert (err.value.diagnostic.position.line, err.value.diagnostic.position.column) == (3, 35)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("- 1\n", 1),
        ("name: t\n", 1),
        ("name: t\nsteps: []\n", 2),
        ("name: t\nsteps:\n  - {set: {x: 1}}\n", 3),
        ("name: t\nsteps:\n  - {id: a, set: {x: 1}, action: y}\n", 3),
        ("name: t\nsteps:\n  - {id: a, http: 3}\n", 3),
        ("name: t\nsteps:\n  - {id: a, action: x, compensate: {set: {x: 1}}}\n", 3),
        ("name: t\nsteps:\n  - {id: a, http: {url: x, expect: [2xx]}}\n", 3),
    ],
)
def test_uncompilable_shapes_raise_positioned_errors(text: str, line: int) -> None:
    with pytest.raises(CompileError) as err:
        compile_document(loads(text, "w.yaml"))
    assert err.value.diagnostic.rule == "compile"
    assert err.value.diagnostic.position.line == line


def test_compile_file(tmp_path: Path) -> None:
    good = tmp_path / "ok.yaml"
    good.write_text("name: ok\nsteps:\n  - {id: a, set: {x: 1}}\n")
    assert compile_file(good).nodes["a"].kind == "set"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [\n")
    with pytest.raises(CompileError) as err:
        compile_file(bad)
    assert err.value.diagnostic.rule == "yaml-syntax"
    with pytest.raises(CompileError):
        compile_file(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------------ hashing


def test_round_trip_is_equal_with_the_same_hash() -> None:
    for text in (KINDS, TEMPLATES):
        g = compile_text(text)
        data = json.loads(json.dumps(g.to_dict()))  # through real JSON, as stored in Redis
        back = Graph.from_dict(data)
        assert back == g
        assert back.hash == g.hash
        assert back.to_dict() == g.to_dict()


HASH_SCRIPT = """
import sys
from dsl.compiler import compile_document
from dsl.source import loads
print(compile_document(loads(sys.stdin.read(), "w.yaml")).hash)
"""


def test_hash_is_stable_across_processes_and_hash_seeds() -> None:
    expected = compile_text(KINDS).hash
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", HASH_SCRIPT],
            input=textwrap.dedent(KINDS),
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        assert out.stdout.strip() == expected


BASE = """
name: h
description: hashing
defaults: {retry: {max_attempts: 3, interval: 1s}}
steps:
  - id: call
    http: {method: GET, url: "https://a.example/x", headers: {A: "1", B: "2"}}
    retry: {max_attempts: 2, interval: 2s}
  - id: notify
    action: x.notify
  - id: done
    set: {a: 1, b: 2}
"""


def _hash(text: str) -> str:
    return compile_text(text).hash


def test_hash_ignores_formatting_comments_and_key_order() -> None:
    reordered = """
    # a comment
    steps:
      - http:   {headers: {B: "2", A: "1"}, url: 'https://a.example/x', method: GET}   # trailing
        retry:
          interval: 2s
          max_attempts: 2
        id: call
      - {action: x.notify, id: notify}
      - set:
          b: 2
          a: 1
        id: done
    defaults:
      retry: {interval: 1s, max_attempts: 3}
    description: hashing
    name: h
    """
    assert _hash(reordered) == _hash(BASE)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("interval: 2s}", "interval: 3s}"),  # a step's retry interval
        ("https://a.example/x", "https://b.example/x"),  # a url
        ("max_attempts: 3, interval: 1s", "max_attempts: 4, interval: 1s"),  # defaults `notify` uses
        ("set: {a: 1, b: 2}", "set: {a: 1, b: 3}"),
        ("description: hashing", "description: changed"),  # informational, but a changed file
        ("method: GET", "method: POST"),
    ],
)
def test_hash_changes_with_meaning(old: str, new: str) -> None:
    assert old in BASE
    assert _hash(BASE.replace(old, new)) != _hash(BASE)


def test_unused_defaults_do_not_change_the_hash() -> None:
    # the graph holds the effective policy of each step, not the `defaults` block itself
    text = BASE.replace("  - id: notify\n    action: x.notify\n", "")
    changed = text.replace("max_attempts: 3, interval: 1s", "max_attempts: 4, interval: 1s")
    assert _hash(changed) == _hash(text)


def test_dinner_example_compiles() -> None:
    g = compile_file(ROOT / "workflows" / "dinner-reservation.yaml")
    assert g.nodes["book"].compensate is not None
    assert g.nodes["book"].compensate.reads == ("book",)
    assert g.nodes["pick"].next == "book"
    assert thaw(g.nodes["before_dinner"].config)["mode"] == "until"


@pytest.mark.parametrize("path", examples(ROOT / "workflows"), ids=lambda p: p.name)
def test_shipped_workflows_compile_and_round_trip(path: Path) -> None:
    g = compile_file(path)
    assert Graph.from_dict(json.loads(json.dumps(g.to_dict()))).hash == g.hash


def _reversed_keys(value: object) -> object:
    if isinstance(value, dict):
        return {k: _reversed_keys(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows(max_steps=14))
def test_generated_workflows_round_trip_and_ignore_key_order(doc: dict) -> None:
    g = compile_text(to_yaml(doc))
    back = Graph.from_dict(json.loads(json.dumps(g.to_dict())))
    assert back == g and back.hash == g.hash
    assert compile_text(to_yaml(_reversed_keys(doc))).hash == g.hash  # type: ignore[arg-type]


def test_compile_file_stops_at_what_the_validator_rejects(tmp_path: Path) -> None:
    """A value YAML reads as a date, or an unquoted template it reads as a mapping, is stopped with
    the validator's diagnostic (it was a TypeError traceback, and a silently compiled mapping)."""
    cases = {
        "date.yaml": ("name: t\nsteps:\n  - {id: a, action: x.y, with: {d: 2030-01-01}}\n", "schema", 3),
        "unquoted.yaml": (
            "name: t\nsteps:\n  - id: a\n    set: {v: {{ input.x }}}\n",
            "unquoted-template",
            4,
        ),
        "typo.yaml": ("name: t\nsteps:\n  - {id: a, actoin: x.y}\n", "unknown-key", 3),
    }
    for name, (text, rule, line) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(CompileError) as err:
            compile_file(tmp_path / name)
        assert (err.value.diagnostic.rule, err.value.diagnostic.position.line) == (rule, line), name
