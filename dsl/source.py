"""YAML text → plain Python values plus a map of source positions.

Everything after loading works on plain dicts/lists (so JSON Schema and the compiler see ordinary
data); diagnostics find their way back to the file through :class:`Document` paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

try:  # the C composer is several times faster; fall back silently where libyaml is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the platform's PyYAML build
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

from dsl.diagnostics import Diagnostic, Position

JsonPath = tuple[str | int, ...]


@dataclass(frozen=True)
class ScalarSpan:
    """Where a scalar's text sits in the file, so offsets inside a template map to line/column."""

    line: int  # 1-based line of the scalar's first character (the quote or block indicator)
    column: int  # 1-based column of that character
    style: str | None  # None (plain), "'", '"', "|", ">"
    end_line: int


@dataclass
class Document:
    """A loaded workflow file: its value, and where every key and value came from."""

    file: str
    text: str
    value: Any
    values: dict[JsonPath, Position] = field(default_factory=dict)
    keys: dict[JsonPath, Position] = field(default_factory=dict)
    spans: dict[JsonPath, ScalarSpan] = field(default_factory=dict)

    def at(self, path: JsonPath) -> Position:
        """Position of the value at ``path``; the nearest ancestor's when the path is not in the file."""
        path = tuple(path)
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), Position(self.file, 1, 1))

    def key_at(self, path: JsonPath) -> Position:
        """Position of the mapping key that names ``path`` (falls back to the value's position)."""
        path = tuple(path)
        if path in self.keys:
            return self.keys[path]
        return self.at(path)

    def in_string(self, path: JsonPath, offset: int) -> Position:
        """Position of character ``offset`` of the string value at ``path`` (for template errors)."""
        path = tuple(path)
        span = self.spans.get(path)
        value = _get(self.value, path)
        if span is None or not isinstance(value, str):
            return self.at(path)
        offset = max(0, min(offset, len(value)))
        if span.style in ("|", ">"):
            return self._in_block(span, value, offset)
        before = value[:offset]
        newlines = before.count("\n")
        if newlines == 0:
            quote = 1 if span.style in ("'", '"') else 0
            return Position(self.file, span.line, span.column + quote + offset)
        # a folded multi-line flow scalar: find the line, then the column after its indentation
        line_no = min(span.line + newlines, span.end_line)
        src_line = self.line_text(line_no)
        indent = len(src_line) - len(src_line.lstrip())
        return Position(self.file, line_no, indent + 1 + len(before) - before.rfind("\n") - 1)

    def _in_block(self, span: ScalarSpan, value: str, offset: int) -> Position:
        lines = self.text.splitlines()
        # content starts on the line after the indicator; its indentation is that of the first
        # non-empty content line
        first = span.line  # 0-based index of the line after the indicator
        indent = 0
        for raw in lines[first : span.end_line]:
            if raw.strip():
                indent = len(raw) - len(raw.lstrip(" "))
                break
        before = value[:offset]
        row = before.count("\n") if span.style == "|" else 0
        col = len(before) - before.rfind("\n") - 1 if span.style == "|" else offset
        return Position(self.file, first + 1 + row, indent + 1 + col)

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""


class LoadError(Exception):
    """The file is not a YAML document we can read; carries a positioned diagnostic."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _get(value: Any, path: JsonPath) -> Any:
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _pos(file: str, mark: Any) -> Position:
    return Position(file, mark.line + 1, mark.column + 1)


_MAX_NODES = 200_000


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.doc_values: dict[JsonPath, Position] = {}
        self.doc_keys: dict[JsonPath, Position] = {}
        self.spans: dict[JsonPath, ScalarSpan] = {}
        self.constructor = yaml.SafeLoader("")  # only its scalar constructors are used
        self.count = 0

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:  # alias bombs expand exponentially; refuse rather than hang
            raise LoadError(
                Diagnostic(
                    "yaml-syntax",
                    "error",
                    "document is too large (alias expansion?)",
                    _pos(self.file, node.start_mark),
                )
            )
        self.doc_values[path] = _pos(self.file, node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        self.spans[path] = ScalarSpan(
            node.start_mark.line + 1, node.start_mark.column + 1, node.style, node.end_mark.line + 1
        )
        return self.constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: JsonPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[Any, Position] = {}
        self.constructor.flatten_mapping(node)  # merge keys (<<) as PyYAML does
        for key_node, value_node in node.value:
            key = self.build(key_node, (*path, "\0key"))
            key_position = _pos(self.file, key_node.start_mark)
            if not isinstance(key, str):
                # YAML 1.1 turns on/off/yes/no into booleans; keep the author's spelling as the key
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key)
            if key in seen:
                first = seen[key]
                raise LoadError(
                    Diagnostic(
                        "yaml-duplicate-key",
                        "error",
                        f"duplicate key {key!r} (first defined at line {first.line}, column {first.column})",
                        key_position,
                    )
                )
            seen[key] = key_position
            self.doc_keys[(*path, key)] = key_position
            out[key] = self.build(value_node, (*path, key))
        self.doc_values.pop((*path, "\0key"), None)
        self.spans.pop((*path, "\0key"), None)
        return out


def loads(text: str, file: str = "<string>") -> Document:
    """Parse one YAML document with positions; raises :class:`LoadError` with a positioned diagnostic."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = _pos(file, mark) if mark is not None else Position(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise LoadError(
            Diagnostic("yaml-syntax", "error", f"YAML syntax error: {problem}", position)
        ) from None
    except yaml.YAMLError as exc:  # e.g. a reader error on control characters
        raise LoadError(
            Diagnostic("yaml-syntax", "error", f"YAML error: {exc}", Position(file, 1, 1))
        ) from None
    if len(nodes) > 1:
        second = nodes[1]
        raise LoadError(
            Diagnostic(
                "yaml-syntax",
                "error",
                "a workflow file holds exactly one YAML document",
                _pos(file, second.start_mark),
            )
        )
    builder = _Builder(file)
    if not nodes or nodes[0] is None:
        value: Any = None
    else:
        try:
            value = builder.build(nodes[0], ())
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark or exc.context_mark
            position = _pos(file, mark) if mark is not None else Position(file, 1, 1)
            raise LoadError(
                Diagnostic("yaml-syntax", "error", f"YAML error: {exc.problem or exc}", position)
            ) from None
        except RecursionError:
            raise LoadError(
                Diagnostic("yaml-syntax", "error", "YAML nesting is too deep", Position(file, 1, 1))
            ) from None
    doc = Document(file, text, value, builder.doc_values, builder.doc_keys, builder.spans)
    doc.values.setdefault((), Position(file, 1, 1))
    return doc


def load(path: str | Path) -> Document:
    """Read and parse a workflow file; unreadable or non-UTF-8 files become a positioned LoadError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(
            Diagnostic(
                "yaml-syntax", "error", f"file is not UTF-8 text: {exc.reason}", Position(str(path), 1, 1)
            )
        ) from None
    except OSError as exc:
        raise LoadError(
            Diagnostic("io", "error", f"cannot read file: {exc.strerror}", Position(str(path), 1, 1))
        ) from None
    return loads(text, str(path))
