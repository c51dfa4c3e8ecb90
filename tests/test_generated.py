"""Generated valid workflows: no diagnostics at all, and a compiled hash that never wobbles."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from strategies import generate, to_yaml, workflow_texts, workflows

from dsl.diagnostics import render_text
from dsl.graph import Graph
from dsl.render import to_dot, to_mermaid
from dsl.validate import validate_text

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _clean(text: str) -> Graph:
    result = validate_text(text, "generated.yaml")
    assert not result.diagnostics, (
        "\n" + render_text(result.diagnostics, lambda _f, n: result.line(n)) + "\n" + text
    )
    assert result.graph is not None
    return result.graph


@SETTINGS
@given(workflow_texts())
def test_generated_workflows_validate_without_any_diagnostic(text: str) -> None:
    graph = _clean(text)
    assert len(graph.hash) == 64


@SETTINGS
@given(workflow_texts())
def test_the_hash_is_stable_across_compiles_and_a_round_trip(text: str) -> None:
    first = _clean(text)
    second = _clean(text)
    assert first.hash == second.hash
    assert first.canonical() == second.canonical()
    stored = json.loads(json.dumps(first.to_dict()))  # as kept in Redis
    loaded = Graph.from_dict(stored)
    assert loaded.hash == first.hash
    assert loaded == first
    assert Graph.from_dict(json.loads(json.dumps(loaded.to_dict()))).hash == first.hash


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows())
def test_key_order_and_yaml_style_do_not_change_the_hash(doc: dict) -> None:
    block = _clean(to_yaml(doc))
    flow = _clean(yaml.safe_dump(doc, sort_keys=True, default_flow_style=True, width=10_000))
    assert block.hash == flow.hash


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflow_texts())
def test_every_generated_graph_renders_every_step(text: str) -> None:
    graph = _clean(text)
    mermaid, dot = to_mermaid(graph), to_dot(graph)
    assert mermaid.startswith("%% hopflow workflow") and "flowchart TD" in mermaid
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    for node in graph.nodes:
        assert f"n_{node}" in mermaid and f'"n_{node}"' in dot
    lines = [line.strip() for line in mermaid.splitlines()]
    assert sum(line.startswith("subgraph ") for line in lines) == lines.count("end")
    dot_lines = [line.strip() for line in dot.splitlines()]
    assert sum(line.endswith("{") for line in dot_lines) == dot_lines.count("}")


def test_the_hash_does_not_depend_on_the_process() -> None:
    """Same file, different PYTHONHASHSEEDs and processes: the same hash (sets/dicts never leak in)."""
    text = to_yaml(generate(random.Random(2024), steps=30))
    script = (
        "import sys; from dsl.validate import validate_text; "
        "r = validate_text(sys.stdin.read(), 'g.yaml'); print(r.graph.hash)"
    )
    hashes = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script], input=text, capture_output=True, text=True, env=env, check=True
        )
        hashes.add(out.stdout.strip())
    assert hashes == {_clean(text).hash}


def test_the_seeded_generator_is_deterministic_and_large_enough() -> None:
    a = generate(random.Random(7), steps=40)
    b = generate(random.Random(7), steps=40)
    assert a == b
    graph = _clean(to_yaml(a))
    assert len(graph.nodes) >= 20
