"""Prometheus metrics: an observer that counts what the runtime reports (prometheus-client).

This module imports prometheus-client, so nothing imports it until metrics are switched on
(``HOPFLOW_METRICS=1``) or ``/metrics`` is first scraped: the webhook's cold start never pays for it
otherwise. Each runtime gets its own registry (tests, several apps in one process). With several
worker processes (``uvicorn --workers N``, gunicorn) set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
folder before the workers start: values then go to files there and ``/metrics`` on any worker
aggregates all of them (prometheus-client's multiprocess mode; the queue-depth gauge, read at scrape
time, is left out in that mode). docs/operations.md lists every metric.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.observe import NodeEvent

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
TRIP_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 25, 50)
_LOCK = threading.Lock()


class PrometheusMetrics:
    """The runtime's counters and histograms; :meth:`render` is the text exposition format."""

    def __init__(self, dispatcher: Any = None) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.nodes = Counter(
            "hopflow_nodes", "Nodes advanced (checkpointed)", ["workflow", "kind", "outcome"], registry=r
        )
        self.step_seconds = Histogram(
            "hopflow_step_seconds",
            "Time one node took, from its delivery's start to its checkpoint",
            ["workflow", "kind"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "hopflow_retries", "Step attempts that failed and will retry", ["workflow", "kind"], registry=r
        )
        self.compensations = Counter(
            "hopflow_compensations", "Compensations run", ["workflow", "outcome"], registry=r
        )
        self.finished_total = Counter(
            "hopflow_executions_finished",
            "Executions that reached a final status",
            ["workflow", "status"],
            registry=r,
        )
        self.deliveries = Counter(
            "hopflow_deliveries",
            "Deliveries handled, by result (advanced, stale, busy, finished, deferred)",
            ["result"],
            registry=r,
        )
        self.round_trips = Histogram(
            "hopflow_redis_round_trips_per_node",
            "Redis round trips one node made",
            ["kind"],
            buckets=TRIP_BUCKETS,
            registry=r,
        )
        self.publishes = Counter(
            "hopflow_publishes",
            "Messages handed to the dispatcher (QStash or the local queue), by result",
            ["dispatcher", "result"],
            registry=r,
        )
        if dispatcher is not None and hasattr(dispatcher, "pending") and not self.multiprocess:
            depth = Gauge(
                "hopflow_local_queue_depth", "Messages waiting or leased in the local dispatcher", registry=r
            )
            depth.set_function(lambda: _depth(dispatcher))

    # ------------------------------------------------------------------------------ the observer

    def node(self, e: NodeEvent) -> None:
        self.nodes.labels(e.workflow, e.kind, e.outcome).inc()
        self.step_seconds.labels(e.workflow, e.kind).observe(e.ms / 1000)
        self.round_trips.labels(e.kind).observe(e.round_trips)
        if e.outcome == "retry":
            self.retries.labels(e.workflow, e.kind).inc()
        if e.phase == "compensate" and e.outcome in ("ok", "error", "compensation_failed"):
            self.compensations.labels(e.workflow, "ok" if e.outcome == "ok" else "failed").inc()

    def delivery(self, result: str) -> None:
        self.deliveries.labels(result).inc()

    def finished(self, workflow: str, status: str) -> None:
        self.finished_total.labels(workflow, status).inc()

    def published(self, dispatcher: str, count: int, ok: bool) -> None:
        self.publishes.labels(dispatcher, "ok" if ok else "failed").inc(count)

    # ----------------------------------------------------------------------------- exposition

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _depth(dispatcher: Any) -> float:
    value = dispatcher.pending()
    return float(value if isinstance(value, int | float) else len(value))


def enable(runtime: Any) -> PrometheusMetrics:
    """The runtime's metrics, created and registered as an observer on the first call."""
    with _LOCK:
        found = getattr(runtime, "metrics", None)
        if found is None:
            found = PrometheusMetrics(getattr(runtime, "dispatcher", None))
            runtime.metrics = found
            runtime.observers.add(found)
        return found
