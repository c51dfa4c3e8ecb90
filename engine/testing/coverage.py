"""Path coverage: which of a workflow's paths the cases exercised, judged from the execution history.

Items per workflow (each with the line of the YAML it is about):

* ``step``        every step ran at least once;
* ``skip``        a step with ``if:`` was skipped at least once;
* ``switch``      every distinct target of a switch was taken (each case's ``goto``, the default, or
                  falling through to the next step);
* ``catch``       every catch clause handled an error (the first clause that matches, after retries);
* ``retries``     a step whose retry policy allows more than one attempt failed its last attempt with
                  an error the policy retries (the exhaustion path);
* ``timeout``     a ``wait`` for an event with a ``timeout`` timed out;
* ``compensate``  every compensation ran.

The history is the interpreter's own (``run``/``skip``/``compensate`` entries per node), and the
decisions are re-derived with the engine's own rules (:func:`engine.retry.retryable`,
:func:`engine.model.error_matches`), so coverage cannot disagree with what the runtime did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsl.graph import Catch, Graph, Node, Retry
from dsl.source import Document, JsonPath
from engine.model import StepError, error_matches
from engine.retry import NO_RETRY_KINDS, choose, covers, retryable

END = "(end)"
RETRIED_KINDS = ("http", "action", "workflow")  # the steps whose retry policy can run out


@dataclass(frozen=True)
class Item:
    workflow: str
    kind: str  # step, skip, switch, catch, retries, timeout, compensate
    step: str
    detail: str = ""  # the switch target / catch clause
    line: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.step, self.detail)

    def label(self) -> str:
        words = {
            "step": f"step {self.step}",
            "skip": f"step {self.step} skipped (if false)",
            "switch": f"switch {self.step} → {self.detail}",
            "catch": f"catch of {self.step}: {self.detail}",
            "retries": f"retries of {self.step} exhausted" + (f" ({self.detail})" if self.detail else ""),
            "timeout": f"{self.step} timed out waiting",
            "compensate": f"compensation of {self.step}",
        }
        return words[self.kind]


@dataclass
class WorkflowCoverage:
    graph: Graph
    doc: Document | None
    items: list[Item]
    hit: set[tuple[str, str, str]] = field(default_factory=set)  # Item.key of what ran

    @property
    def covered(self) -> list[Item]:
        return [i for i in self.items if i.key in self.hit]

    @property
    def percent(self) -> float:
        return 100.0 if not self.items else 100.0 * len(self.covered) / len(self.items)

    def missed(self) -> list[Item]:
        return [i for i in self.items if i.key not in self.hit]


def _step_paths(doc: Document | None) -> dict[str, JsonPath]:
    if doc is None:
        return {}
    from dsl.checks import CheckContext

    return {s.id: s.path for s in CheckContext(doc).steps if not s.broken}


def items_of(graph: Graph, doc: Document | None) -> list[Item]:
    paths = _step_paths(doc)
    out: list[Item] = []
    for node in graph.nodes.values():
        where = paths.get(node.id)

        def line(*sub: str | int, key: bool = True, where: JsonPath | None = where) -> int:
            if doc is None or where is None:
                return 0
            full = (*where, *sub)
            return (doc.key_at(full) if key else doc.at(full)).line

        out.append(Item(graph.name, "step", node.id, "", line("id")))
        if node.when is not None:
            out.append(Item(graph.name, "skip", node.id, "", line("if")))
        if node.kind == "switch":
            for target, index in _switch_targets(node):
                at = line("switch", index, key=False) if index is not None else line("switch")
                out.append(Item(graph.name, "switch", node.id, target, at))
        for i, clause in enumerate(node.catch):
            out.append(Item(graph.name, "catch", node.id, _clause(clause), line("catch", i, key=False)))
        if node.kind in RETRIED_KINDS:
            body = _get(doc, where)
            written = isinstance(body, Mapping) and "retry" in body
            policies = _policies(node)
            for i, policy in enumerate(policies):
                if policy.max_attempts <= 1:
                    continue
                if not written:
                    at = line(node.kind)
                elif len(policies) > 1:
                    at = line("retry", i, key=False)
                else:
                    at = line("retry")
                out.append(Item(graph.name, "retries", node.id, _policy_name(policies, i), at))
        if _can_time_out(node):
            body = _get(doc, where)
            wait = body.get("wait") if isinstance(body, Mapping) else None
            at = (
                line("wait", "timeout")
                if isinstance(wait, Mapping) and "timeout" in wait
                else line("timeout")
            )
            out.append(Item(graph.name, "timeout", node.id, "", at))
        if node.compensate is not None:
            out.append(Item(graph.name, "compensate", node.id, "", line("compensate")))
    return out


def _policies(node: Node) -> tuple[Retry, ...]:
    """A step's retry policies: its `retry` list, or its one policy."""
    return tuple(node.retries) if node.retries else (node.retry,)


def _policy_name(policies: tuple[Retry, ...], index: int) -> str:
    if len(policies) == 1:
        return ""
    return f"policy {index + 1} ({', '.join(policies[index].on)})"


def _clause(clause: Catch) -> str:
    target = clause.goto if clause.goto is not None else f"raise {(clause.raises or {}).get('name')}"
    return f"{', '.join(clause.errors)} → {target}"


def _can_time_out(node: Node) -> bool:
    """A wait for an event, a child workflow or a fan-out's join, with a timeout (its own or the
    step's)."""
    if node.kind == "wait" and node.config.get("mode") == "event":
        return bool(node.config.get("timeout_ms") or node.timeout_ms)
    return node.kind in ("workflow", "parallel", "foreach") and bool(node.timeout_ms)


def _get(doc: Document | None, path: JsonPath | None) -> Any:
    if doc is None or path is None:
        return None
    value = doc.value
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _switch_targets(node: Node) -> list[tuple[str, int | None]]:
    """(target, case index) for each distinct target; the default/fall-through has its own."""
    seen: dict[str, int | None] = {}
    cases = node.config.get("cases") or ()
    for i, case in enumerate(cases):
        seen.setdefault(case["goto"], i)
    default = node.config.get("default")
    if default is not None:
        seen.setdefault(default, len(cases))
    else:
        seen.setdefault(node.next or END, None)
    return list(seen.items())


def hits(graph: Graph, history: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """The :attr:`Item.key` of everything one execution's history exercised."""
    # a step that parked (a wait, a child, a fan-out) ran, even if it was stopped before it finished
    found: set[tuple[str, str, str]] = {
        ("step", h["step"], "") for h in history if h.get("event") == "park" and h.get("step") in graph.nodes
    }
    entries = [h for h in history if h.get("phase") in ("run", "skip", "compensate") and h.get("step")]
    for n, h in enumerate(entries):
        step = h["step"]
        node = graph.nodes.get(step)
        if node is None:
            continue
        phase, status = h["phase"], h.get("status")
        if phase == "compensate":
            found.add(("compensate", step, ""))
            continue
        if phase == "skip":
            found.add(("skip", step, ""))
            continue
        found.add(("step", step, ""))
        if node.kind == "switch" and status == "ok":
            branch = h.get("branch") or ""
            after = next(
                (
                    e["step"]
                    for e in entries[n + 1 :]
                    if e["phase"] in ("run", "skip") and (e.get("branch") or "") == branch
                ),
                END,
            )
            found.add(("switch", step, after))
        if status == "error":
            name = h.get("error") or ""
            attempt = int(h.get("attempt") or 1)
            error = StepError(name, h.get("message") or "")
            if _can_time_out(node) and name == "timeout":
                found.add(("timeout", step, ""))
            # the engine's own decision (engine.decide.after_error): the policy about this error,
            # retried while it allows; then the first catch clause that matches
            policies = _policies(node)
            policy = choose(node.retries, error) if node.retries else node.retry
            if policy is not None and node.kind not in NO_RETRY_KINDS and retryable(policy, error, attempt):
                continue
            if policy is not None and policy.max_attempts > 1 and attempt >= policy.max_attempts:
                if covers(policy, error):
                    found.add(("retries", step, _policy_name(policies, policies.index(policy))))
            for clause in node.catch:
                if any(error_matches(p, name) for p in clause.errors):
                    found.add(("catch", step, _clause(clause)))
                    break
    return found


def measure(
    graphs: Mapping[str, Graph],
    docs: Mapping[str, Document],
    runs: Iterable[tuple[str, list[dict[str, Any]]]],
    tested: Iterable[str],
) -> dict[str, WorkflowCoverage]:
    """Coverage of every tested workflow (and every workflow that ran as a child), from the
    ``(workflow name, history)`` of every execution of every case."""
    out: dict[str, WorkflowCoverage] = {}

    def entry(name: str) -> WorkflowCoverage | None:
        if name not in out and name in graphs:
            graph = graphs[name]
            out[name] = WorkflowCoverage(graph, docs.get(name), items_of(graph, docs.get(name)))
        return out.get(name)

    for name in tested:
        entry(name)
    for name, history in runs:
        cov = entry(name)
        if cov is not None:
            cov.hit |= hits(cov.graph, history)
    return dict(sorted(out.items()))


def total(coverages: Mapping[str, WorkflowCoverage]) -> float:
    items = sum(len(c.items) for c in coverages.values())
    hit = sum(len(c.covered) for c in coverages.values())
    return 100.0 if not items else 100.0 * hit / items


def table(coverages: Mapping[str, WorkflowCoverage]) -> str:
    kinds = ("step", "skip", "switch", "catch", "retries", "timeout", "compensate")
    heads = ("workflow", "steps", "if-skips", "switch", "catch", "retries", "timeouts", "compens.", "cover")
    rows = []
    for name, cov in coverages.items():
        row = [name]
        for kind in kinds:
            all_ = [i for i in cov.items if i.kind == kind]
            row.append(f"{sum(1 for i in all_ if i.key in cov.hit)}/{len(all_)}" if all_ else "-")
        row.append(f"{cov.percent:.0f}%" if cov.percent in (0.0, 100.0) else f"{cov.percent:.1f}%")
        rows.append(row)
    rows.append(["TOTAL", *[""] * len(kinds), f"{total(coverages):.1f}%"])
    widths = [max(len(str(r[i])) for r in [heads, *rows]) for i in range(len(heads))]
    lines = []
    for r in [heads, *rows]:
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    missed = [i for cov in coverages.values() for i in sorted(cov.missed(), key=lambda i: i.line)]
    for item in missed:
        where = coverages[item.workflow].doc
        file = where.file if where is not None else item.workflow
        lines.append(f"  never: {file}:{item.line}: {item.label()}")
    return "\n".join(lines)


def listing(cov: WorkflowCoverage) -> str:
    """The workflow's YAML with a gutter: ``!`` marks a line whose path never ran (and says which),
    ``>`` a line whose paths all ran."""
    if cov.doc is None:
        return ""
    by_line: dict[int, list[Item]] = {}
    for item in cov.items:
        by_line.setdefault(item.line, []).append(item)
    lines = cov.doc.text.splitlines()
    width = len(str(len(lines)))
    out = [f"{cov.doc.file}  ({cov.percent:.1f}% of {len(cov.items)} paths)"]
    for n, text in enumerate(lines, start=1):
        items = by_line.get(n, [])
        missed = [i for i in items if i.key not in cov.hit]
        mark = "!" if missed else (">" if items else " ")
        note = ("   # never: " + "; ".join(i.label() for i in missed)) if missed else ""
        out.append(f"{n:>{width}} {mark} {text}{note}")
    return "\n".join(out)
