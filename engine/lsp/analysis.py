"""What the editor asks about one workflow text: diagnostics, hovers, completions, definitions.

Positions here are 0-based lines and 0-based *code point* columns (hopflow's unit); the server
converts them to the client's units (:mod:`engine.lsp.positions`). Everything works on a file that
is half typed: when the YAML does not load, step ids are found line by line instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from dsl.diagnostics import Diagnostic
from dsl.graph import KINDS, TOP_SCOPE
from dsl.schema import load_schema
from dsl.source import Document, LoadError, loads

if TYPE_CHECKING:
    from dsl.validate import Result

# the names a template may read, for hovers and completions (docs/language.md, "Template scopes")
SCOPES: dict[str, str] = {
    "input": "the start payload, validated against the workflow's `input` schema",
    "steps": "`steps.ID.output`: the output of a step that has completed on every path to here",
    "vars": "variables assigned by `set` steps so far, and declared `vars` (`vars.NAME`)",
    "env": "the environment variables declared under `env:` (and only those)",
    "execution": "`execution.id`, `execution.workflow`, `execution.started_at` (the same on every retry)",
    "result": "only in a step's `output`: the step's raw result",
    "error": "in the step a `catch` jumps to, and in compensations (the failure that started the "
    "unwinding): `error.name`, `error.message`, `error.step`, `error.attempt`",
    "index": "only inside a `foreach` body: the current item's 0-based position",
    "item": "only inside a `foreach` body: the current item (the name is the foreach's `as`, default `item`)",
    "duration": "`duration('2h')`: a duration in seconds",
    "range": "`range(n)`: the numbers 0 … n-1 (capped)",
    "now": "`now()`: the execution's clock as ISO-8601 UTC (virtual under --fast-forward)",
    "uuid": "`uuid()`: a UUID that is the same each time the step runs (retries, redeliveries)",
}
ROOT_SCOPES = ("input", "steps", "vars", "env", "execution")

_WORD = re.compile(r"[A-Za-z0-9_]+")
_TOKEN = re.compile(r"[^\s:,\[\]{}'\"]+")
_JUMP_BEFORE = re.compile(r"\b(next|goto|default)\s*:\s*[\"']?$")
_JUMP_PARTIAL = re.compile(r"\b(?:next|goto|default)\s*:\s*[\"']?([a-z0-9_]*)$")
_STEPS_BEFORE = re.compile(r"\bsteps\s*\.\s*$")
_STEPS_PARTIAL = re.compile(r"\bsteps\.([a-z0-9_]*)$")
_ID_BEFORE = re.compile(r"(?:^|[\s{,-])id\s*:\s*[\"']?$")
_ID_LINE = re.compile(r"^(\s*(?:-\s+)?(?:\{\s*)?id\s*:\s*[\"']?)([a-z][a-z0-9_]*)")
_ROOT_PARTIAL = re.compile(r"(?<![\w.])([a-z_]*)$")


@dataclass(frozen=True)
class Span:
    line: int  # 0-based
    start: int  # 0-based code point column
    end: int


@dataclass(frozen=True)
class Step:
    id: str
    kind: str | None
    scope: str
    span: Span  # where its id is written


class Analysis:
    """One version of one document."""

    def __init__(self, text: str, file: str = "<buffer>") -> None:
        self.text = text
        self.file = file
        self.lines = re.split(r"\r\n|[\n\r]", text)

    # -- loading

    @cached_property
    def doc(self) -> Document | None:
        try:
            return loads(self.text, self.file)
        except LoadError:
            return None

    @cached_property
    def steps(self) -> dict[str, Step]:
        """Each step id → its first definition (from the loaded document, else line by line)."""
        found: dict[str, Step] = {}
        doc = self.doc
        if doc is not None:
            from dsl.checks import CheckContext

            for ref in CheckContext(doc).steps:
                if ref.broken or ref.id in found:
                    continue
                span = self._value_span(doc, (*ref.path, "id"), ref.id)
                if span is not None:
                    found[ref.id] = Step(ref.id, ref.kind, ref.scope, span)
            if found:
                return found
        for number, line in enumerate(self.lines):
            match = _ID_LINE.match(line)
            if match and match.group(2) not in found:
                span = Span(number, match.start(2), match.end(2))
                found[match.group(2)] = Step(match.group(2), self._kind_near(number), TOP_SCOPE, span)
        return found

    def _value_span(self, doc: Document, path: tuple[str | int, ...], value: str) -> Span | None:
        if path not in doc.values:
            return None
        position = doc.values[path]
        line = position.line - 1
        start = position.column - 1
        text = self.lines[line] if 0 <= line < len(self.lines) else ""
        if text[start : start + 1] in ("'", '"'):
            start += 1
        return Span(line, start, start + len(value))

    def _kind_near(self, line: int) -> str | None:
        """The kind key in the few lines after an id line (for the line-by-line fallback)."""
        indent = len(self.lines[line]) - len(self.lines[line].lstrip(" -"))
        for text in self.lines[line + 1 : line + 12]:
            stripped = text.strip()
            if stripped.startswith("- ") or (stripped and len(text) - len(text.lstrip()) < indent):
                break
            key = stripped.split(":", 1)[0]
            if key in KINDS:
                return key
        return None

    # -- diagnostics

    @cached_property
    def result(self) -> Result:
        """What ``hopflow validate`` finds in this text (the folder-level rules aside)."""
        from dsl.validate import validate_text

        return validate_text(self.text, self.file)

    def diagnostics(self) -> list[Diagnostic]:
        return list(self.result.diagnostics)

    def diagnostic_span(self, d: Diagnostic) -> Span:
        """The token a diagnostic points at (one character at least, unless the line is empty)."""
        line = max(0, d.position.line - 1)
        text = self.lines[line] if line < len(self.lines) else ""
        start = min(max(0, d.position.column - 1), len(text))
        match = _TOKEN.match(text, start)
        end = match.end() if match else min(start + 1, len(text))
        return Span(line, start, max(end, start))

    # -- what is under the cursor

    def word_at(self, line: int, column: int) -> tuple[str, int, int] | None:
        text = self.lines[line] if 0 <= line < len(self.lines) else ""
        for match in _WORD.finditer(text):
            if match.start() <= column <= match.end():
                return match.group(), match.start(), match.end()
        return None

    def step_reference_at(self, line: int, column: int) -> tuple[str, Span] | None:
        """A step id at the cursor: in ``next``/``goto``/``default``, in ``steps.ID``, or an ``id``."""
        word = self.word_at(line, column)
        if word is None:
            return None
        name, start, end = word
        before = self.lines[line][:start]
        if _JUMP_BEFORE.search(before) or _STEPS_BEFORE.search(before) or _ID_BEFORE.search(before):
            return name, Span(line, start, end)
        return None

    def definition(self, line: int, column: int) -> Step | None:
        found = self.step_reference_at(line, column)
        return self.steps.get(found[0]) if found else None

    def references(self, step_id: str) -> list[Span]:
        """Every place a step id is used (jumps and ``steps.ID``), for find-references."""
        out = []
        for number, text in enumerate(self.lines):
            for match in re.finditer(rf"(?<![\w.]){re.escape(step_id)}(?!\w)", text):
                if self.step_reference_at(number, match.start()) is not None and not _ID_BEFORE.search(
                    text[: match.start()]
                ):
                    out.append(Span(number, match.start(), match.end()))
        return out

    # -- hover

    def hover(self, line: int, column: int) -> tuple[str, Span] | None:
        """Markdown for the thing under the cursor, and its span."""
        ref = self.step_reference_at(line, column)
        if ref is not None:
            step = self.steps.get(ref[0])
            if step is None:
                return f"no step `{ref[0]}` in this file", ref[1]
            return self._step_hover(step), ref[1]
        word = self.word_at(line, column)
        if word is None:
            return None
        name, start, end = word
        span = Span(line, start, end)
        text = self.lines[line]
        before, after = text[:start], text[end:]
        if self._in_template(line, start) and not before.rstrip().endswith("."):
            if name in SCOPES:
                return f"**`{name}`** (template scope) — {SCOPES[name]}", span
            return None
        if after.lstrip().startswith(":"):
            described = _key_description(name)
            if described is not None:
                label = "step kind" if name in KINDS else "key"
                return f"**`{name}`** ({label}) — {described}", span
        return None

    def _step_hover(self, step: Step) -> str:
        kind = step.kind or "unknown kind"
        where = "" if step.scope == TOP_SCOPE else f", inside {_describe_scope(step.scope)}"
        lines = [f"**step `{step.id}`** — `{kind}` step, line {step.span.line + 1}{where}"]
        if step.kind is not None:
            described = _key_description(step.kind)
            if described:
                lines.append(described)
        lines.append(f"Read its output as `steps.{step.id}.output`.")
        return "\n\n".join(lines)

    def _in_template(self, line: int, column: int) -> bool:
        text = self.lines[line][:column]
        opened = max(text.rfind("{{"), text.rfind("{%"))
        closed = max(text.rfind("}}"), text.rfind("%}"))
        return opened >= 0 and opened > closed

    # -- completion

    def completions(self, line: int, column: int) -> list[tuple[str, str, str]]:
        """(label, detail, what) candidates at the cursor; ``what`` is "step" or "scope"."""
        text = self.lines[line][:column] if 0 <= line < len(self.lines) else ""
        if _JUMP_PARTIAL.search(text) or (_STEPS_PARTIAL.search(text) and self._in_template(line, column)):
            return [(sid, self._step_detail(s), "step") for sid, s in self.steps.items()]
        if self._in_template(line, column) and _ROOT_PARTIAL.search(text):
            return [(name, SCOPES[name], "scope") for name in SCOPES]
        return []

    def _step_detail(self, step: Step) -> str:
        where = "" if step.scope == TOP_SCOPE else f" in {_describe_scope(step.scope)}"
        return f"{step.kind or 'step'} step, line {step.span.line + 1}{where}"


def _describe_scope(scope: str) -> str:
    if "/" in scope:
        owner, branch = scope.rsplit("/", 1)
        return f"branch {branch} of parallel `{owner}`"
    return f"the body of foreach `{scope}`"


def _key_description(key: str) -> str | None:
    """The schema's description of a key: a step key first, then a top-level key, then any other."""
    schema = load_schema()
    step = schema["$defs"]["step"]["properties"]
    for properties in (step, schema["properties"], *_other_properties(schema)):
        entry = properties.get(key)
        if isinstance(entry, dict):
            described = entry.get("description") or _ref_description(schema, entry)
            if described:
                return str(described)
    return None


def _other_properties(schema: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for definition in schema["$defs"].values():
        if isinstance(definition, dict) and isinstance(definition.get("properties"), dict):
            yield definition["properties"]


def _ref_description(schema: dict[str, Any], entry: dict[str, Any]) -> str | None:
    ref = entry.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = schema["$defs"].get(ref[len("#/$defs/") :], {})
        return target.get("description") if isinstance(target, dict) else None
    return None
