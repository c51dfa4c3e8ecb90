"""Control-flow analysis of a compiled graph, computed once per file and shared by the checks.

Every scope (the top level, each parallel branch, each foreach body) is its own control-flow graph:
a step's edges go to steps of the same list or to the end of the list (``None``). Edges:

* ``next``: the step succeeded (or a ``switch`` case, ``default`` or ``fallthrough``);
* ``skip``: the step's ``if`` was false — it still *counts as completed* (output null), but nothing
  inside it ran (a skipped parallel did not run its branches);
* ``succeed``: a ``succeed`` step ends its list;
* ``catch``: the step failed and a catch clause jumped — the step did *not* complete.

Two forward dataflow analyses run over those edges, with step sets as integer bitsets (linear-ish:
a handful of passes over ~40 steps):

* **must** — steps guaranteed to have completed on *every* path reaching a point (intersection);
* **may** — steps that completed on *some* path reaching it (union).

Each scope is solved relative to its own entry, innermost scopes first, so a parallel step can
contribute "everything each branch guarantees at its end" on its success edge (the join); a foreach
contributes nothing from its body (body steps are addressable only inside the body). The absolute sets
of a nested step are its scope-local set plus what was guaranteed before its owner started — which
is why a step in one branch never sees a sibling branch's steps.

Constant conditions (``if: false``, ``"{{ true }}"``, anything without names that renders to a
native value) prune edges, so "impossible" exits do not count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from dsl.graph import TOP_SCOPE, Graph, Node
from dsl.templates import is_template, parse, render_string

if TYPE_CHECKING:
    from dsl.checks import CheckContext

Phase = Literal["before", "output", "compensate"]
EdgeKind = Literal["next", "skip", "case", "default", "fallthrough", "succeed", "catch"]
BAD = "\0bad"  # sink for jumps to unknown ids or into another scope (the targets check reports them)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str | None  # a step of the same scope, None = the end of the scope, BAD = invalid jump
    kind: EdgeKind
    index: int = 0  # which switch case / catch clause


@dataclass(frozen=True)
class Verdict:
    """What a ``steps.X`` reference at some point means.

    ``kind``: ``ok``; ``unknown`` (no such step); ``foreach-body`` (X is inside the body of foreach
    ``owner`` and the reference is outside it); ``sibling-branch`` (X is in another branch of parallel
    ``owner``); ``not-completed`` (X ran on some path but not on all); ``never-before`` (no path runs X
    before this point). ``own`` marks a step reading its own output outside its compensation.
    """

    kind: Literal["ok", "unknown", "foreach-body", "sibling-branch", "not-completed", "never-before"]
    owner: str | None = None
    own: bool = False


@dataclass
class _Local:
    """Scope-local solution (bitsets relative to the scope's entry)."""

    reachable: list[str] = field(default_factory=list)  # in document order
    must_in: dict[str, int] = field(default_factory=dict)
    may_in: dict[str, int] = field(default_factory=dict)
    exit_must: int = 0
    exit_may: int = 0
    exit_reachable: bool = False


def const_truth(value: Any) -> bool | None:
    """The truth of a condition known without running anything, else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if value is None or not is_template(value):
        return None
    try:
        parsed = parse(value)
        if parsed.references or not parsed.native:
            return None
        return bool(render_string(value, {}))
    except Exception:  # TemplateError or anything else: not a constant we can trust
        return None


class Flow:
    """Edges, reachability, must/may-have-completed sets and loops of one compiled graph."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._witnesses: dict[tuple[str | None, str], list[str] | None] = {}
        self.ids: list[str] = document_order(graph)
        self.bit: dict[str, int] = {sid: 1 << i for i, sid in enumerate(self.ids)}
        self.universe = (1 << len(self.ids)) - 1
        self.edges: dict[str, tuple[Edge, ...]] = {}
        self.may_run: dict[str, bool] = {}
        for sid, node in graph.nodes.items():
            self.edges[sid], self.may_run[sid] = self._edges(node)
        self.local: dict[str, _Local] = {}
        self.inner_must: dict[str, int] = {}
        self.inner_may: dict[str, int] = {}
        self.chains: dict[str, tuple[str, ...]] = {s: self._chain(s) for s in graph.scopes}
        for scope in sorted(graph.scopes, key=lambda s: -len(self.chains[s])):  # innermost first
            self.local[scope] = self._solve(scope)
        self.reachable: set[str] = set()
        self.scope_reached: dict[str, bool] = {}
        self.must_in: dict[str, int] = {}
        self.may_in: dict[str, int] = {}
        for scope in sorted(graph.scopes, key=lambda s: len(self.chains[s])):  # outermost first
            self._absolute(scope)

    # ---------------------------------------------------------------------------------- structure

    def _chain(self, scope: str) -> tuple[str, ...]:
        out = [scope]
        while scope != TOP_SCOPE:
            owner = self.graph.scopes[scope].owner
            if owner is None or owner not in self.graph.nodes or self.graph.nodes[owner].scope in out:
                break  # (the last test guards hand-made graphs against ownership cycles)
            scope = self.graph.nodes[owner].scope
            out.append(scope)
        return tuple(out)

    def _target(self, node: Node, target: Any) -> str | None:
        if target is None:
            return None
        other = self.graph.nodes.get(target) if isinstance(target, str) else None
        if other is None or other.scope != node.scope:
            return BAD
        return target

    def _edges(self, node: Node) -> tuple[tuple[Edge, ...], bool]:
        sid = node.id
        truth = const_truth(node.when)
        may_skip = node.when is not None and truth is not True
        may_run = node.when is None or truth is not False
        out: list[Edge] = []
        if may_skip:
            out.append(Edge(sid, self._target(node, node.next), "skip"))
        if may_run:
            if node.kind == "succeed":
                out.append(Edge(sid, None, "succeed"))
            elif node.kind == "switch":
                taken = False
                for i, case in enumerate(node.config.get("cases") or ()):
                    t = const_truth(case.get("if")) if case.get("if") is not None else None
                    if t is False:
                        continue
                    out.append(Edge(sid, self._target(node, case.get("goto")), "case", i))
                    if t is True:
                        taken = True
                        break
                if not taken:
                    default = node.config.get("default")
                    if default is not None:
                        out.append(Edge(sid, self._target(node, default), "default"))
                    else:
                        out.append(Edge(sid, self._target(node, node.next), "fallthrough"))
            elif node.kind != "fail":
                out.append(Edge(sid, self._target(node, node.next), "next"))
            for i, clause in enumerate(node.catch):
                if clause.goto is not None:  # a `raise` entry fails the scope: no edge
                    out.append(Edge(sid, self._target(node, clause.goto), "catch", i))
        return tuple(out), may_run

    # ------------------------------------------------------------------------------- dataflow

    def _contrib(self, edge: Edge, must: int, may: int) -> tuple[int, int]:
        b = self.bit[edge.source]
        if edge.kind == "catch":
            return must, may | self.inner_may.get(edge.source, 0)
        if edge.kind == "skip":
            return must | b, may | b
        return (
            must | b | self.inner_must.get(edge.source, 0),
            may | b | self.inner_may.get(edge.source, 0),
        )

    def _solve(self, scope_id: str) -> _Local:
        scope = self.graph.scopes[scope_id]
        result = _Local()
        nodes = [n for n in scope.nodes if n in self.graph.nodes]
        if not nodes:
            result.exit_reachable = True
            self._summarise(scope_id, result)
            return result
        entry = nodes[0]
        seen = {entry}
        stack = [entry]
        while stack:  # reachability inside the scope
            for e in self.edges[stack.pop()]:
                if e.target is not None and e.target != BAD and e.target not in seen:
                    seen.add(e.target)
                    stack.append(e.target)
        order = [n for n in nodes if n in seen]
        result.reachable = order
        preds: dict[str | None, list[Edge]] = {n: [] for n in order}
        preds[None] = []
        for n in order:
            for e in self.edges[n]:
                if e.target != BAD:
                    preds[e.target].append(e)
        must = {n: self.universe for n in order}
        may = {n: 0 for n in order}
        changed = True
        while changed:  # converges in a few passes: sets only shrink (must) / grow (may)
            changed = False
            for n in order:
                m, y = (0, 0) if n == entry else (self.universe, 0)
                for e in preds[n]:
                    cm, cy = self._contrib(e, must[e.source], may[e.source])
                    m &= cm
                    y |= cy
                if m != must[n] or y != may[n]:
                    must[n], may[n] = m, y
                    changed = True
        result.must_in, result.may_in = must, may
        exit_must, exit_may = self.universe, 0
        for e in preds[None]:
            cm, cy = self._contrib(e, must[e.source], may[e.source])
            exit_must &= cm
            exit_may |= cy
        result.exit_must, result.exit_may = exit_must, exit_may
        result.exit_reachable = bool(preds[None])
        self._summarise(scope_id, result)
        return result

    def _summarise(self, scope_id: str, result: _Local) -> None:
        """What a parallel contributes at its join (must) and what may have run inside it (may)."""
        owner = self.graph.scopes[scope_id].owner
        if owner is None or owner not in self.graph.nodes or self.graph.nodes[owner].kind != "parallel":
            return
        ran = 0
        for n in result.reachable:
            ran |= self.bit[n] | self.inner_may.get(n, 0)
        must = result.exit_must
        if self.graph.nodes[owner].config.get("wait_for"):
            must = 0  # a race: a branch that did not win was stopped wherever it was
        self.inner_must[owner] = self.inner_must.get(owner, 0) | must
        self.inner_may[owner] = self.inner_may.get(owner, 0) | ran

    def _absolute(self, scope_id: str) -> None:
        owner = self.graph.scopes[scope_id].owner
        if scope_id == TOP_SCOPE or owner is None or owner not in self.graph.nodes:
            reached, base_must, base_may = scope_id == TOP_SCOPE, 0, 0
        else:
            reached = owner in self.reachable and self.may_run[owner]
            base_must, base_may = self.must_in.get(owner, self.universe), self.may_in.get(owner, 0)
        self.scope_reached[scope_id] = reached
        local = self.local[scope_id]
        for n in self.graph.scopes[scope_id].nodes:
            if n not in self.graph.nodes:
                continue
            if reached and n in local.must_in:
                self.reachable.add(n)
                self.must_in[n] = local.must_in[n] | base_must
                self.may_in[n] = local.may_in[n] | base_may
            else:
                self.must_in[n], self.may_in[n] = self.universe, 0

    # ------------------------------------------------------------------------------- questions

    def names(self, bits: int) -> list[str]:
        return [sid for sid in self.ids if bits & self.bit[sid]]

    def available(self, site: str | None, phase: Phase = "before") -> tuple[int, int]:
        """(must, may) bitsets of completed steps when a template of ``site`` is evaluated.

        ``site`` None is the workflow's top-level ``output`` (evaluated when the top level ends).
        """
        if site is None:
            top = self.local[TOP_SCOPE]
            return top.exit_must, top.exit_may
        must, may = self.must_in[site], self.may_in[site]
        if phase == "before":
            return must, may
        inner_must, inner_may = self.inner_must.get(site, 0), self.inner_may.get(site, 0)
        if phase == "output":  # after the step ran (and joined), before its own output exists
            return must | inner_must, may | inner_may
        b = self.bit[site]  # compensate: the step itself has completed
        return must | b | inner_must, may | b | inner_may

    def completed(self, site: str | None, phase: Phase = "before") -> list[str]:
        """Steps guaranteed to have completed (document order) — for messages and tools."""
        return self.names(self.available(site, phase)[0])

    def verdict(self, site: str | None, phase: Phase, target: str) -> Verdict:
        """Is ``steps.<target>`` readable by a template of ``site`` in ``phase``?"""
        node = self.graph.nodes.get(target)
        if node is None:
            return Verdict("unknown")
        site_chain = self.chains.get(self.graph.nodes[site].scope if site else TOP_SCOPE, (TOP_SCOPE,))
        site_scopes = set(site_chain)
        problem: Verdict | None = None
        for scope in self.chains.get(node.scope, ()):
            if scope in site_scopes:
                break
            owner = self.graph.scopes[scope].owner
            if owner is None or owner not in self.graph.nodes:
                continue
            if self.graph.nodes[owner].kind == "foreach":
                problem = Verdict("foreach-body", owner)
            elif any(s != scope and self.graph.scopes[s].owner == owner for s in site_scopes):
                problem = Verdict("sibling-branch", owner)
        if problem is not None:  # the outermost reason is the one to fix
            return problem
        own = target == site and phase != "compensate"
        must, may = self.available(site, phase)
        b = self.bit[target]
        if must & b and not own:
            return Verdict("ok")
        return Verdict("not-completed" if may & b else "never-before", own=own)

    def witness(self, site: str | None, target: str) -> list[str] | None:
        """A path that reaches ``site`` without completing ``target`` (for messages), or None.

        The path lives in the innermost scope that holds both (or their enclosing parallel/foreach
        steps), from its entry to the site's position, along edges that do not complete the target (a
        failing step's catch edge does not; nor does the join of a parallel whose branch may skip
        it). Such a parallel is shown with the branch path that skips it: ``fan[x1 → gate → x3]``.
        """
        key = (site, target)
        if key not in self._witnesses:
            self._witnesses[key] = self._witness(site, target)
        return self._witnesses[key]

    def _witness(self, site: str | None, target: str) -> list[str] | None:
        if target not in self.graph.nodes:
            return None
        site_chain = self.chains[self.graph.nodes[site].scope if site else TOP_SCOPE]
        target_chain = self.chains[self.graph.nodes[target].scope]
        common = next((s for s in site_chain if s in set(target_chain)), None)
        if common is None:
            return None
        position = self._position(site, site_chain, common)
        if position is not None and position == self._position(target, target_chain, common):
            return None
        return self._avoiding(common, position, target, target_chain)

    def _avoiding(
        self, scope_id: str, goal: str | None, target: str, target_chain: tuple[str, ...]
    ) -> list[str] | None:
        local = self.local[scope_id]
        if not local.reachable:
            return None
        b = self.bit[target]
        entry = local.reachable[0]
        parent: dict[str, tuple[str, Edge] | None] = {entry: None}
        queue = [entry]
        end: tuple[str, Edge | None] | None = None
        for n in queue:  # breadth-first: the shortest such path
            if n == goal:
                end = (n, None)
                break
            for e in self.edges[n]:
                if self._contrib(e, 0, 0)[0] & b:
                    continue
                if goal is None and e.target is None:
                    end = (n, e)
                    break
                t = e.target
                if t is None or t == BAD or t in parent or t not in local.must_in:
                    continue
                parent[t] = (n, e)
                queue.append(t)
            if end is not None:
                break
        if end is None:
            return None
        steps: list[tuple[str, Edge | None]] = [end]
        while (prev := parent[steps[-1][0]]) is not None:
            steps.append(prev)
        out = []
        for n, edge in reversed(steps):
            label = n
            if edge is not None and edge.kind in ("next", "succeed") and n != target:
                inner = next((s for s in target_chain if self.graph.scopes[s].owner == n), None)
                if inner is not None and self.graph.nodes[n].kind == "parallel":
                    branch = self._avoiding(inner, None, target, target_chain)
                    if branch:
                        label = f"{n}[{' → '.join(branch)}]"
            out.append(label)
        return out

    def _position(self, node: str | None, chain: tuple[str, ...], scope: str) -> str | None:
        below = None
        for s in chain:
            if s == scope:
                break
            below = s
        if below is None:
            return node
        return self.graph.scopes[below].owner

    # ---------------------------------------------------------------------------------- loops

    def unreachable(self) -> list[str]:
        """Steps no path reaches, in document order, whose own scope is reached (no cascades)."""
        out = []
        for scope_id, scope in self.graph.scopes.items():
            if not self.scope_reached.get(scope_id):
                continue
            out.extend(n for n in scope.nodes if n in self.graph.nodes and n not in self.reachable)
        order = {sid: i for i, sid in enumerate(self.ids)}
        return sorted(out, key=order.__getitem__)

    def endless_loops(self) -> list[list[str]]:
        """Reachable cycles from which no path leaves: the end of their list, a succeed or fail step,
        or a jump that leaves the cycle (a switch case, a catch) — each as a list in document order."""
        loops: list[list[str]] = []
        order = {sid: i for i, sid in enumerate(self.ids)}
        for scope_id, local in self.local.items():
            if not self.scope_reached.get(scope_id):
                continue
            nodes = local.reachable
            succ = {n: [e.target for e in self.edges[n] if e.target in local.must_in] for n in nodes}
            exits = {
                n
                for n in nodes
                if (self.graph.nodes[n].kind == "fail" and self.may_run[n])
                or any(e.target is None or e.target == BAD for e in self.edges[n])
            }
            can_leave = _backwards_closure(exits, succ)
            for component in _sccs(nodes, succ):
                if component[0] in can_leave:
                    continue
                if len(component) > 1 or component[0] in succ[component[0]]:
                    loops.append(sorted(component, key=order.__getitem__))
        return sorted(loops, key=lambda c: order[c[0]])

    def catch_loops(self, errors: frozenset[str]) -> list[tuple[str, int, list[str]]]:
        """Loops closed by a catch on one of ``errors``: (catching step, clause index, the loop's
        steps in document order), when nothing on the loop decides to leave it — no switch case,
        default, fall-through or skipped ``if`` that goes elsewhere. Then a step that keeps failing
        that way repeats for ever (the catching step's own success is the only way out)."""
        out: list[tuple[str, int, list[str]]] = []
        order = {sid: i for i, sid in enumerate(self.ids)}
        for scope_id, local in self.local.items():
            if not self.scope_reached.get(scope_id):
                continue
            nodes = set(local.reachable)
            succ = {n: [e.target for e in self.edges[n] if e.target in nodes] for n in nodes}
            for sid in local.reachable:
                for edge in self.edges[sid]:
                    if edge.kind != "catch" or edge.target not in nodes:
                        continue
                    if not errors & set(self.graph.nodes[sid].catch[edge.index].errors):
                        continue
                    loop = _forward({edge.target}, succ) & _backwards_closure({sid}, succ)
                    if sid not in loop:
                        continue  # the handler never comes back to the failing step
                    decides = any(
                        e.kind in ("case", "default", "fallthrough", "skip") and e.target not in loop
                        for n in loop
                        for e in self.edges[n]
                    )
                    if not decides:
                        out.append((sid, edge.index, sorted(loop, key=order.__getitem__)))
        return sorted(out, key=lambda c: (order[c[0]], c[1]))


def _forward(start: set[str], succ: dict[str, list[Any]]) -> set[str]:
    seen = set(start)
    todo = list(start)
    while todo:
        for nxt in succ.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def document_order(graph: Graph) -> list[str]:
    """Node ids as the file lists them (pre-order), whatever order ``graph.nodes`` has."""
    out: list[str] = []
    seen: set[str] = set()

    def walk(scope_id: str) -> None:
        scope = graph.scopes.get(scope_id)
        for sid in scope.nodes if scope else ():
            node = graph.nodes.get(sid)
            if node is None or sid in seen:
                continue
            seen.add(sid)
            out.append(sid)
            if node.kind == "parallel":
                for branch in node.config.get("branches") or ():
                    walk(branch)
            elif node.kind == "foreach":
                walk(node.config.get("body") or sid)

    walk(TOP_SCOPE)
    out.extend(sid for sid in graph.nodes if sid not in seen)
    return out


def _backwards_closure(start: set[str], succ: dict[str, list[Any]]) -> set[str]:
    preds: dict[str, list[str]] = {n: [] for n in succ}
    for n, targets in succ.items():
        for t in targets:
            preds[t].append(n)
    seen = set(start)
    stack = list(start)
    while stack:
        for p in preds[stack.pop()]:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def _sccs(nodes: Iterable[str], succ: dict[str, list[Any]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit on long lists)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            n, i = work.pop()
            if i == 0:
                index[n] = low[n] = counter
                counter += 1
                stack.append(n)
                on_stack.add(n)
            targets = succ[n]
            if i < len(targets):
                work.append((n, i + 1))
                t = targets[i]
                if t not in index:
                    work.append((t, 0))
                elif t in on_stack:
                    low[n] = min(low[n], index[t])
                continue
            if low[n] == index[n]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == n:
                        break
                out.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[n])
    return out


def analyze(graph: Graph) -> Flow:
    return Flow(graph)


def flow_of(ctx: CheckContext) -> Flow | None:
    """The shared analysis of ``ctx.graph`` (computed on first use), or None without a graph."""
    if ctx.graph is None:
        return None
    flow = ctx.extra.get("flow")
    if flow is None or flow.graph is not ctx.graph:
        flow = ctx.extra["flow"] = Flow(ctx.graph)
    return flow
