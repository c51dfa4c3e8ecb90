"""Live progress for ``hopflow run``: one line per node as it finishes, and what is running right now.

Two inputs feed it: the delivery observer (a message started / ended: what is *running*), and the
execution's history stream (what *happened*: step, phase, attempt, status, duration, retries, waits,
compensations, the end). Lines come only from history, so what you see is what was checkpointed.

Two renderers: :class:`PlainProgress` writes one line per event (for pipes and logs; no colour,
no cursor movement) and :class:`LiveProgress` uses rich for a terminal (finished lines scroll, the
nodes in flight stay at the bottom with their elapsed time).
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from engine.model import Message

SPECIAL_NODES = {
    "$compensate": "compensation",
    "$timeout": "execution timeout",
    "$branch-timeout": "branch timeout",
}


@dataclass(frozen=True)
class Line:
    """One thing that happened, as shown to the user."""

    kind: str  # "node" | "retry" | "park" | "compensating" | "finished" | "halted" | "other"
    step: str
    depth: int = 0  # 0 for the execution that was run, 1 for its children, …
    workflow: str = ""
    phase: str = ""
    status: str = ""
    attempt: int | None = None
    duration_ms: int | None = None
    branch: str = ""
    detail: str = ""


class Renderer(Protocol):
    def line(self, line: Line) -> None: ...
    def running(self, key: str, label: str) -> None: ...
    def stopped(self, key: str) -> None: ...
    def close(self) -> None: ...


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} m {ms % 60_000 // 1000} s"


def describe(line: Line) -> tuple[str, str, str, str, str, str]:
    """(step, phase, attempt, status, duration, detail) as plain text columns."""
    indent = "  " * line.depth
    step = indent + line.step + (f" [{line.branch}]" if line.branch else "")
    if line.kind == "node":
        attempt = f"#{line.attempt}" if line.attempt else ""
        return step, line.phase, attempt, line.status, _fmt_ms(line.duration_ms), line.detail
    return step, line.kind, "", "", "", line.detail


class NullProgress:
    """Shows nothing (``--progress none``); :class:`PlainProgress` adds only its lines."""

    def line(self, line: Line) -> None:
        pass

    def running(self, key: str, label: str) -> None:
        pass

    def stopped(self, key: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress(NullProgress):
    """One line per event, fixed columns, no colour: safe for pipes, CI logs and ``grep``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def line(self, line: Line) -> None:
        step, phase, attempt, status, duration, detail = describe(line)
        text = f"{step:<28} {phase:<12} {attempt:<4} {status:<6} {duration:>9}"
        if detail:
            text += f"  {detail}"
        with self._lock:
            print(text.rstrip(), file=self.stream, flush=True)


class LiveProgress:
    """rich: finished lines scroll above; nodes in flight stay below with a spinner and elapsed time."""

    STYLES = {"ok": "green", "error": "red"}
    PHASE_STYLES = {"compensate": "yellow", "skip": "dim"}

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, highlight=False)
        self._active: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        import sys

        # prints from actions go above the live area; stdout is left alone when it must stay pure
        # (``--json`` puts progress on stderr and the record on stdout)
        self._live = Live(
            self,
            console=self.console,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=stream is sys.stdout,
            redirect_stderr=True,
        )
        self._live.start()

    def __rich__(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        with self._lock:
            items = list(self._active.values())
        now = time.monotonic()
        for label, since in items:
            table.add_row(
                Spinner("dots", style="cyan"), Text(label), Text(f"{now - since:.1f} s", style="dim")
            )
        return table

    def line(self, line: Line) -> None:
        from rich.markup import escape

        step, phase, attempt, status, duration, detail = describe(line)
        colour = self.STYLES.get(status, "white" if line.kind == "node" else "cyan")
        mark = {"ok": "✓", "error": "✗"}.get(status, "·" if line.kind == "node" else "…")
        if line.kind == "finished":
            mark = "■"
            colour = "green" if line.detail.startswith("succeeded") else "red"
        phase_style = self.PHASE_STYLES.get(phase, "default")
        text = (
            f"[{colour}]{mark}[/] {escape(f'{step:<28}')} [{phase_style}]{escape(f'{phase:<12}')}[/] "
            f"{escape(f'{attempt:<4}')} [{colour}]{escape(f'{status:<6}')}[/] "
            f"[dim]{escape(f'{duration:>9}')}[/]"
        )
        if detail:
            text += f"  {escape(detail)}"
        self._live.console.print(text)

    def running(self, key: str, label: str) -> None:
        with self._lock:
            self._active[key] = (label, time.monotonic())

    def stopped(self, key: str) -> None:
        with self._lock:
            self._active.pop(key, None)

    def close(self) -> None:
        self._live.stop()


def renderer_for(stream: TextIO, *, live: bool | None = None) -> Renderer:
    """Rich when ``stream`` is a terminal (unless ``live`` says otherwise), plain lines otherwise."""
    if live is None:
        live = bool(getattr(stream, "isatty", lambda: False)())
    return LiveProgress(stream) if live else PlainProgress(stream)


# ------------------------------------------------------------------------------------------ tracker

HistoryReader = Callable[[str, str | None], list[dict[str, Any]]]  # (execution, after id) → entries


class Tracker:
    """Turns deliveries and history entries of one execution (and its children) into lines.

    ``read_history(execution_id, after_id)`` returns entries newer than ``after_id`` (each a dict
    with an ``id``); ``parent_of(execution_id)`` tells whether an execution is a child (and of
    whom), so child workflows show up indented under their parent.
    """

    def __init__(
        self,
        root: str,
        renderer: Renderer,
        read_history: HistoryReader,
        parent_of: Callable[[str], str | None],
        workflow_of: Callable[[str], str] = lambda eid: "",
        due_of: Callable[[str], float | None] = lambda eid: None,
    ) -> None:
        self.root = root
        self.renderer = renderer
        self.read_history = read_history
        self.parent_of = parent_of
        self.workflow_of = workflow_of
        self.due_of = due_of
        self._cursor: dict[str, str | None] = {root: None}
        self._depth: dict[str, int] = {root: 0}
        self._unrelated: set[str] = set()
        self._lock = threading.Lock()

    def depth(self, execution_id: str) -> int | None:
        """0 for the root, n for an n-th level child, None for executions that are not ours."""
        if execution_id in self._depth:
            return self._depth[execution_id]
        if execution_id in self._unrelated:
            return None
        chain = [execution_id]
        current: str | None = execution_id
        for _ in range(32):
            current = self.parent_of(current) if current is not None else None
            if current is None:
                break
            if current in self._depth:
                base = self._depth[current]
                for i, eid in enumerate(reversed(chain)):
                    self._depth[eid] = base + 1 + i
                    self._cursor.setdefault(eid, None)
                return self._depth[execution_id]
            chain.append(current)
        self._unrelated.update(chain)
        return None

    def observe(self, event: str, message: Message, outcome: Any) -> None:
        """The delivery observer (see :func:`engine.embedded.in_process_delivery`)."""
        try:
            with self._lock:
                depth = self.depth(message.execution_id)
            if depth is None:
                return
            key = f"{message.execution_id}|{message.branch}|{message.node}|{message.seq}"
            if event == "start":
                node = message.node.split("#", 1)[0]
                label = SPECIAL_NODES.get(node, node)
                if message.branch:
                    label += f" [{message.branch}]"
                self.renderer.running(key, "  " * depth + label)
            else:
                self.renderer.stopped(key)
                self.refresh()
        except Exception:  # progress must never break a run
            pass

    def refresh(self) -> None:
        """Print everything new in the history of the tracked executions."""
        with self._lock:
            for eid in list(self._cursor):
                entries = self.read_history(eid, self._cursor[eid])
                if not entries:
                    continue
                self._cursor[eid] = entries[-1].get("id")
                for entry in entries:
                    line = self.to_line(eid, entry)
                    if line is not None:
                        self.renderer.line(line)

    def to_line(self, eid: str, entry: dict[str, Any]) -> Line | None:
        depth = self._depth.get(eid, 0)
        event = entry.get("event")
        step = entry.get("step") or ""
        branch = entry.get("branch") or ""
        if event is None and step:
            detail = ""
            if entry.get("error"):
                detail = f"{entry['error']}: {entry.get('message') or ''}".rstrip(": ")
            return Line(
                "node",
                step,
                depth,
                phase=entry.get("phase") or "run",
                status=entry.get("status") or "",
                attempt=_int(entry.get("attempt")),
                duration_ms=_int(entry.get("duration_ms")),
                branch=branch,
                detail=detail,
            )
        if event == "retry":
            delay = _int(entry.get("delay_ms")) or 0
            return Line(
                "retry",
                step,
                depth,
                branch=branch,
                detail=f"attempt {entry.get('attempt')} in {_fmt_ms(delay)}",
            )
        if event == "park":
            detail = _park_detail(entry)
            if entry.get("wait_wait") in ("for", "until"):
                due = self.due_of(eid)
                if due is not None:
                    detail = "until " + _dt.datetime.fromtimestamp(due, _dt.UTC).isoformat(timespec="seconds")
            return Line("waiting", step, depth, branch=branch, detail=detail)
        if event == "compensating":
            return Line("compensating", "saga", depth, detail=f"after {entry.get('error') or 'a failure'}")
        if event == "finished":
            label = self.workflow_of(eid) or ("child" if depth else "execution")
            detail = entry.get("status") or ""
            if entry.get("error"):
                detail += f" ({entry['error']})"
            return Line("finished", label, depth, detail=detail)
        if event == "halted":
            return Line("halted", step or "execution", depth, branch=branch, detail=entry.get("error") or "")
        if event in ("started", "start"):
            return None
        if event:
            detail = ", ".join(
                f"{k}={v}" for k, v in entry.items() if k not in ("id", "event", "time", "step")
            )
            return Line(str(event), step or "execution", depth, branch=branch, detail=detail)
        return None


def _park_detail(entry: dict[str, Any]) -> str:
    """What a parked step waits for. Park entries carry the wait's info as ``wait_<key>`` fields
    (``wait_wait``: for/until/event, ``wait_event``, ``wait_key``, ``wait_child``)."""
    info = {k[5:]: v for k, v in entry.items() if k.startswith("wait_")}
    kind = info.get("wait")
    if kind == "event":
        name, key = info.get("event", "EVENT"), info.get("key", "")
        return f"for event {name} key={key}  (send it: hopflow notify {name} --key {key} --data JSON)"
    if kind == "until":
        return f"until {info['until']}" if info.get("until") else "until its time (wait.until)"
    if kind == "for":
        return f"for {info['ms']} ms" if info.get("ms") else "for its delay (wait.for)"
    if info.get("child"):
        return f"for child execution {info['child']}"
    if kind == "offload":
        return f"for the offloaded call {info['call']}" if info.get("call") else "for its offloaded call"
    rest = {k: v for k, v in entry.items() if k not in ("id", "event", "time", "step", "branch")}
    return ", ".join(f"{k}={v}" for k, v in rest.items())


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
