"""Errors as values: a rule name, a severity, a message and a source position; and their renderers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]  # info: something the validator could not check


@dataclass(frozen=True, order=True)
class Position:
    file: str
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True)
class Diagnostic:
    rule: str
    severity: Severity
    message: str
    position: Position

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        p = self.position
        return (p.file, p.line, p.column, self.rule, self.message)


def sort(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Stable, de-duplicated order: by file, line, column, rule."""
    return sorted(set(diagnostics), key=Diagnostic.sort_key)


def render_text(diagnostics: Sequence[Diagnostic], line_of: Callable[[str, int], str]) -> str:
    """``FILE:LINE:COL: error|warning: MESSAGE [rule]``, then the source line and a caret.

    Columns count characters (code points); the caret is placed by *display* width, so it stays under
    the culprit after wide (CJK, emoji) and combining characters. A long line is shown as a window
    around the column.
    """
    out: list[str] = []
    for d in diagnostics:
        p = d.position
        out.append(f"{p.file}:{p.line}:{p.column}: {d.severity}: {d.message} [{d.rule}]")
        source = line_of(p.file, p.line).rstrip("\r\n")
        if source.strip():
            shown, before = _window(source, max(p.column, 1) - 1)
            out.append(f"    {_printable(shown)}")
            out.append("    " + " " * _width(_printable(before)) + "^")
    return "\n".join(out)


_WINDOW = 100  # characters of a long source line shown around the column


def _window(line: str, index: int) -> tuple[str, str]:
    """The part of ``line`` to show, and the part of it before the caret."""
    index = min(index, len(line))
    if len(line) <= _WINDOW:
        return line, line[:index]
    start = max(0, min(index - _WINDOW // 2, len(line) - _WINDOW))
    end = start + _WINDOW
    head = "…" if start > 0 else ""
    tail = "…" if end < len(line) else ""
    return head + line[start:end] + tail, head + line[start:index]


def _printable(text: str) -> str:
    """Tabs as one space and control characters as '?', so the caret line matches what is shown."""
    return "".join(" " if ch == "\t" else ("?" if ord(ch) < 32 or ord(ch) == 127 else ch) for ch in text)


def _width(text: str) -> int:
    import unicodedata

    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def render_json(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps(
        [
            {
                "file": d.position.file,
                "line": d.position.line,
                "column": d.position.column,
                "severity": d.severity,
                "rule": d.rule,
                "message": d.message,
            }
            for d in diagnostics
        ],
        indent=2,
    )


def _github_escape(text: str, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


_GITHUB_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def render_github(diagnostics: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands, so problems show up as annotations on the pull request."""
    lines = []
    for d in diagnostics:
        p = d.position
        lines.append(
            f"::{_GITHUB_LEVEL[d.severity]} file={_github_escape(p.file, True)},line={p.line},col={p.column},"
            f"title={_github_escape(d.rule, True)}::{_github_escape(d.message)}"
        )
    return "\n".join(lines)


def render_sarif(diagnostics: Sequence[Diagnostic], rules: dict[str, str] | None = None) -> str:
    """SARIF 2.1.0, for code-scanning dashboards."""
    rules = rules or {}
    used = sorted({d.rule for d in diagnostics} | set(rules))
    return json.dumps(
        {
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "hopflow",
                            "informationUri": "https://github.com/hopflow/hopflow",
                            "rules": [{"id": r, "shortDescription": {"text": rules.get(r, r)}} for r in used],
                        }
                    },
                    "results": [
                        {
                            "ruleId": d.rule,
                            "level": _SARIF_LEVEL[d.severity],
                            "message": {"text": d.message},
                            "locations": [
                                {
                                    "physicalLocation": {
                                        "artifactLocation": {"uri": d.position.file},
                                        "region": {
                                            "startLine": d.position.line,
                                            "startColumn": d.position.column,
                                        },
                                    }
                                }
                            ],
                        }
                        for d in diagnostics
                    ],
                }
            ],
        },
        indent=2,
    )


def as_dict(d: Diagnostic) -> dict[str, object]:
    return asdict(d)
