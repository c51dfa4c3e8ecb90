"""YAML text → plain Python values plus a map of source positions.

Everything after loading works on plain dicts/lists (so JSON Schema and the compiler see ordinary
data); diagnostics find their way back to the file through :class:`Document` paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

try:  # the C composer is several times faster; fall back silently where libyaml is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the platform's PyYAML build
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

from dsl.diagnostics import Diagnostic, Position
from dsl.hints import empty_parent, indent_under

JsonPath = tuple[str | int, ...]


class ScalarSpan(NamedTuple):
    """Where a scalar's text sits in the file, so offsets inside a template map to line/column.
    (A named tuple: one is made for every scalar of every file, so construction speed matters.)"""

    line: int  # 1-based line of the scalar's first character (the quote or block indicator)
    column: int  # 1-based column of that character
    style: str | None  # None (plain), "'", '"', "|", ">"
    end_line: int
    start: int = -1  # character index of the scalar's first character in the text (-1: unknown)
    end: int = -1  # character index just past its last character


@dataclass
class Document:
    """A loaded workflow file: its value, and where every key and value came from."""

    file: str
    text: str
    value: Any
    values: dict[JsonPath, Position] = field(default_factory=dict)
    keys: dict[JsonPath, Position] = field(default_factory=dict)
    spans: dict[JsonPath, ScalarSpan] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)  # found while loading, not fatal
    not_json: list[JsonPath] = field(default_factory=list)  # scalars YAML read as dates or bytes

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
        """Position of character ``offset`` of the string value at ``path`` (for template errors).

        Exact for every scalar style: escapes in double quotes, ``''`` in single quotes, folded line
        breaks and indentation, block scalars with indentation indicators. Columns count characters
        (Unicode code points), like every column hopflow reports.
        """
        path = tuple(path)
        span = self.spans.get(path)
        value = _get(self.value, path)
        if span is None or not isinstance(value, str):
            return self.at(path)
        offset = max(0, min(offset, len(value)))
        index = self._source_index(path, span, value, offset)
        if index is None:
            return self._approximate(span, value, offset)
        line, column = self.line_column(index)
        return Position(self.file, line, column)

    def _source_index(self, path: JsonPath, span: ScalarSpan, value: str, offset: int) -> int | None:
        if span.start < 0:
            return None
        cache = self.__dict__.setdefault("_offsets", {})
        if path not in cache:
            cache[path] = scalar_offsets(self.text, span, value)
        offsets = cache[path]
        if offsets is None:
            return None
        return offsets[offset]

    def _approximate(self, span: ScalarSpan, value: str, offset: int) -> Position:
        """The scalar's own line and the offset as a column: used only if the exact mapping fails."""
        quote = 1 if span.style in ("'", '"') else 0
        if "\n" not in value[:offset] and span.style not in ("|", ">"):
            return Position(self.file, span.line, span.column + quote + offset)
        return Position(self.file, span.line, span.column)

    def rename_key(self, mapping: JsonPath, old: str, new: str) -> bool:
        """Rename a key in place, positions included; how the checks read a file as if a misspelt key
        had been spelled right (so one typo is one error, not a cascade). False when not possible."""
        target = _get(self.value, mapping)
        if not isinstance(target, dict) or old not in target or new in target:
            return False
        items = [(new if k == old else k, v) for k, v in target.items()]
        target.clear()
        target.update(items)
        prefix = (*tuple(mapping), old)
        n = len(prefix)
        for table in (self.values, self.keys, self.spans):
            moved = {k: v for k, v in table.items() if k[:n] == prefix}
            for k, v in moved.items():
                del table[k]
                table[(*tuple(mapping), new, *k[n:])] = v
        self.__dict__.pop("_offsets", None)
        return True

    def _line_starts(self) -> list[int]:
        starts = self.__dict__.get("_starts")
        if starts is None:
            starts = [0] + [m.end() for m in _BREAK.finditer(self.text)]
            self.__dict__["_starts"] = starts
        return starts

    def line_column(self, index: int) -> tuple[int, int]:
        """1-based line and column of character ``index`` of the text (YAML's line breaks)."""
        import bisect

        starts = self._line_starts()
        row = bisect.bisect_right(starts, index) - 1
        return row + 1, index - starts[row] + 1

    def line_text(self, line: int) -> str:
        """Line ``line`` (1-based) without its line break; lines are split where YAML splits them."""
        starts = self._line_starts()
        if not 0 < line <= len(starts):
            return ""
        begin = starts[line - 1]
        end = starts[line] if line < len(starts) else len(self.text)
        return self.text[begin:end].rstrip("\r\n\x85\u2028\u2029")


_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
_BREAK_CHARS = "\r\n\x85\u2028\u2029"
_ESCAPE_LENGTH = {"x": 4, "u": 6, "U": 10}


def scalar_offsets(text: str, span: ScalarSpan, value: str) -> list[int] | None:
    """For each character of a scalar's value (and one past its end), its index in ``text``.

    Walks the source and the value side by side, undoing what YAML did to the source: quotes,
    escapes, ``''``, line folding, indentation and block headers. ``None`` when the two cannot be
    matched (the caller then approximates).
    """
    style = span.style
    j, end = span.start, span.end
    block = style in ("|", ">")
    indent = 0
    if block:
        header_end = _BREAK.search(text, j)
        if header_end is None:
            return None
        j = header_end.end()
        indent = _block_indent(text, j, end, value)
    elif style in ("'", '"'):
        j, end = j + 1, end - 1
    out: list[int] = []
    i = 0
    at_line_start = block

    def skip_indent(k: int) -> int:
        if block:
            limit = k + indent
            while k < limit and k < end and text[k] == " ":
                k += 1
            return k
        while k < end and text[k] in " \t":
            k += 1
        return k

    if at_line_start:
        j = skip_indent(j)
    while i < len(value) and j < end:
        c, s = value[i], text[j]
        if style == '"' and s == "\\" and j + 1 < end:
            nxt = text[j + 1]
            if nxt in _BREAK_CHARS:  # an escaped line break joins the lines without a space
                j += 3 if text.startswith("\r\n", j + 1) else 2
                j = skip_indent(j)
                continue
            out.append(j)
            i += 1
            j += _ESCAPE_LENGTH.get(nxt, 2)
            continue
        if style == "'" and s == "'" and text.startswith("''", j):
            out.append(j)
            i += 1
            j += 2
            continue
        if s in _BREAK_CHARS:
            width = 2 if text.startswith("\r\n", j) else 1
            if c in " \n":
                out.append(j)
                i += 1
            j = skip_indent(j + width)
            continue
        if s == c:
            out.append(j)
            i += 1
            j += 1
            continue
        if s in " \t" and not block:
            j += 1  # trailing whitespace before a fold
            continue
        return None
    if i < len(value):
        # what is left is what YAML added at the end (a kept final line break): place it at the end
        if value[i:].strip("\n"):
            return None
        out.extend([min(j, len(text))] * (len(value) - i))
    out.append(min(j, len(text)))
    return out


def _block_indent(text: str, content: int, end: int, value: str) -> int:
    """A block scalar's content indentation: source indentation minus the value's own, on the first
    line that has text."""
    lines = _BREAK.split(text[content:end])
    value_lines = value.split("\n")
    for src, val in zip(lines, value_lines, strict=False):
        if val.strip() and src.strip():
            return (len(src) - len(src.lstrip(" "))) - (len(val) - len(val.lstrip(" ")))
    for src in lines:
        if src.strip():
            return len(src) - len(src.lstrip(" "))
    return 0


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
# Mappings and lists inside each other, at most. Every later stage (schema, compiler, checks) walks the
# document recursively; this bound keeps them all far from Python's recursion limit. It allows about
# 30 levels of foreach or 20 of parallel steps inside each other, and data 100 levels deep.
MAX_DEPTH = 100
_NOT_JSON_TAGS = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary")
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
# characters that look like spaces but are not YAML indentation (pasted from web pages, chat, …)
_ODD_SPACES = re.compile("[\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\ufeff]")


class _Builder:
    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.doc_values: dict[JsonPath, Position] = {}
        self.doc_keys: dict[JsonPath, Position] = {}
        self.spans: dict[JsonPath, ScalarSpan] = {}
        self.problems: list[Diagnostic] = []
        self.not_json: list[JsonPath] = []
        self.constructor = yaml.SafeLoader("")  # only its scalar constructors are used
        self.count = 0

    def error(self, message: str, mark: Any, rule: str = "yaml-syntax") -> LoadError:
        return LoadError(Diagnostic(rule, "error", message, _pos(self.file, mark)))

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:  # alias bombs expand exponentially; refuse rather than hang
            raise self.error("document is too large (alias expansion?)", node.start_mark)
        if len(path) > MAX_DEPTH:
            raise self.error(
                f"YAML error: the file is nested more than {MAX_DEPTH} levels deep (mappings and lists "
                "inside each other): flatten it, or move deeply nested steps into a child workflow",
                node.start_mark,
            )
        start = node.start_mark
        self.doc_values[path] = Position(self.file, start.line + 1, start.column + 1)
        if type(node) is yaml.ScalarNode:  # the common case first
            end = node.end_mark
            self.spans[path] = ScalarSpan(
                start.line + 1, start.column + 1, node.style, end.line + 1, start.index, end.index
            )
            if node.tag in _NOT_JSON_TAGS:
                self.not_json.append(path)
            return self.constructor.construct_object(node, deep=True)
        if node.tag not in _PLAIN_TAGS:
            self._check_tag(node)
        if isinstance(node, yaml.MappingNode):
            if node.flow_style and any(type(k) is yaml.MappingNode for k, _ in node.value):
                # a mapping as a key, `{{ x }}`: nobody writes that on purpose in a workflow
                return self._unquoted_template(node, path)
            return self._mapping(node, path)
        return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]

    def _check_tag(self, node: yaml.Node) -> None:
        if node.tag not in _PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self.error(
                f"YAML error: the tag {tag!r} is not supported: a workflow holds plain mappings, lists "
                "and scalars (remove the tag)",
                node.start_mark,
            )

    def _unquoted_template(self, node: yaml.MappingNode, path: JsonPath) -> str:
        """``url: {{ env.API }}`` is a YAML flow mapping, not a template: report it once, and read it
        as the string the author meant, so every other check sees the template."""
        start, end = node.start_mark.index, node.end_mark.index
        written = self.text[start:end]
        source = written
        if "\n" in source or "\r" in source:
            source = " ".join(source.split())
        source = re.sub(r"^\{\s+\{", "{{", re.sub(r"\}\s+\}$", "}}", source))
        key = path[-1] if path and isinstance(path[-1], str) and path[-1] != "\0key" else None
        shown = f"{key}: " if key is not None else ("- " if path and isinstance(path[-1], int) else "")
        quoted = f'"{source}"' if '"' not in source else "'" + source.replace("'", "''") + "'"
        self.problems.append(
            Diagnostic(
                "unquoted-template",
                "error",
                f"this template is not quoted, so YAML reads {written!r} as a mapping, not as text: "
                f"write {shown}{quoted}",
                _pos(self.file, node.start_mark),
            )
        )
        self.spans[path] = ScalarSpan(
            node.start_mark.line + 1, node.start_mark.column + 1, None, node.end_mark.line + 1, start, end
        )
        return source

    def _mapping(self, node: yaml.MappingNode, path: JsonPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[Any, Position] = {}
        written = node.value
        self.constructor.flatten_mapping(node)  # merge keys (<<) as PyYAML does
        # flatten_mapping removes the << entries in place and puts the merged pairs first
        n_merged = len(node.value) - len(written) if node.value is not written else 0
        merged: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = self.build(key_node, (*path, "\0key"))
            key_position = _pos(self.file, key_node.start_mark)
            if not isinstance(key, str):
                # YAML 1.1 turns on/off/yes/no into booleans; keep the author's spelling as the key
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key)
            if key and key[0] > "\x7f" and (_ODD_SPACES.match(key) or key[0].isspace()):
                raise self._odd_indent(key_node)
            if key in seen and key not in merged:
                raise self._duplicate(key, seen[key], key_position, path)
            if n_merged:
                if index < n_merged:
                    merged.add(key)  # a merged value: a later merge or an own key may replace it
                else:
                    merged.discard(key)
            seen[key] = key_position
            self.doc_keys[(*path, key)] = key_position
            out[key] = self.build(value_node, (*path, key))
        self.doc_values.pop((*path, "\0key"), None)
        self.spans.pop((*path, "\0key"), None)
        return out

    def _duplicate(self, key: str, first: Position, here: Position, path: JsonPath) -> LoadError:
        message = f"duplicate key {key!r} (first defined at line {first.line}, column {first.column})"
        lines = _BREAK.split(self.text)
        parent = None
        if here.column == first.column and 0 < here.line <= len(lines):
            parent = empty_parent(lines, here.line - 1, here.column - 1, stop=first.line - 1)
        if parent is not None:
            message += f": {indent_under(*parent)}"
        elif path and isinstance(path[-1], int) and here.column == first.column:
            message += "; if this line starts a new list item, begin it with '- '"
        return LoadError(Diagnostic("yaml-duplicate-key", "error", message, here))

    def _odd_indent(self, key_node: yaml.Node) -> LoadError:
        index = key_node.start_mark.index
        char = self.text[index]
        import unicodedata

        name = unicodedata.name(char, f"U+{ord(char):04X}")
        return self.error(
            f"YAML syntax error: this line is indented with a {name.lower()} (U+{ord(char):04X}), which "
            "YAML does not count as indentation: replace it with plain spaces",
            key_node.start_mark,
        )


def loads(text: str, file: str = "<string>") -> Document:
    """Parse one YAML document with positions; raises :class:`LoadError` with a positioned diagnostic.

    Problems that do not stop the file from being read (an unquoted template) are kept in
    ``Document.problems`` and reported with everything else.
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        from dsl.yaml_errors import Mark, explain

        def mark(m: Any) -> Mark | None:
            return Mark(m.line, m.column) if m is not None else None

        problem = exc.problem or exc.context or "invalid YAML"
        found = explain(text, problem, mark(exc.problem_mark), exc.context, mark(exc.context_mark))
        raise LoadError(
            Diagnostic("yaml-syntax", "error", found.message, Position(file, found.line, found.column))
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
                "a workflow file holds exactly one YAML document: remove the '---' and what follows, "
                "or put the second workflow in its own file",
                _pos(file, second.start_mark),
            )
        )
    builder = _Builder(file, text)
    if not nodes or nodes[0] is None:
        value: Any = None
    else:
        try:
            value = builder.build(nodes[0], ())
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark or exc.context_mark
            position = _pos(file, mark) if mark is not None else Position(file, 1, 1)
            message = f"YAML error: {exc.problem or exc}"
            if "could not determine a constructor for the tag" in message:
                message += " (tags are not supported: remove it, or quote the value)"
            raise LoadError(Diagnostic("yaml-syntax", "error", message, position)) from None
        except RecursionError:
            raise LoadError(
                Diagnostic("yaml-syntax", "error", "YAML nesting is too deep", Position(file, 1, 1))
            ) from None
    doc = Document(
        file,
        text,
        value,
        builder.doc_values,
        builder.doc_keys,
        builder.spans,
        builder.problems,
        builder.not_json,
    )
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
