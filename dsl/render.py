"""Graph → pictures: a Mermaid flowchart (paste into a Markdown ```mermaid block) or Graphviz DOT.

Both show the same thing: one node per step, shaped by kind; solid edges for success; switch cases
labelled with their condition; ``catch`` jumps dashed and labelled with the errors they catch;
parallel branches and foreach bodies as nested boxes between a fork and a join; each compensation as
a note hanging off its step by a dotted line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dsl.durations import format_ms
from dsl.graph import TOP_SCOPE, Graph, Node

MAX_LABEL = 48


# ------------------------------------------------------------------------------------ shared layout


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    label: str = ""
    style: str = "flow"  # flow | catch | undo


@dataclass
class _Layout:
    """The picture independent of its syntax: boxes (with nesting) and edges between drawn ids."""

    graph: Graph
    edges: list[_Edge] = field(default_factory=list)
    missing: dict[str, None] = field(default_factory=dict)  # jump targets that are not nodes
    uses_fail: bool = False

    def node_id(self, step: str) -> str:
        if step not in self.graph.nodes:
            self.missing[step] = None
        return "n_" + _safe(step)

    def after(self, node: Node) -> str:
        """Where success of ``node`` leads: its next step, else the end of its scope."""
        if node.next is not None:
            return self.node_id(node.next)
        return self.scope_end(node.scope)

    def scope_end(self, scope_id: str) -> str:
        if scope_id == TOP_SCOPE:
            return "end_ok"
        scope = self.graph.scopes.get(scope_id)
        owner = scope.owner if scope is not None else None
        return "j_" + _safe(owner) if owner else "end_ok"

    def scope_entry(self, scope_id: str) -> str:
        scope = self.graph.scopes.get(scope_id)
        if scope is None or scope.entry is None:
            return self.scope_end(scope_id)
        return self.node_id(scope.entry)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


DRAWN_PREFIXES = {"node": "n_", "undo": "c_", "join": "j_"}


def drawn_id(step: str, part: str = "node") -> str:
    """The id of a step's box in both pictures: ``node`` (the step), ``undo`` (its compensation's
    note) or ``join`` (a fan-out's join); the dashboard styles these boxes by the step's state."""
    return DRAWN_PREFIXES[part] + _safe(step)


def _ms(value: Any) -> str:
    """A compiled duration, or the template that gives it at run time."""
    return format_ms(int(value or 0)) if not isinstance(value, str) else _short(value)


def _short(text: str, limit: int = MAX_LABEL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _condition(source: object) -> str:
    text = str(source).strip()
    match = re.fullmatch(r"\{\{-?\s*(.*?)\s*-?\}\}", text, re.DOTALL)
    return _short(match.group(1) if match else text, 40)


def detail(node: Node) -> str:
    """One line saying what a step does (``POST …/search``, ``action payments.charge``, ``wait 5m``)."""
    config = node.config
    kind = node.kind
    if kind == "http":
        offload = " (offloaded)" if config.get("offload") else ""
        return _short(f"{config.get('method', 'GET')} {config.get('url', '')}") + offload
    if kind == "action":
        return _short(f"action {config.get('name', '')}")
    if kind == "wait":
        mode = config.get("mode")
        if mode == "for":
            return f"wait {_ms(config.get('ms'))}"
        if mode == "until":
            return "wait until " + _condition(config.get("until", ""))
        timeout = config.get("timeout_ms")
        bound = f" (≤ {_ms(timeout)})" if timeout else ""
        event = config.get("event", "")
        names = " or ".join(event) if isinstance(event, list | tuple) else event
        return _short(f"wait for event {names}") + bound
    if kind == "switch":
        return "switch"
    if kind == "parallel":
        count = len(config.get("branches") or ())
        wait_for = config.get("wait_for")
        race = "" if not wait_for else ", first wins" if wait_for == 1 else f", first {wait_for} win"
        return f"parallel ({count} branches{race})"
    if kind == "foreach":
        text = f"foreach {config.get('as', 'item')} in {_condition(config.get('items', ''))}"
        if config.get("until") is not None:
            text += " until " + _condition(config["until"])
        if config.get("item_timeout_ms"):
            text += f" (each ≤ {format_ms(int(config['item_timeout_ms']))})"
        return _short(text)
    if kind == "set":
        return _short("set " + ", ".join(f"vars.{k}" for k in (config.get("vars") or {})))
    if kind == "workflow":
        return _short(f"workflow {config.get('name', '')}")
    if kind == "succeed":
        return "succeed"
    if kind == "fail":
        return _short(f"fail {config.get('error', '')}")
    if kind == "emit":
        return _short(f"emit event {config.get('event', '')}")
    return kind


def _undo(node: Node) -> str:
    comp = node.compensate
    assert comp is not None
    config = comp.config
    if comp.kind == "http":
        what = f"{config.get('method', 'GET')} {config.get('url', '')}"
    elif comp.kind == "action":
        what = f"action {config.get('name', '')}"
    else:
        what = f"workflow {config.get('name', '')}"
    return _short("undo: " + what)


def _layout(graph: Graph) -> _Layout:
    lay = _Layout(graph)
    edges = lay.edges
    top = graph.scopes.get(TOP_SCOPE)
    edges.append(_Edge("start", lay.scope_entry(TOP_SCOPE) if top is not None else "end_ok"))
    drawn = [item for what, item in _walk(graph, TOP_SCOPE) if what == "node"]
    seen = {n.id for n in drawn if isinstance(n, Node)}
    ordered = [*drawn, *(n for n in graph.nodes.values() if n.id not in seen)]
    for node in ordered:
        assert isinstance(node, Node)
        me = lay.node_id(node.id)
        if node.kind == "parallel":
            limits = node.config.get("timeouts_ms") or ()
            for i, branch in enumerate(node.config.get("branches") or ()):
                limit = limits[i] if i < len(limits) else 0
                label = f"branch {i + 1}" + (f" (≤ {format_ms(int(limit))})" if limit else "")
                edges.append(_Edge(me, lay.scope_entry(branch), label))
            edges.append(_Edge("j_" + _safe(node.id), lay.after(node)))
        elif node.kind == "foreach":
            edges.append(_Edge(me, lay.scope_entry(node.config.get("body", node.id)), "each item"))
            edges.append(_Edge("j_" + _safe(node.id), lay.after(node)))
        elif node.kind == "switch":
            for case in node.config.get("cases") or ():
                edges.append(_Edge(me, lay.node_id(case.get("goto", "")), _condition(case.get("if", ""))))
            default = node.config.get("default")
            if default:
                edges.append(_Edge(me, lay.node_id(default), "default"))
            else:
                edges.append(_Edge(me, lay.after(node), "otherwise"))
        elif node.kind == "succeed":
            edges.append(_Edge(me, "end_ok"))
        elif node.kind == "fail":
            lay.uses_fail = True
            edges.append(_Edge(me, "end_fail", str(node.config.get("error", ""))))
        else:
            edges.append(_Edge(me, lay.after(node)))
        for catch in node.catch:
            if catch.goto is None:  # `raise`: fails under another name
                lay.uses_fail = True
                label = f"{', '.join(catch.errors)} → {catch.raises['name']}"
                edges.append(_Edge(me, "end_fail", label, "catch"))
                continue
            edges.append(_Edge(me, lay.node_id(catch.goto), ", ".join(catch.errors), "catch"))
        if node.compensate is not None:
            edges.append(_Edge(me, "c_" + _safe(node.id), "", "undo"))
    return lay


def _walk(graph: Graph, scope_id: str) -> Iterator[tuple[str, Node | str]]:
    """Drawing order: ("node", Node) | ("open", scope/cluster) | ("close", "") | ("join", Node)."""
    scope = graph.scopes.get(scope_id)
    if scope is None:
        return
    for step in scope.nodes:
        node = graph.nodes.get(step)
        if node is None:
            continue
        yield "node", node
        if node.kind == "parallel":
            yield "open", f"{node.id}\0parallel {node.id}"
            for i, branch in enumerate(node.config.get("branches") or ()):
                yield "open", f"{branch}\0branch {i + 1}"
                yield from _walk(graph, branch)
                yield "close", ""
            yield "close", ""
            yield "join", node
        elif node.kind == "foreach":
            body = node.config.get("body", node.id)
            yield "open", f"{body}\0each {node.config.get('as', 'item')} of {node.id}"
            yield from _walk(graph, body)
            yield "close", ""
            yield "join", node


# ------------------------------------------------------------------------------------------ Mermaid

_MERMAID_ESCAPES = {
    '"': "#quot;",
    "#": "#35;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "`": "#96;",
    "|": "#124;",
}
_MERMAID_SHAPES = {
    "http": ('["', '"]'),
    "action": ('("', '")'),
    "wait": ('{{"', '"}}'),
    "switch": ('{"', '"}'),
    "parallel": ('[/"', '"\\]'),
    "foreach": ('[/"', '"\\]'),
    "set": ('[/"', '"/]'),
    "workflow": ('[["', '"]]'),
    "succeed": ('(["', '"])'),
    "fail": ('>"', '"]'),
    "emit": ('>"', '"]'),
}


def _trigger_lines(graph: Graph) -> list[str]:
    """A small note on the start node: what starts the workflow on its own (`triggers`, `schedules`)."""
    lines = []
    for trigger in graph.triggers:
        key = trigger.get("key")
        lines.append(f"on {trigger['event']}" + (f" key {_short(str(key))}" if key is not None else ""))
    for schedule in graph.schedules:
        lines.append(f"cron {schedule['cron']} ({schedule.get('timezone', 'UTC')})")
    if graph.flow_control:
        lines.append(flow_note(graph.flow_control))
    return lines


def flow_note(flow: Any) -> str:
    """``flow key {{ input.tenant }}: 10/1m, 2 at once, 1 running``: a `flow_control` in one line."""
    parts = []
    if flow.get("rate"):
        parts.append(f"{flow['rate']}/{format_ms(int(flow.get('period_ms') or 1000))}")
    if flow.get("parallelism"):
        parts.append(f"{flow['parallelism']} at once")
    if flow.get("max_running"):
        parts.append(f"{flow['max_running']} running")
    key = flow.get("key")
    return _short(f"flow{' key ' + _condition(key) if key else ''}: {', '.join(parts)}", 72)


def mermaid_escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label (entity codes for quotes, #, <, >, &, `, |)."""
    return "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in " ".join(str(text).split()))


def _m_label(*lines: str) -> str:
    return "<br/>".join(mermaid_escape(line) for line in lines if line)


def to_mermaid(graph: Graph) -> str:
    lay = _layout(graph)
    out = [f"%% hopflow workflow {graph.name} ({graph.hash[:12] or 'unhashed'})", "flowchart TD"]
    out.append(f'  start(("{_m_label("start", *_trigger_lines(graph))}"))')
    depth = 1
    cluster = 0
    for what, item in _walk(graph, TOP_SCOPE):
        pad = "  " * depth
        if what == "node":
            assert isinstance(item, Node)
            left, right = _MERMAID_SHAPES.get(item.kind, ('["', '"]'))
            when = f"if {_condition(item.when)}" if item.when is not None else ""
            flow = flow_note(item.flow_control) if item.flow_control else ""
            label = _m_label(item.id, detail(item), when, flow)
            out.append(f"{pad}{lay.node_id(item.id)}{left}{label}{right}")
            if item.compensate is not None:
                out.append(f'{pad}c_{_safe(item.id)}>"{_m_label(_undo(item))}"]:::undo')
        elif what == "open":
            assert isinstance(item, str)
            _, title = item.split("\0")
            cluster += 1
            out.append(f'{pad}subgraph sg{cluster}["{mermaid_escape(title)}"]')
            depth += 1
        elif what == "close":
            depth -= 1
            out.append("  " * depth + "end")
        else:
            assert isinstance(item, Node)
            out.append(f'{pad}j_{_safe(item.id)}[/"{_m_label("join " + item.id)}"\\]')
    for missing in lay.missing:
        out.append(f'  n_{_safe(missing)}["{_m_label(missing, "(no such step)")}"]')
    out.append('  end_ok(("end"))')
    if lay.uses_fail:
        out.append('  end_fail((("failed")))')
    styled: dict[str, list[int]] = {"catch": [], "undo": []}
    for i, edge in enumerate(lay.edges):
        label = f'|"{mermaid_escape(edge.label)}"|' if edge.label else ""
        if edge.style == "flow":
            out.append(f"  {edge.source} -->{label} {edge.target}")
        elif edge.style == "catch":
            out.append(f"  {edge.source} -.->{label} {edge.target}")
        else:
            out.append(f"  {edge.source} -.- {edge.target}")
        if edge.style in styled:
            styled[edge.style].append(i)
    if styled["catch"]:
        out.append(f"  linkStyle {','.join(map(str, styled['catch']))} stroke:#c0392b,stroke-dasharray:6 4")
    if styled["undo"]:
        out.append(f"  linkStyle {','.join(map(str, styled['undo']))} stroke:#999,stroke-dasharray:2 3")
    out.append("  classDef undo fill:#fff4e0,stroke:#d08000,color:#6b4200")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- DOT

_DOT_SHAPES = {
    "http": "shape=box",
    "action": 'shape=box, style="rounded"',
    "wait": "shape=hexagon",
    "switch": "shape=diamond",
    "parallel": "shape=trapezium",
    "foreach": "shape=trapezium",
    "set": "shape=parallelogram",
    "workflow": "shape=component",
    "succeed": 'shape=box, style="rounded,bold"',
    "fail": "shape=octagon",
    "emit": "shape=cds",
}


def dot_escape(text: str) -> str:
    """Text safe inside a double-quoted DOT string (backslashes, quotes; newlines become spaces)."""
    return " ".join(str(text).split()).replace("\\", "\\\\").replace('"', '\\"')


def _d_label(*lines: str) -> str:
    return "\\n".join(dot_escape(line) for line in lines if line)


def to_dot(graph: Graph) -> str:
    lay = _layout(graph)
    out = [
        f'digraph "{dot_escape(graph.name)}" {{',
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, compound=true];',
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=10];',
        f'  "start" [shape=circle, label="{_d_label("start", *_trigger_lines(graph))}"];',
    ]
    depth = 1
    cluster = 0
    for what, item in _walk(graph, TOP_SCOPE):
        pad = "  " * depth
        if what == "node":
            assert isinstance(item, Node)
            when = f"if {_condition(item.when)}" if item.when is not None else ""
            flow = flow_note(item.flow_control) if item.flow_control else ""
            shape = _DOT_SHAPES.get(item.kind, "shape=box")
            label = _d_label(item.id, detail(item), when, flow)
            out.append(f'{pad}"{lay.node_id(item.id)}" [{shape}, label="{label}"];')
            if item.compensate is not None:
                out.append(
                    f'{pad}"c_{_safe(item.id)}" [shape=note, style=filled, fillcolor="#fff4e0", '
                    f'label="{_d_label(_undo(item))}"];'
                )
        elif what == "open":
            assert isinstance(item, str)
            _, title = item.split("\0")
            cluster += 1
            out.append(f'{pad}subgraph "cluster_{cluster}" {{')
            out.append(f'{pad}  label="{dot_escape(title)}"; style="rounded,dashed";')
            depth += 1
        elif what == "close":
            depth -= 1
            out.append("  " * depth + "}")
        else:
            assert isinstance(item, Node)
            out.append(
                f'{pad}"j_{_safe(item.id)}" [shape=invtrapezium, label="{_d_label("join " + item.id)}"];'
            )
    for missing in lay.missing:
        label = _d_label(missing, "(no such step)")
        out.append(f'  "n_{_safe(missing)}" [shape=box, style=dashed, label="{label}"];')
    out.append('  "end_ok" [shape=doublecircle, label="end"];')
    if lay.uses_fail:
        out.append('  "end_fail" [shape=doublecircle, label="failed"];')
    for edge in lay.edges:
        attrs = []
        if edge.label:
            attrs.append(f'label="{dot_escape(edge.label)}"')
        if edge.style == "catch":
            attrs += ["style=dashed", 'color="#c0392b"', 'fontcolor="#c0392b"']
        elif edge.style == "undo":
            attrs += ["style=dotted", "arrowhead=none", 'color="#999999"']
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        out.append(f'  "{edge.source}" -> "{edge.target}"{suffix};')
    out.append("}")
    return "\n".join(out) + "\n"
