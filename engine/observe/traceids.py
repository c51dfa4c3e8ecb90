"""Trace and span ids derived from the execution id: the trace context every delivery already carries.

An execution is one trace. Its id is not stored or sent anywhere: it is the first 16 bytes of
SHA-256 of the execution id, so every webhook call (QStash, the local queue, a redelivery after a
crash, another process) computes the same one from the message it was given — the message's
``execution_id`` *is* the propagated context, and dedup ids and the two round trips per node stay
as they are. Span ids are derived the same way:

* the execution's root span: from the execution id alone (every node span's parent);
* a node attempt's span: from execution, branch and the branch's ``seq`` the node ran at (each
  advance is fenced on that ``seq``, so exactly one delivery records it). An ``http`` step knows its
  own span id before the call (``traceparent`` to the called service); a compensation knows the span
  of the step it undoes (the stack entry keeps that step's ``seq``).

Only the standard library: log lines carry the trace id whether or not OpenTelemetry is on, and the
webhook's cold start imports nothing more for it. :mod:`engine.observe.traces` records the spans.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

_FALSE = frozenset({"0", "false", "no", "off"})
_TRUE = frozenset({"1", "true", "yes", "on"})


def _digest(text: str, size: int) -> str:
    raw = hashlib.sha256(text.encode()).digest()[:size]
    if not any(raw):  # all-zero ids are invalid in W3C trace context (never in practice)
        raw = b"\x01" * size
    return raw.hex()


def trace_id(execution_id: str) -> str:
    """The execution's trace id: 32 lowercase hex digits."""
    return _digest(f"hopflow.trace:{execution_id}", 16)


def root_span_id(execution_id: str) -> str:
    """The execution's own span (parent of every node span): 16 lowercase hex digits."""
    return _digest(f"hopflow.root:{execution_id}", 8)


def span_id(execution_id: str, branch: str, seq: int) -> str:
    """The span of the node that ran on ``branch`` at checkpoint ``seq``."""
    return _digest(f"hopflow.node:{execution_id}|{branch}|{seq}", 8)


def traceparent(execution_id: str, branch: str, seq: int) -> str:
    """The W3C ``traceparent`` header naming that node's span as the parent (sampled)."""
    return f"00-{trace_id(execution_id)}-{span_id(execution_id, branch, seq)}-01"


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether spans are recorded: ``HOPFLOW_OTEL=1`` (``0`` turns them off whatever else is set);
    unset, the standard OpenTelemetry variables decide — an OTLP endpoint, or a traces exporter
    other than ``none`` — unless ``OTEL_SDK_DISABLED=true``."""
    env = os.environ if env is None else env
    own = (env.get("HOPFLOW_OTEL") or "").strip().lower()
    if own in _TRUE:
        return True
    if own in _FALSE:
        return False
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    exporter = (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
