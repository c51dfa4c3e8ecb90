"""OpenTelemetry traces: an observer that records one span per node attempt, in one trace per execution.

This module imports the OpenTelemetry SDK (``pip install 'hopflow[otel]'``), so nothing imports it
until traces are switched on (:func:`engine.observe.traceids.enabled`: ``HOPFLOW_OTEL=1``, or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_TRACES_EXPORTER``).

Spans are recorded after the fact, when a node's checkpoint is written (the observer's ``node``):
its start is the delivery's start, its end the checkpoint. Trace and span ids are not random but
derived from the execution (:mod:`engine.observe.traceids`), so the spans that different webhook
calls — different processes, after QStash or the local queue — record for one execution land in one
trace without any context in the messages, and a span can name another it never saw (the execution's
root, the step a compensation undoes). The root span is recorded when the execution ends; until then
a collector shows the node spans under a parent it has not received yet.

The provider is hopflow's own (not the process-global one), with its id generator and, by default,
the exporter named by ``OTEL_TRACES_EXPORTER`` (``otlp``: ``opentelemetry-exporter-otlp-proto-http``,
configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables; ``console``; ``none``) behind a batch
processor. Nothing secret is recorded: ids, names, outcomes, and for ``http`` steps the method, the
URL without credentials or query (secret values redacted) and the status.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from engine.observe import ExecutionEvent, NodeEvent
from engine.observe.traceids import root_span_id, span_id, trace_id

log = logging.getLogger("hopflow.traces")

FAILED_OUTCOMES = frozenset({"error", "retry", "compensation_failed"})
FAILED_STATUSES = frozenset({"failed", "dead", "compensation_failed"})
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_LOCK = threading.Lock()


class DerivedIds(IdGenerator):
    """Random ids, except for the span being started now: its ids were derived from the execution."""

    def __init__(self) -> None:
        self.local = threading.local()

    def next(self, trace: int, span: int) -> None:
        self.local.ids = (trace, span)

    def generate_span_id(self) -> int:
        ids = getattr(self.local, "ids", None)
        if ids is None:
            return random.getrandbits(64) or 1
        self.local.ids = None
        return ids[1]

    def generate_trace_id(self) -> int:
        ids = getattr(self.local, "ids", None)
        return ids[0] if ids is not None else (random.getrandbits(128) or 1)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _context(trace_hex: str, span_hex: str) -> SpanContext:
    return SpanContext(int(trace_hex, 16), int(span_hex, 16), is_remote=True, trace_flags=SAMPLED)


class Traces:
    """The observer: node spans (parent: the execution's root span), root spans at the end."""

    def __init__(self, processors: list[SpanProcessor] | None = None) -> None:
        self.ids = DerivedIds()
        attributes: dict[str, Any] = {}
        if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        ):
            attributes["service.name"] = "hopflow"
        self.provider = TracerProvider(resource=Resource.create(attributes), id_generator=self.ids)
        for processor in processors if processors is not None else default_processors():
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("hopflow")
        self._lock = threading.Lock()  # the derived ids are handed over through the id generator

    def _record(
        self,
        name: str,
        ids: tuple[str, str],
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        links: list[Link],
        start: float,
        end: float,
        error: str | None,
    ) -> None:
        context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
        with self._lock:
            self.ids.next(int(ids[0], 16), int(ids[1], 16))
            span = self.tracer.start_span(
                name,
                context=context or trace.set_span_in_context(trace.INVALID_SPAN),
                kind=kind,
                attributes=dict(attributes),
                links=links,
                start_time=_ns(start),
            )
            self.ids.local.ids = None
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=_ns(max(end, start)))

    # ------------------------------------------------------------------------------ the observer

    def node(self, e: NodeEvent) -> None:
        if e.seq < 0:
            return
        trace_hex = e.trace_id or trace_id(e.execution_id)
        attributes: dict[str, Any] = {
            "hopflow.execution_id": e.execution_id,
            "hopflow.workflow": e.workflow,
            "hopflow.step": e.step,
            "hopflow.kind": e.kind,
            "hopflow.phase": e.phase,
            "hopflow.outcome": e.outcome,
            "hopflow.attempt": e.attempt,
            "hopflow.branch": e.branch,
            "hopflow.seq": e.seq,
        }
        attributes.update(e.attributes)
        links = []
        if e.undoes:
            links.append(Link(_context(trace_hex, e.undoes), {"hopflow.link": "compensates"}))
        client = e.kind == "http" and "url.full" in e.attributes
        name = f"compensate {e.step}" if e.phase == "compensate" else e.step
        self._record(
            name,
            (trace_hex, span_id(e.execution_id, e.branch, e.seq)),
            _context(trace_hex, root_span_id(e.execution_id)),
            SpanKind.CLIENT if client else SpanKind.INTERNAL,
            attributes,
            links,
            e.ended_at - e.ms / 1000,
            e.ended_at,
            e.outcome if e.outcome in FAILED_OUTCOMES else None,
        )

    def ended(self, e: ExecutionEvent) -> None:
        links = []
        parent = e.parent or {}
        if parent.get("eid") and isinstance(parent.get("seq"), int):  # the step that started this child
            peid, pbranch = str(parent["eid"]), str(parent.get("branch") or "")
            pspan = span_id(peid, pbranch, int(parent["seq"]) - 1)
            links.append(Link(_context(trace_id(peid), pspan), {"hopflow.link": "parent"}))
        self._record(
            e.workflow,
            (trace_id(e.execution_id), root_span_id(e.execution_id)),
            None,
            SpanKind.INTERNAL,
            {
                "hopflow.execution_id": e.execution_id,
                "hopflow.workflow": e.workflow,
                "hopflow.status": e.status,
            },
            links,
            e.created_at or e.ended_at,
            e.ended_at,
            e.status if e.status in FAILED_STATUSES else None,
        )

    def flush(self, timeout_ms: int = 5000) -> bool:
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()


def default_processors() -> list[SpanProcessor]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``), each behind a batch processor."""
    names = [n.strip().lower() for n in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")]
    out: list[SpanProcessor] = []
    for name in names:
        exporter: SpanExporter
        if name in ("", "none"):
            continue
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored (otlp, console, none)", name)
            continue
        out.append(BatchSpanProcessor(exporter))
    return out


def enable(runtime: Any, exporter: SpanExporter | None = None) -> Traces:
    """The runtime's traces, created and registered as an observer on the first call. ``exporter``
    (tests: the SDK's ``InMemorySpanExporter``) replaces the configured ones, exporting at once."""
    with _LOCK:
        found = getattr(runtime, "traces", None)
        if found is None:
            processors = [SimpleSpanProcessor(exporter)] if exporter is not None else None
            found = Traces(processors)
            runtime.traces = found
            runtime.observers.add(found)
        return found
