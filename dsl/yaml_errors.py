"""PyYAML's syntax errors, retold in a workflow author's words and placed on the culprit.

The parser reports where it *gave up*, which is often a line or two after the mistake ("mapping values
are not allowed in this context" at the colon of a line that is fine, because the line above had no
space after its colon). :func:`explain` looks at the text around the marks for the mistakes authors
actually make — unquoted templates, indentation off by a column, a missing space after ``:`` or
``-``, a ``': '`` inside a plain value, an unclosed quote or bracket, tabs — and returns a message
with the fix and the position of the thing to change. Anything it does not recognise keeps PyYAML's
own words at PyYAML's position.

Only the error path runs this code, so it may be thorough rather than fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dsl.hints import empty_parent

PREFIX = "YAML syntax error: "
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


@dataclass(frozen=True)
class Mark:
    """A 0-based line and column, as PyYAML's marks carry them."""

    line: int
    column: int


@dataclass(frozen=True)
class Explained:
    message: str
    line: int  # 1-based
    column: int  # 1-based


def lines_of(text: str) -> list[str]:
    """The file's lines as YAML counts them (``\\r\\n``, ``\\r``, ``\\n``, NEL, LS, PS)."""
    return _BREAK.split(text)


def explain(
    text: str, problem: str, problem_mark: Mark | None, context: str | None, context_mark: Mark | None
) -> Explained:
    """A readable message and position for one PyYAML syntax error."""
    lines = lines_of(text)
    e = _Explainer(lines, problem, problem_mark, context, context_mark)
    return e.run()


_TEMPLATE_START = re.compile(r"(?:^|(?<=[\s:,\[{-]))(\{[{%])")
_KEY = re.compile(r"^(\s*)(?:-\s+)?([^\s#'\"{\[][^#]*?|'[^']*'|\"[^\"]*\"):(?:\s|$)")


def _quote(value: str) -> str:
    value = value.strip()
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "''") + "'"


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` after a space, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"" and (i == 0 or line[i - 1] in " \t:[{,-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _unquoted_template(line: str) -> int | None:
    """Column (0-based) of a ``{{``/``{%`` that starts a plain value on this line, outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "'\"" and (i == 0 or line[i - 1] in " \t:[{,-"):
            quote = ch
            continue
        if ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return None
        if line.startswith(("{{", "{%"), i) and (i == 0 or line[i - 1] in " \t:,[{-"):
            return i
    return None


_LOOKALIKES = (
    (re.compile(r"^\s*(?:-\s+)?[^\s:'\"]+\s*([\uff1a\ufe55\ua789])"), "a fullwidth colon", ":"),
    (re.compile(r"^\s*([\u2010-\u2015\u2212\u2022\u00b7])\s"), "a dash or bullet from a word processor", "-"),
    (
        re.compile(r"(?:^|[:\[{,]\s*)([\u201c\u201d\u201e\u2018\u2019\u00ab\u00bb])"),
        "a typographic quote",
        '"',
    ),
)


def _outside_quotes(line: str) -> str:
    """The line with quoted parts blanked out (same length), so searches skip what is inside quotes."""
    out = []
    quote = None
    for ch in line:
        if quote:
            out.append(" ")
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _quotes_in(text: str, quote: str) -> int:
    """How many string delimiters ``quote`` the text has (escaped \\" and doubled '' not counted)."""
    if quote == '"':
        return len(re.findall(r'(?<!\\)"', text))
    return len(re.findall(r"'", text.replace("''", "")))


def _last_quote(text: str, quote: str) -> int:
    """Column of the unmatched (last odd) ``quote`` of the line."""
    positions = [i for i, ch in enumerate(text) if ch == quote and (quote != '"' or text[i - 1 : i] != "\\")]
    if quote == "'":
        positions = [m.start() for m in re.finditer(r"'(?!')|''", text) if m.group(0) == "'"]
    return positions[-1] if positions else 0


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


class _Explainer:
    def __init__(
        self, lines: list[str], problem: str, pm: Mark | None, context: str | None, cm: Mark | None
    ) -> None:
        self.lines = lines
        self.problem = problem
        self.pm = pm
        self.context = context or ""
        self.cm = cm

    # -- helpers
    def line(self, index: int) -> str:
        return self.lines[index] if 0 <= index < len(self.lines) else ""

    def at(self, message: str, line: int, column: int) -> Explained:
        """``line``/``column`` 0-based; clamped into the file so editors and carets have a place."""
        line = max(0, min(line, len(self.lines) - 1))
        column = max(0, min(column, len(self.line(line))))
        return Explained(PREFIX + message, line + 1, column + 1)

    def previous_content_line(self, index: int) -> int | None:
        for i in range(index - 1, -1, -1):
            stripped = self.line(i).strip()
            if stripped and not stripped.startswith("#"):
                return i
        return None

    def fallback(self) -> Explained:
        mark = self.pm or self.cm
        if mark is None:
            return Explained(PREFIX + self.problem, 1, 1)
        line, column = mark.line, mark.column
        if line >= len(self.lines) or (line == len(self.lines) - 1 and not self.line(line).strip()):
            # the end of the input: point at the end of the last line that has something on it
            last = self.previous_content_line(len(self.lines)) or 0
            line, column = last, len(self.line(last).rstrip())
        return self.at(self.problem, line, column)

    # -- dispatch
    def run(self) -> Explained:
        for rule in (
            self.lookalike,
            self.unquoted_template,
            self.tab,
            self.mapping_values,
            self.unclosed_quote,
            self.flow_not_closed,
            self.expected_key,
            self.expected_dash,
            self.escape,
            self.cannot_start,
            self.undefined_alias,
            self.sequence_here,
            self.simple_key,
            self.anchor,
            self.node_content,
        ):
            found = rule()
            if found is not None:
                return found
        return self.fallback()

    # -- the mistakes
    def lookalike(self) -> Explained | None:
        """A character that looks like YAML punctuation but is not: a fullwidth colon, an en dash as a
        list marker, typographic quotes around a value, a JavaScript comment."""
        rows = []
        for mark in (self.pm, self.cm):
            if mark is not None:
                rows.append(mark.line)
        if self.pm is not None:
            prev = self.previous_content_line(self.pm.line)
            if prev is not None:
                rows.append(prev)
        for row in dict.fromkeys(rows):
            text = self.line(row)
            for pattern, what, instead in _LOOKALIKES:
                match = pattern.search(text)
                if match is not None:
                    col = match.start(1)
                    char = text[col]
                    return self.at(
                        f"{char!r} ({what}) looks like {instead!r} but is not YAML syntax: type {instead!r}",
                        row,
                        col,
                    )
            comment = re.search(r"(?:^|[\s,{\[])(//)", _outside_quotes(text))
            if comment is not None:
                return self.at(
                    "'//' does not start a comment in YAML (or JSON): YAML comments start with '#'",
                    row,
                    comment.start(1),
                )
        return None

    def unquoted_template(self) -> Explained | None:
        for mark in (self.pm, self.cm):
            if mark is None:
                continue
            text = self.line(mark.line)
            col = _unquoted_template(text)
            if col is None:
                continue
            value = _strip_comment(text[col:])
            head = _strip_comment(text[:col]).rstrip()
            return self.at(
                "a value that starts with '{{' or '{%' must be quoted, or YAML reads the '{' as the "
                f"start of a mapping: write {(head + ' ') if head else ''}{_quote(value)}",
                mark.line,
                col,
            )
        return None

    def tab(self) -> Explained | None:
        pm = self.pm
        if pm is None:
            return None
        text = self.line(pm.line)
        if "tab" in self.problem or (pm.column < len(text) and text[pm.column] == "\t"):
            col = text.find("\t")
            if col < 0:
                return None
            return self.at(
                "a tab character is used for indentation; YAML allows only spaces: replace the tab "
                "with spaces",
                pm.line,
                col,
            )
        return None

    def mapping_values(self) -> Explained | None:
        if self.problem != "mapping values are not allowed in this context" or self.pm is None:
            return None
        row, col = self.pm.line, self.pm.column
        text = self.line(row)
        key = _KEY.match(text)
        if key is not None and key.end() <= col:
            # a second ': ' on a line that already has its key: the value contains ': '
            start = key.end() + (len(text[key.end() :]) - len(text[key.end() :].lstrip()))
            value = _strip_comment(text[start:])
            return self.at(
                "this value contains ': ', which YAML reads as the start of another key: quote the "
                f"value: {text[:start].strip()} {_quote(value)}",
                row,
                start,
            )
        prev = self.previous_content_line(row)
        if prev is None:
            return None
        above = self.line(prev)
        dash = re.match(r"^(\s*)-([^\s-])", above)
        if dash:
            return self.at(
                "'-' must be followed by a space to start a list item: write "
                f"'- {above[dash.end(1) + 1 :].strip()}' on line {prev + 1}",
                prev,
                dash.end(1) + 1,
            )
        glued = re.match(r"^(\s*(?:-\s+)?)([A-Za-z_][\w.-]*):(?=[^\s:/])", above)
        if glued:
            return self.at(
                f"put a space after the ':' of '{glued.group(2)}' on line {prev + 1}: without it YAML "
                f"reads '{above[glued.end(1) :].strip()}' as one word, not as a key and a value",
                prev,
                glued.end(),
            )
        if ":" not in _strip_comment(above) and not above.strip().startswith(("'", '"', "|", ">")):
            words = re.match(r"^(\s*(?:-\s+)?)(\S+)(\s+)(\S.*)$", _strip_comment(above))
            hint = f" (did you mean '{words.group(2)}: {words.group(4)}'?)" if words else ""
            return self.at(
                f"line {prev + 1} has no ':' after its key{hint}, so YAML reads it and this line as one "
                "text; add the ':'",
                prev,
                _indent(above) + (len(words.group(1)) - _indent(above) if words else 0),
            )
        here = _indent(text)
        above_key = _KEY.match(above)
        if above_key is not None and here > _indent(above):
            key_col = len(above) - len(above.lstrip(" -"))
            parent = empty_parent(self.lines, prev, _indent(above))
            if parent is not None:
                # `compensate:` (empty), then its body not indented under it: lining this line up
                # with the key above would only make that key a duplicate of the step's own
                name, row_of = parent
                return self.at(
                    f"lines {prev + 1} and {row + 1} are probably the body of '{name}:' on line "
                    f"{row_of + 1}, which has no value: indent them deeper than '{name}' (e.g. line "
                    f"{prev + 1} to column {_indent(self.line(row_of)) + 3})",
                    prev,
                    _indent(above),
                )
            return self.at(
                f"this line is indented more than line {prev + 1}, so YAML reads it as more text of "
                f"the value above: line it up with '{above_key.group(2).strip()}' (column {key_col + 1})",
                row,
                here,
            )
        return None

    def unclosed_quote(self) -> Explained | None:
        if "while scanning a quoted scalar" not in self.context or self.cm is None:
            return None
        quote = self.line(self.cm.line)[self.cm.column : self.cm.column + 1] or '"'
        return self.at(
            f"this {quote} is never closed (the string runs to the end of the file): add the closing {quote}",
            self.cm.line,
            self.cm.column,
        )

    def flow_not_closed(self) -> Explained | None:
        m = re.fullmatch(r"did not find expected ',' or '([\]}])'", self.problem)
        if m is None or self.cm is None or self.pm is None:
            return None
        close = m.group(1)
        opener = "{" if close == "}" else "["
        cm, pm = self.cm, self.pm
        text = self.line(pm.line)
        if pm.line == cm.line:
            before = text[: pm.column]
            if (pm.column < len(text) and text[pm.column] == ":") or before.rstrip().endswith(":"):
                return self.at(
                    f"a plain value inside {opener}…{close} cannot contain ': ' (nor ',', '[', ']', "
                    "'{', '}'): quote the value",
                    pm.line,
                    pm.column,
                )
            here = text[pm.column : pm.column + 1]
            if here in "]}" and here != close:
                return self.at(
                    f"the '{opener}' at column {cm.column + 1} is closed with {here!r}: close it with "
                    f"'{close}'",
                    pm.line,
                    pm.column,
                )
            return self.at(
                f"expected ',' or '{close}' here: separate the entries of {opener}…{close} with ', ', "
                "and quote values that contain punctuation",
                pm.line,
                pm.column,
            )
        return self.at(
            f"this '{opener}' is never closed: add '{close}' at the end of its value (YAML reached line "
            f"{min(pm.line + 1, len(self.lines))} still inside it)",
            cm.line,
            cm.column,
        )

    def expected_key(self) -> Explained | None:
        if self.problem != "did not find expected key" or self.pm is None:
            return None
        pm = self.pm
        text = self.line(pm.line)
        before = text[: pm.column].rstrip()
        if before.endswith(("'", '"')):
            opener = self.string_opener(pm.line, len(before) - 1, before[-1])
            if opener is not None:
                row, col = opener
                quote = before[-1]
                return self.at(
                    f"this {quote} is not closed on its line, so the string runs on to line {pm.line + 1}: "
                    f"add the closing {quote}",
                    row,
                    col,
                )
        if before.endswith(("]", "}")) and _indent(text) < pm.column:
            return self.at(
                f"text after the closing {before[-1]!r}: a value written in brackets ends there; quote the "
                "whole value if the brackets are part of the text",
                pm.line,
                pm.column,
            )
        if pm.line == (self.cm.line if self.cm else -1) or before.endswith(("'", '"')):
            if before.endswith(("'", '"')) and _indent(text) < pm.column:
                quote = before[-1]
                key = _KEY.match(text)
                hint = ""
                if quote == "'" and key is not None:
                    hint = " (inside single quotes, write a quote as '')"
                return self.at(
                    f"text after a closing {quote}: a quoted value must end at its closing quote; put the "
                    f"whole value in quotes{hint}",
                    pm.line,
                    pm.column,
                )
        stripped = text.lstrip()
        here = _indent(text)
        if self.cm is not None:
            key_col = self.cm.column
            if stripped.startswith("- ") and here == key_col:
                return self.at(
                    f"a list item ('- ') where a key is expected: the mapping that starts on line "
                    f"{self.cm.line + 1} has its keys at column {key_col + 1}; to start a new list item, "
                    "line the '-' up with the '-' of the item above",
                    pm.line,
                    here,
                )
            if here > key_col:
                # the line above may be the one out of place: `with:` (empty), then its first entry
                # not indented under it, then the second entry indented as meant
                prev = self.previous_content_line(pm.line)
                before = self.previous_content_line(prev) if prev is not None else None
                if prev is not None and before is not None and _indent(self.line(prev)) == key_col:
                    parent = _KEY.match(self.line(before))
                    empty = (
                        parent is not None and not _strip_comment(self.line(before))[parent.end() :].strip()
                    )
                    if empty and _indent(self.line(before)) == key_col:
                        name = parent.group(2).strip()
                        return self.at(
                            f"this line is not indented under {name!r} (line {before + 1}), so {name!r} is "
                            f"empty and line {pm.line + 1} below fits nowhere: indent it like line "
                            f"{pm.line + 1} (column {here + 1})",
                            prev,
                            key_col,
                        )
            if here != key_col:
                return self.at(self._misaligned(pm.line, here, key_col), pm.line, here)
        return None

    def _misaligned(self, row: int, here: int, key_col: int) -> str:
        """A key between two indentation levels: name the mapping it most likely belongs to, the
        nearer of the block just above and the mapping the parser was reading (``key_col``)."""
        assert self.cm is not None
        head = (
            f"this line's indentation (column {here + 1}) does not match the keys of the mapping that "
            f"starts on line {self.cm.line + 1} (column {key_col + 1})"
        )
        prev = self.previous_content_line(row)
        candidates: list[tuple[int, int]] = [(key_col, self.cm.line)]
        if prev is not None and _indent(self.line(prev)) != key_col:
            candidates.insert(0, (_indent(self.line(prev)), prev))  # the block just above wins a tie
        column, source = min(candidates, key=lambda c: abs(c[0] - here))
        key = _KEY.match(self.line(source))
        parent = self._parent_of(source, column)
        name = f"'{key.group(2).strip()}'" if key else "the keys"
        under = f" under '{parent[0]}:' (line {parent[1] + 1})" if parent else ""
        return f"{head}: it most likely belongs with {name}{under}: line it up at column {column + 1}"

    def _parent_of(self, row: int, indent: int) -> tuple[str, int] | None:
        """The key whose value holds the mapping that line ``row`` (keys at ``indent``) is part of."""
        for above in range(row - 1, -1, -1):
            text = self.line(above)
            if not text.strip() or text.strip().startswith("#"):
                continue
            if _indent(text) < indent:
                if text.lstrip().startswith("- "):
                    indent = _indent(text)  # a list item holding the mapping: its list's key is the parent
                    continue
                key = _KEY.match(text)
                return (key.group(2).strip(), above) if key else None
        return None

    def string_opener(self, row: int, col: int, quote: str) -> tuple[int, int] | None:
        """Where the quoted string that the ``quote`` at ``row``/``col`` closes was opened, when that
        is on an earlier line (a string whose closing quote is missing swallows the lines after it)."""
        if _quotes_in(self.line(row)[:col], quote) % 2 == 1:
            return None  # opened on this line: the quote closes a string of its own line
        for r in range(row - 1, max(row - 200, -1), -1):
            text = self.line(r)
            count = _quotes_in(text, quote)
            if count % 2 == 1:
                return r, _last_quote(text, quote)
        return None

    def expected_dash(self) -> Explained | None:
        if self.problem != "did not find expected '-' indicator" or self.pm is None or self.cm is None:
            return None
        pm, cm = self.pm, self.cm
        text = self.line(pm.line)
        item = self.line(cm.line)
        inner = cm.column + 1 + (len(item[cm.column + 1 :]) - len(item[cm.column + 1 :].lstrip(" ")))
        word = _KEY.match(text)
        name = f"'{word.group(2).strip()}'" if word else "this line"
        return self.at(
            f"{name} is not indented like the list that starts on line {cm.line + 1}: to belong to the "
            f"item above, line it up with its first key (column {inner + 1}); to be a new item, start it "
            "with '- '",
            pm.line,
            _indent(text),
        )

    def escape(self) -> Explained | None:
        if self.problem not in ("found unknown escape character", "did not find expected hexdecimal number"):
            return None
        if self.pm is None:
            return None
        text = self.line(self.pm.line)
        col = text.rfind("\\", 0, self.pm.column + 1)
        col = col if col >= 0 else self.pm.column
        seq = text[col : col + 2]
        return self.at(
            f"{seq!r} is not an escape sequence: in double quotes a backslash starts an escape; use single "
            "quotes for text with backslashes, or write '\\\\' for one backslash",
            self.pm.line,
            col,
        )

    def cannot_start(self) -> Explained | None:
        if self.problem != "found character that cannot start any token" or self.pm is None:
            return None
        text = self.line(self.pm.line)
        ch = text[self.pm.column : self.pm.column + 1]
        if ch in ("@", "`"):
            value = _quote(_strip_comment(text[self.pm.column :]).rstrip("}], "))
            return self.at(
                f"a value cannot start with {ch!r} unless it is quoted: write {value}",
                self.pm.line,
                self.pm.column,
            )
        if ch in ("|", ">"):
            return self.at(
                f"{ch!r} (a block scalar) cannot be used inside {{…}} or […]: quote the value",
                self.pm.line,
                self.pm.column,
            )
        if ch == "%":
            return self.at(
                "'%' cannot start a value: quote it",
                self.pm.line,
                self.pm.column,
            )
        return None

    def undefined_alias(self) -> Explained | None:
        if self.problem != "found undefined alias" or self.pm is None:
            return None
        text = self.line(self.pm.line)
        name = re.match(r"\*([^\s,\]}]*)", text[self.pm.column :])
        alias = name.group(1) if name else ""
        return self.at(
            f"'*{alias}' refers to an anchor '&{alias}' that is not defined before it (to write a literal "
            "'*', quote the value)",
            self.pm.line,
            self.pm.column,
        )

    def sequence_here(self) -> Explained | None:
        if self.problem != "block sequence entries are not allowed in this context" or self.pm is None:
            return None
        return self.at(
            "a list item ('- ') cannot start on the same line as its key: put it on the next line, "
            "indented, or write the list as [a, b]",
            self.pm.line,
            self.pm.column,
        )

    def simple_key(self) -> Explained | None:
        if self.problem != "could not find expected ':'" or self.cm is None:
            return None
        text = self.line(self.cm.line)
        return self.at(
            f"'{_strip_comment(text).strip()}' is neither a 'key: value' nor a list item: add the ':' "
            "(or quote the text if it continues a value)",
            self.cm.line,
            self.cm.column,
        )

    def node_content(self) -> Explained | None:
        if self.problem != "did not find expected node content" or self.pm is None:
            return None
        text = self.line(self.pm.line)
        here = text[self.pm.column : self.pm.column + 1]
        if here in "]}":
            return self.at(
                f"unexpected {here!r}: a value is missing before it, or it closes the wrong bracket",
                self.pm.line,
                self.pm.column,
            )
        if here == "-":
            return self.at(
                "a list item ('- ') cannot be written inside {…} or […]: write the list as [a, b]",
                self.pm.line,
                self.pm.column,
            )
        return None

    def anchor(self) -> Explained | None:
        if "while scanning an anchor" not in self.context and "while scanning an alias" not in self.context:
            return None
        mark = self.cm or self.pm
        assert mark is not None
        return self.at(
            "'&' and '*' start YAML anchors and aliases: quote the value to write them literally",
            mark.line,
            mark.column,
        )
