"""Errors as values: a rule name, a severity, a message and a source position; and their renderers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


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
    """``FILE:LINE:COL: error|warning: MESSAGE [rule]``, then the source line and a caret."""
    out: list[str] = []
    for d in diagnostics:
        p = d.position
        out.append(f"{p.file}:{p.line}:{p.column}: {d.severity}: {d.message} [{d.rule}]")
        source = line_of(p.file, p.line).rstrip("\n").expandtabs(1)
        if source:
            out.append(f"    {source}")
            out.append("    " + " " * (max(p.column, 1) - 1) + "^")
    return "\n".join(out)


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


def render_github(diagnostics: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands, so problems show up as annotations on the pull request."""
    lines = []
    for d in diagnostics:
        p = d.position
        lines.append(
            f"::{d.severity} file={_github_escape(p.file, True)},line={p.line},col={p.column},"
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
                            "level": d.severity,
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
