"""Logs: one line per node (an observer), and the text or JSON format of every line ``serve`` writes.

The node line names the execution, workflow, step, kind, outcome, attempt and milliseconds — never
inputs, outputs or headers, so no secret reaches it. ``--log-format json`` (``HOPFLOW_LOG_FORMAT``)
writes one JSON object per line with ``time``, ``level``, ``logger``, ``message``, the node's fields
and ``trace_id`` (empty until traces exist: :attr:`NodeEvent.trace_id` is the seam).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from typing import Any

from engine.observe import NodeEvent

NODE_LOGGER = "hopflow.node"
FIELDS = (
    "execution_id",
    "workflow",
    "step",
    "kind",
    "phase",
    "outcome",
    "attempt",
    "ms",
    "branch",
    "trace_id",
)


class NodeLog:
    """Logs each node at INFO on ``hopflow.node`` (errors and retries at WARNING)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger(NODE_LOGGER)

    def node(self, e: NodeEvent) -> None:
        level = logging.WARNING if e.outcome in ("error", "retry", "compensation_failed") else logging.INFO
        if not self.log.isEnabledFor(level):
            return
        where = f" branch={e.branch}" if e.branch else ""
        self.log.log(
            level,
            "node execution=%s workflow=%s step=%s kind=%s outcome=%s attempt=%d ms=%.1f%s",
            e.execution_id,
            e.workflow,
            e.step,
            e.kind,
            e.outcome,
            e.attempt,
            e.ms,
            where,
            extra={"node": {f: getattr(e, f) for f in FIELDS}},
        )

    def delivery(self, result: str) -> None:
        pass

    def finished(self, workflow: str, status: str) -> None:
        pass

    def published(self, dispatcher: str, count: int, ok: bool) -> None:
        pass


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a node line carries its fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        node = getattr(record, "node", None)
        if isinstance(node, dict):
            line.update(node)
            line["ms"] = round(float(node.get("ms") or 0), 1)
        line.setdefault("trace_id", getattr(record, "trace_id", "") or "")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(log_format: str, level: str) -> dict[str, Any]:
    """Format the root logger's lines; returns the uvicorn ``log_config`` that writes its own
    lines (startup, access) in the same format."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    fmt = "engine.observe.logs.JsonFormatter" if log_format == "json" else "logging.Formatter"
    spec: dict[str, Any] = {"()": fmt} if log_format == "json" else {"()": fmt, "fmt": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"hopflow": spec},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "hopflow"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["default"], "level": level.upper(), "propagate": False},
        },
    }
