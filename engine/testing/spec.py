"""A test file's cases as values the harness can run: instants as unix seconds, defaults applied."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsl.graph import Graph
from dsl.testfile import TestFile

DEFAULT_NOW = "2030-01-01T00:00:00Z"  # fixed, so a case renders the same times on every run


class SpecError(Exception):
    """A test file that cannot be run (its diagnostics say why)."""

    def __init__(self, found: TestFile) -> None:
        first = found.diagnostics[0] if found.diagnostics else None
        where = f"{first.position.file}:{first.position.line}:{first.position.column}: " if first else ""
        super().__init__(f"{where}{first.message if first else 'invalid test file'}")
        self.found = found


@dataclass(frozen=True)
class Event:
    name: str
    key: Any
    data: Any
    at: float | None  # unix seconds; None with `after`
    after: str | None
    index: int


@dataclass
class Case:
    file: str
    name: str
    line: int
    workflow: str  # the workflow's name
    graph: Graph
    graphs: dict[str, Graph]
    input: Any
    now: float
    env: dict[str, str]
    allow_real: bool
    mocks: dict[str, dict[str, Any]]
    events: list[Event]
    expect: dict[str, Any]
    expect_lines: dict[str, int] = field(default_factory=dict)  # expectation key → its line
    actions: tuple[str, ...] = ()
    position: int = 0  # its index in the file's cases

    @property
    def id(self) -> str:
        return f"{self.file}::{self.name}"


def parse_instant(text: str) -> float:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cases_of(found: TestFile) -> list[Case]:
    """The runnable cases of a loaded test file; :class:`SpecError` when it has errors."""
    from dsl.durations import parse_ms

    if not found.ok or found.doc is None or found.graph is None:
        raise SpecError(found)
    doc = found.doc
    root = doc.value
    file_env = {k: _env_text(v) for k, v in (root.get("env") or {}).items()}
    actions = root.get("actions") or ()
    if isinstance(actions, str):
        actions = (actions,)
    base = Path(found.file).parent
    specs = tuple(str(base / a) if a.endswith(".py") else a for a in actions)
    out = []
    for i, raw in enumerate(root["cases"]):
        now = parse_instant(raw.get("now") or root.get("now") or DEFAULT_NOW)
        events = []
        for j, e in enumerate(raw.get("events") or []):
            at = e.get("at")
            when: float | None
            if at is None:
                when = None if "after" in e else now
            elif at[:1].isdigit() and ("T" in at or " " in at or at.count("-") >= 2):
                when = parse_instant(at)
            else:
                when = now + parse_ms(at) / 1000
            events.append(Event(e["name"], e.get("key"), e.get("data"), when, e.get("after"), j))
        expect = raw.get("expect") or {}
        out.append(
            Case(
                file=found.file,
                name=raw["name"],
                line=doc.at(("cases", i)).line,
                workflow=found.graph.name,
                graph=found.graph,
                graphs=found.graphs,
                input=raw.get("input", {}),
                now=now,
                env={**file_env, **{k: _env_text(v) for k, v in (raw.get("env") or {}).items()}},
                allow_real=bool(raw.get("allow_real")),
                mocks=raw.get("mocks") or {},
                events=events,
                expect=expect,
                expect_lines={
                    **{k: doc.key_at(("cases", i, "expect", k)).line for k in expect},
                    **{
                        f"calls.{k}": doc.key_at(("cases", i, "expect", "calls", k)).line
                        for k in (expect.get("calls") or {})
                    },
                },
                actions=specs,
                position=i,
            )
        )
    return out
