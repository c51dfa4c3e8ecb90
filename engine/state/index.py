"""Listing and counting executions: an index beside the records, never instead of them.

The index is a handful of sorted sets scored by start time (real time, whatever clock the runtime
runs on) with the execution id as member — every execution (``all``), per status, per workflow, per
(workflow, status), per graph, per parent — plus a hash of what the index believes about each
execution. All of it lives under one hash tag (``hf:{idx}:``) and is changed only by
``engine/state/lua/index.lua``, so every index call touches one cluster slot. The execution's own keys live
in its own slot, so the checkpoint cannot update the index in the same script: the runtime writes
the index in a separate call — before the record on creation, after the checkpoint on a status
change. The record is the truth and the index may lag (a crash between the two calls): a listing
re-reads every execution it returns, drops the ones whose record is gone (expired: ``retention_s``),
repairs a stale status and filters on what the record says, so a page is always right for its
filters. ``Runtime.recover`` (the periodic sweep) drops the entries of executions that expired.

The cursor is the (score, id) of the last execution a page looked at: executions that start later
score higher and never appear on later pages, so paging is stable under concurrent starts.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from typing import Any

from engine.state.store import Store, text

PREFIX = "hf:{idx}:"
ENTRIES = PREFIX + "e"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
SCAN_BUDGET = 2_000  # index entries one page may examine before it answers short (with a cursor)
GRACE_S = 120.0  # an entry without a record younger than this may be a start being written right now
SWEEP_BATCH = 500
STATUSES = (
    "running",
    "queued",  # waiting for a flow_control max_running slot (engine/flow/slots.py)
    "compensating",
    "compensation_failed",
    "succeeded",
    "failed",
    "compensated",
    "cancelled",
    "dead",
)
HEADER_FIELDS = ("workflow", "graph", "status", "parent", "updated_at", "updated_rt", "created_rt")


class FilterError(ValueError):
    """A listing request that cannot be answered (bad filter, cursor or limit); ``.message`` says why."""

    def __init__(self, message: str, param: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Filters:
    status: frozenset[str] = field(default_factory=frozenset)
    workflow: str | None = None
    graph: str | None = None
    parent: str | None = None
    started_after: float | None = None
    started_before: float | None = None
    updated_after: float | None = None
    updated_before: float | None = None

    def matches(self, summary: dict[str, Any], updated: float | None) -> bool:
        if self.status and summary["status"] not in self.status:
            return False
        if self.workflow is not None and summary["workflow"] != self.workflow:
            return False
        if self.graph is not None and summary["graph"] != self.graph:
            return False
        if self.parent is not None and summary["parent"] != self.parent:
            return False
        if self.updated_after is not None and (updated is None or updated < self.updated_after):
            return False
        return not (self.updated_before is not None and (updated is None or updated >= self.updated_before))


# ------------------------------------------------------------------------------------ parsing


def parse_time(value: str, param: str) -> float:
    """ISO 8601 (a zone-less time is UTC) or epoch seconds → epoch seconds."""
    raw = value.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise FilterError(
            f"{param}: {value[:60]!r} is not a time (ISO 8601, e.g. 2026-01-31T12:00:00Z, or epoch seconds)",
            param,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp()


def parse_filters(params: dict[str, list[str]]) -> tuple[Filters, str | None, int]:
    """Query parameters (name → every value given) → (filters, cursor, limit); FilterError if invalid."""
    known = {
        "status",
        "workflow",
        "graph",
        "parent",
        "started_after",
        "started_before",
        "updated_after",
        "updated_before",
        "cursor",
        "limit",
    }
    for name in params:
        if name not in known:
            raise FilterError(f"unknown parameter {name[:40]!r} (known: {', '.join(sorted(known))})", name)
    statuses: set[str] = set()
    for value in params.get("status", []):
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if part not in STATUSES:
                raise FilterError(f"status: {part[:40]!r} is not one of {', '.join(STATUSES)}", "status")
            statuses.add(part)

    def one(name: str) -> str | None:
        values = params.get(name) or []
        if len(values) > 1:
            raise FilterError(f"{name}: give it once", name)
        return values[0] if values and values[0] != "" else None

    def when(name: str) -> float | None:
        value = one(name)
        return None if value is None else parse_time(value, name)

    limit_raw = one("limit")
    limit = DEFAULT_LIMIT
    if limit_raw is not None:
        try:
            limit = int(limit_raw)
        except ValueError:
            raise FilterError(f"limit: {limit_raw[:20]!r} is not a whole number", "limit") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise FilterError(f"limit must be between 1 and {MAX_LIMIT} (got {limit})", "limit")
    filters = Filters(
        status=frozenset(statuses),
        workflow=one("workflow"),
        graph=one("graph"),
        parent=one("parent"),
        started_after=when("started_after"),
        started_before=when("started_before"),
        updated_after=when("updated_after"),
        updated_before=when("updated_before"),
    )
    return filters, one("cursor"), limit


def encode_cursor(score: str, eid: str) -> str:
    raw = json.dumps([score, eid], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, eid = json.loads(raw)
        float(score)
        if not isinstance(score, str) or not isinstance(eid, str):
            raise ValueError
    except (ValueError, TypeError):
        raise FilterError(
            "cursor: not a cursor this server gave out (use next_cursor as is)", "cursor"
        ) from None
    return score, eid


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -------------------------------------------------------------------------------------- writes


def _script(store: Store, args: dict[str, Any]) -> dict[str, Any]:
    prefix = store.prefix + PREFIX  # a namespace (engine/state/namespace.py) goes in front of the tag
    return store.script("index", [prefix + "e"], prefix, args)


def put(
    store: Store,
    execution_id: str,
    *,
    workflow: str,
    graph: str,
    status: str,
    started: float,
    parent: str | None = None,
) -> None:
    """Index a new execution (before its record is written: a crash leaves an entry the next read
    drops, never a record nobody can list)."""
    _script(
        store,
        {
            "op": "put",
            "eid": execution_id,
            "w": workflow,
            "g": graph,
            "s": status,
            "t": repr(round(started, 6)),
            "p": parent,
            "now": time.time(),
        },
    )


def moved(store: Store, execution_id: str, status: str, *, force: bool = False) -> None:
    """An execution's status changed (after its checkpoint). Never moves an entry back (a late
    writer) unless ``force`` (a resume, a repair from the record)."""
    found = _script(
        store, {"op": "put", "eid": execution_id, "s": status, "now": time.time(), "force": force}
    )
    if found.get("kind") == "missing":  # started before the index existed: index it from its record
        header = store.header(execution_id)
        if header:
            _put_from_header(store, execution_id, header)


def _put_from_header(store: Store, execution_id: str, header: dict[str, str]) -> None:
    parent = parent_id(header.get("parent"))
    started = header.get("created_rt") or header.get("started_at") or header.get("created_at") or time.time()
    put(
        store,
        execution_id,
        workflow=header.get("workflow") or "",
        graph=header.get("graph") or "",
        status=header.get("status") or "running",
        started=float(started),
        parent=parent,
    )


def drop(store: Store, ids: list[str]) -> int:
    if not ids:
        return 0
    return int(_script(store, {"op": "drop", "ids": ids}).get("n") or 0)


def sweep(store: Store, now: float | None = None) -> int:
    """Drop the entries of finished executions whose records expired (``retention_s``); bounded."""
    if not store.retention_s:
        return 0
    now = time.time() if now is None else now
    found = _script(store, {"op": "due", "before": repr(now - store.retention_s), "n": SWEEP_BATCH})
    ids = [text(i) for i in _as_list(found.get("ids"))]
    if not ids:
        return 0
    exists = _pipelined(store, [("exists", store.header_key(i)) for i in ids])
    return drop(store, [i for i, e in zip(ids, exists, strict=True) if not e])


# --------------------------------------------------------------------------------------- reads


def counts(store: Store) -> dict[str, Any]:
    """Executions per status and per workflow and status (the index's view: entries of executions
    that expired count until the sweep drops them)."""
    found = _script(store, {"op": "counts"})
    status = found.get("status") or {}
    workflow = found.get("workflow") or {}
    return {
        "status": {k: int(v) for k, v in status.items()} if isinstance(status, dict) else {},
        "workflow": {w: {k: int(v) for k, v in per.items()} for w, per in workflow.items()}
        if isinstance(workflow, dict)
        else {},
    }


@dataclass
class Page:
    executions: list[dict[str, Any]]
    next_cursor: str | None


def list_executions(
    store: Store, filters: Filters, cursor: str | None = None, limit: int = DEFAULT_LIMIT
) -> Page:
    """Newest first (start time, then id), at most ``limit``, every one checked against its record."""
    if not 1 <= limit <= MAX_LIMIT:
        raise FilterError(f"limit must be between 1 and {MAX_LIMIT} (got {limit})", "limit")
    keys = _sources(filters)
    max_s = "+inf" if filters.started_before is None else f"({filters.started_before!r}"
    min_s = "-inf" if filters.started_after is None else repr(filters.started_after)
    after: tuple[str, str] | None = decode_cursor(cursor) if cursor else None
    if after is not None and (filters.started_before is None or float(after[0]) < filters.started_before):
        max_s = after[0]
    out: list[dict[str, Any]] = []
    examined = 0
    now = time.time()
    while True:
        batch = min(MAX_LIMIT, max(limit - len(out), 1) + 8)
        args: dict[str, Any] = {"op": "page", "keys": keys, "max": max_s, "min": min_s, "n": batch}
        if after is not None and max_s == after[0]:
            args["after"], args["cscore"] = after[1], after[0]
        items = _as_list(_script(store, args).get("items"))
        if not items:
            return Page(out, None)
        headers = _pipelined(store, [("hmget", store.header_key(text(i[0])), *HEADER_FIELDS) for i in items])
        gone: list[str] = []
        for (eid, score, view), values in zip(items, headers, strict=True):
            eid, score = text(eid), text(score)
            examined += 1
            after, max_s = (score, eid), score
            header = dict(zip(HEADER_FIELDS, (text(v) for v in values), strict=True))
            if header["status"] is None:
                if now - float(score) > GRACE_S:
                    gone.append(eid)
                continue
            summary = _summary(eid, float(score), header)
            believed = json.loads(view).get("s") if view else None
            if believed != header["status"]:  # the index lagged: repair it (a late writer may have
                # moved it further already: go back only where the record itself went back, a resume)
                moved(store, eid, header["status"], force=_rank(believed) > _rank(header["status"]))
            updated = _updated(header)
            if filters.matches(summary, updated):
                out.append(summary)
                if len(out) >= limit:
                    drop(store, gone)
                    return Page(out, encode_cursor(score, eid))
        drop(store, gone)
        if len(items) < batch:
            return Page(out, None)
        if examined >= SCAN_BUDGET:
            return Page(out, encode_cursor(*after))


def _rank(status: str | None) -> int:
    return {"running": 0, "compensating": 1, "compensation_failed": 2}.get(status or "running", 3)


def _sources(filters: Filters) -> list[str]:
    """The sorted sets to merge: the most selective the filters allow; the rest is checked per entry."""
    if filters.parent is not None:
        return ["p:" + filters.parent]
    if filters.graph is not None:
        return ["g:" + filters.graph]
    if filters.workflow is not None and filters.status:
        return [f"ws:{filters.workflow}:{s}" for s in sorted(filters.status)]
    if filters.workflow is not None:
        return ["w:" + filters.workflow]
    if filters.status:
        return ["s:" + s for s in sorted(filters.status)]
    return ["all"]


def _summary(eid: str, started: float, header: dict[str, str | None]) -> dict[str, Any]:
    return {
        "execution_id": eid,
        "workflow": header["workflow"],
        "graph": header["graph"],
        "status": header["status"],
        "started_at": iso(started),
        "updated_at": iso(_updated(header)),
        "parent": parent_id(header["parent"]),
    }


def _updated(header: dict[str, str | None]) -> float | None:
    raw = header.get("updated_rt") or header.get("updated_at")
    return float(raw) if raw else None


def parent_id(raw: str | None) -> str | None:
    """The parent execution id in a header's ``parent`` link (JSON ``{"eid", ...}``), if any."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value.get("eid") if isinstance(value, dict) else None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []  # cjson writes an empty array as {}


def _pipelined(store: Store, commands: list[tuple[Any, ...]]) -> list[Any]:
    """One command per key (each in its own slot) in one non-transactional pipeline: one round trip
    on a single Redis, one per node on a cluster."""
    pipe = store.client.pipeline(transaction=False)
    for name, *args in commands:
        getattr(pipe, name)(*args)
    return list(store._call(pipe.execute))
