"""Redis: the key layout, the Lua scripts and the few plain commands the runtime needs.

Every key of one execution carries the hash tag ``{<execution id>}`` (``hf:{E}:h``, ``hf:{E}:b:<branch>``
…) so that each script touches exactly one cluster slot; the graph (``hf:graph:<hash>``), the event
keys (``hf:ev:{<digest>}:…``) and ``hf:active`` live in other slots and are always separate commands.

Scripts live in ``engine/state/lua/*.lua``; ``lib.lua`` is prepended to each. They are called by SHA
(``EVALSHA``); on ``NOSCRIPT`` (a fresh or flushed server, a failover) the script is loaded with
``SCRIPT LOAD`` and the call repeated. The layout is documented in docs/engine-design.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from dsl.graph import Graph
from engine.errors import GraphMissing, InvalidExecutionId, StoreUnavailable
from engine.model import OffloadRequest, Outgoing
from engine.state.namespace import check_namespace, key_prefix

LUA_DIR = Path(__file__).with_name("lua")
SCRIPTS = ("begin", "checkpoint", "start", "stop", "resume", "dead", "event", "unlock", "index", "expire")
# any execution's id; "~" appears only in the ids the runtime gives child executions
# (<parent>~<step>.<seq>): clients can never start one (CLIENT_EXECUTION_ID), so never squat one
EXECUTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+=~-]{0,199}$")
CLIENT_EXECUTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,199}$")
CHILD_MARK = "~"
ACTIVE = "hf:active"
# the execution-wide keys any script may touch (declared in KEYS after header, branch and lock)
EXECUTION_KEYS = ("out", "oc", "o", "v", "vm", "c", "x", "p", "bs")
# scripts whose every key is in KEYS on every path (checkpoint and stop may wake parked branches or
# start a foreach's next item, whose keys come from stored data): on Upstash Redis these carry the
# shebang that lets them lock only their keys instead of the whole database
FULLY_DECLARED = frozenset({"begin", "start", "resume", "dead", "event", "unlock"})
KEY_LOCKING_SHEBANG = "#!lua flags=allow-key-locking\n"
DAY_S = 86_400


def text(value: Any) -> Any:
    """Bytes from a client without ``decode_responses`` → str; anything else unchanged."""
    if isinstance(value, bytes):
        return value.decode()
    return value


def check_execution_id(execution_id: Any) -> str:
    """Any execution's id (lookups, deliveries): child ids included."""
    if not isinstance(execution_id, str) or not EXECUTION_ID.fullmatch(execution_id):
        raise InvalidExecutionId(
            "an execution id must be 1-200 characters: letters, digits and _.:@+=- "
            "(starting with a letter or digit)"
        )
    return execution_id


def check_client_execution_id(execution_id: Any) -> str:
    """An id a client chooses for a new execution: ``~`` is reserved for child executions."""
    if isinstance(execution_id, str) and CHILD_MARK in execution_id and EXECUTION_ID.fullmatch(execution_id):
        raise InvalidExecutionId(
            f"an execution id may not contain {CHILD_MARK!r}: it is reserved for child executions"
        )
    check_execution_id(execution_id)
    return execution_id


def base(execution_id: str, namespace: str = "") -> str:
    return f"{key_prefix(namespace)}hf:{{{execution_id}}}:"


def header_key(execution_id: str, namespace: str = "") -> str:
    return base(execution_id, namespace) + "h"


def branch_key(execution_id: str, branch: str, namespace: str = "") -> str:
    return base(execution_id, namespace) + "b:" + branch


def lock_key(execution_id: str, branch: str, namespace: str = "") -> str:
    return base(execution_id, namespace) + "l:" + branch


def event_base(name: str, key: str, namespace: str = "") -> str:
    digest = hashlib.sha1(f"{name}\x00{key}".encode()).hexdigest()[:20]
    return f"{key_prefix(namespace)}hf:ev:{{{digest}}}:"


class _Script:
    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def _load_scripts(key_locking: bool = False) -> dict[str, _Script]:
    lib = (LUA_DIR / "lib.lua").read_text()
    out = {}
    for n in SCRIPTS:
        source = lib + "\n" + (LUA_DIR / f"{n}.lua").read_text()
        if key_locking and n in FULLY_DECLARED:
            source = KEY_LOCKING_SHEBANG + source
        out[n] = _Script(n, source)
    return out


class Store:
    """One Redis (or Redis Cluster) client plus the caches that keep the common path at 2 round trips.

    ``history_max`` caps each execution's history stream (``XADD MAXLEN ~``); ``event_ttl_s`` is how
    long an event nobody waits for is kept (7 days); ``retention_s`` (None: forever) expires a
    finished execution's keys.
    """

    def __init__(
        self,
        client: Any,
        *,
        history_max: int = 10_000,
        event_ttl_s: int = 7 * DAY_S,
        retention_s: int | None = None,
        namespace: str = "",
        key_locking: bool = False,
    ) -> None:
        self.client = client
        self.key_locking = key_locking  # Upstash Redis only: other servers refuse the flag
        self.namespace = check_namespace(namespace)
        self.prefix = key_prefix(self.namespace)
        self.active_key = self.prefix + ACTIVE
        self.history_max = history_max
        self.event_ttl_s = event_ttl_s
        self.retention_s = retention_s
        self._scripts = _load_scripts(key_locking)
        self._graphs: dict[str, Graph] = {}
        self._stored: set[str] = set()
        self._pins: OrderedDict[str, str] = OrderedDict()  # execution id → graph hash (LRU)
        self._lock = threading.Lock()
        self._trips = threading.local()
        # Real time for the outbox's "recorded at" stamps (a Runtime binds its clock's ``wall``).
        self.wall: Callable[[], float] = time.time

    def trips(self) -> int:
        """Redis round trips this thread has made through the store (metrics: per node)."""
        return getattr(self._trips, "n", 0)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Store:
        """A store on ``url``: a standalone server or a cluster (:func:`engine.state.redis_url.connect`)."""
        from engine.state.redis_url import connect

        return cls(connect(url), **kwargs)

    # ---------------------------------------------------------------------------------------- keys

    def base(self, execution_id: str) -> str:
        """``[<namespace>:]hf:{<id>}:`` — the prefix of every key of one execution."""
        return base(execution_id, self.namespace)

    def header_key(self, execution_id: str) -> str:
        return header_key(execution_id, self.namespace)

    def branch_key(self, execution_id: str, branch: str) -> str:
        return branch_key(execution_id, branch, self.namespace)

    def lock_key(self, execution_id: str, branch: str) -> str:
        return lock_key(execution_id, branch, self.namespace)

    def event_base(self, name: str, key: str) -> str:
        return event_base(name, key, self.namespace)

    # ------------------------------------------------------------------------------------ plumbing

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        self._trips.n = getattr(self._trips, "n", 0) + 1
        try:
            return fn(*args, **kwargs)
        except redis.exceptions.NoScriptError:
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {type(exc).__name__}") from None
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(f"Redis error: {exc}") from None

    def script(
        self,
        name: str,
        keys: Sequence[str],
        execution_base: str,
        args: dict[str, Any],
        raw: Sequence[str] = (),
    ) -> dict:
        """Run a Lua script by SHA (loading it on NOSCRIPT); its JSON answer, decoded. ``raw``:
        strings passed as they are after the JSON arguments (``ARGV[3]``, …): large values (step
        outputs) are neither escaped into the JSON here nor decoded by the script."""
        import redis

        script = self._scripts[name]
        # Lua's cjson turns JSON null into a truthy sentinel, so scripts must never receive nulls:
        # callers leave None out of nested values; optional top-level arguments are dropped here
        payload = json.dumps(
            {k: v for k, v in args.items() if v is not None}, separators=(",", ":"), ensure_ascii=False
        )
        argv = [*keys, execution_base, payload, *raw]
        try:
            raw = self._call(self.client.evalsha, script.sha, len(keys), *argv)
        except redis.exceptions.NoScriptError:
            self._call(self.client.script_load, script.source)
            raw = self._call(self.client.evalsha, script.sha, len(keys), *argv)
        return json.loads(text(raw))

    # -------------------------------------------------------------------------------------- graphs

    def put_graph(self, graph: Graph) -> None:
        """Store a graph once under its hash (immutable: an existing key is never overwritten)."""
        if graph.hash in self._stored:
            return
        self._call(self.client.set, f"{self.prefix}hf:graph:{graph.hash}", graph.canonical(), nx=True)
        self._stored.add(graph.hash)
        self._graphs.setdefault(graph.hash, graph)

    def get_graph(self, graph_hash: str) -> Graph:
        graph = self._graphs.get(graph_hash)
        if graph is not None:
            return graph
        raw = self._call(self.client.get, f"{self.prefix}hf:graph:{graph_hash}")
        if raw is None:
            raise GraphMissing(graph_hash)
        graph = Graph.from_dict(json.loads(text(raw)))
        if graph.hash != graph_hash:  # the stored JSON is the canonical form, so this cannot drift
            raise GraphMissing(graph_hash)
        with self._lock:
            self._graphs[graph_hash] = graph
        return graph

    def pinned_graph(self, execution_id: str) -> str | None:
        """The graph hash an execution runs (cached: it never changes for an execution)."""
        with self._lock:
            found = self._pins.get(execution_id)
            if found is not None:
                self._pins.move_to_end(execution_id)
                return found
        raw = self._call(self.client.hget, self.header_key(execution_id), "graph")
        if raw is None:
            return None
        self.pin(execution_id, text(raw))
        return text(raw)

    def pin(self, execution_id: str, graph_hash: str) -> None:
        with self._lock:
            self._pins[execution_id] = graph_hash
            self._pins.move_to_end(execution_id)
            while len(self._pins) > 50_000:
                self._pins.popitem(last=False)

    # ------------------------------------------------------------------------------------- scripts

    def run(self, name: str, execution_id: str, args: dict[str, Any], branch: str | None = None) -> dict:
        args.setdefault("hmax", self.history_max)
        # Outbox entries are stamped with the wall clock ("recorded how long ago" decides whether
        # `recover` re-publishes them), never with a virtual clock that `run --fast-forward` jumps.
        args.setdefault("wall", self.wall())
        keys = self.declared_keys(name, execution_id, args, branch)
        outputs = args.get("outputs") if name == "checkpoint" else None
        if outputs:
            # step outputs go as raw ARGV (checkpoint.lua: A.oraw names them): a 10 KB output costs no
            # JSON escaping here and no cjson decoding in the script
            args = {k: v for k, v in args.items() if k != "outputs"}
            args["oraw"] = list(outputs)
            return self.script(name, keys, self.base(execution_id), args, list(outputs.values()))
        return self.script(name, keys, self.base(execution_id), args)

    def declared_keys(
        self, name: str, execution_id: str, args: dict[str, Any], branch: str | None
    ) -> list[str]:
        """Every key script ``name`` may touch that the caller can know, for ``KEYS`` (Redis's scripting
        rule; Upstash's per-key locking). The first three stay where the scripts read them: header,
        then branch and lock when there is a branch. What stays undeclared — the branch hashes of
        parked branches a ``wake`` finds, and the next item a foreach window starts — is built from
        stored data inside the script (docs/engine-design.md, "Keys a script declares")."""
        prefix = self.base(execution_id)
        keys = [prefix + "h"]
        if branch is not None:
            keys += [self.branch_key(execution_id, branch), self.lock_key(execution_id, branch)]
        keys += [prefix + s for s in EXECUTION_KEYS]
        paths: list[str] = []
        paths += [p for p in args.get("ancestors") or () if isinstance(p, str)]
        if name in ("start", "resume"):
            paths.append("")
        elif name == "dead" and isinstance(args.get("branch"), str):
            paths.append(args["branch"])
        elif name == "begin" and branch is not None:
            node = str(args.get("node", "")).split("#", 1)[0]
            keys += [f"{prefix}r:{branch}:{node}", f"{prefix}u:{branch}:{node}"]
        elif name == "checkpoint" and branch is not None:
            undo = args.get("undo")
            if isinstance(undo, dict):  # a fan-out's partial unwind: the losers' entries
                keys.append(f"{prefix}u:{branch}:{undo.get('node', '')}")
            fan = args.get("fanout")
            if isinstance(fan, dict):
                node = str(fan.get("node", ""))
                keys += [f"{prefix}r:{branch}:{node}", f"{prefix}i:{branch}:{node}"]
                inner = f"{branch}/{node}" if branch else node
                for i in range(int(fan.get("start") or 0)):
                    keys.append(self.lock_key(execution_id, f"{inner}/{i}"))
                    paths.append(f"{inner}/{i}")
            nxt = args.get("next")
            if isinstance(nxt, dict):  # a chain: the next node's begin runs in this script too
                node = str(nxt.get("node", "")).split("#", 1)[0]
                keys += [f"{prefix}r:{branch}:{node}", f"{prefix}u:{branch}:{node}"]
            if "finish_branch" in args and branch:
                parts = branch.rsplit("/", 2)  # <parent>/<fan-out node>/<index>
                parent, node = ("", parts[0]) if len(parts) == 2 else (parts[0], parts[1])
                keys += [f"{prefix}r:{parent}:{node}", f"{prefix}i:{parent}:{node}"]
                paths.append(parent)
        keys += [self.branch_key(execution_id, path) for path in paths]
        return list(dict.fromkeys(keys))  # each once, in order

    def event(self, name: str, key: str, args: dict[str, Any]) -> dict:
        prefix = self.event_base(name, key)
        args.setdefault("ttl_s", self.event_ttl_s)
        return self.script("event", [prefix + s for s in ("p", "w", "wi", "c", "ids")], prefix, args)

    def unlock(self, execution_id: str, branch: str, token: str) -> None:
        self.run("unlock", execution_id, {"token": token, "now": 0}, branch)

    def clear_outbox(self, execution_id: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._call(self.client.hdel, self.base(execution_id) + "out", *ids)

    def clear_call(self, execution_id: str, call_id: str) -> None:
        """Forget an offloaded call's record once the dispatcher has it (``hf:{E}:oc``)."""
        self._call(self.client.hdel, self.base(execution_id) + "oc", call_id)

    def calls(self, execution_id: str) -> list[tuple[str, OffloadRequest, float]]:
        """Offloaded calls recorded but not yet handed over: (id, request, recorded at)."""
        raw = self._call(self.client.hgetall, self.base(execution_id) + "oc")
        out = []
        for k, v in raw.items():
            data = json.loads(text(v))
            out.append((text(k), parse_call(data), float(data.get("wall") or data.get("at") or 0)))
        return out

    # --------------------------------------------------------------------------------------- reads

    def header(self, execution_id: str) -> dict[str, str]:
        raw = self._call(self.client.hgetall, self.header_key(execution_id))
        return {text(k): text(v) for k, v in raw.items()}

    def history(self, execution_id: str) -> list[dict[str, str]]:
        raw = self._call(self.client.xrange, self.base(execution_id) + "x")
        return [{"id": text(i), **{text(k): text(v) for k, v in f.items()}} for i, f in raw]

    def branches(self, execution_id: str) -> dict[str, dict[str, str]]:
        names = sorted(text(b) for b in self._call(self.client.smembers, self.base(execution_id) + "bs"))
        out = {}
        for name in names:
            raw = self._call(self.client.hgetall, self.branch_key(execution_id, name))
            out[name] = {text(k): text(v) for k, v in raw.items()}
        return out

    def branches_one(self, execution_id: str, branch: str) -> dict[str, str]:
        raw = self._call(self.client.hgetall, self.branch_key(execution_id, branch))
        return {text(k): text(v) for k, v in raw.items()}

    def outbox(self, execution_id: str) -> list[tuple[str, Outgoing, float]]:
        raw = self._call(self.client.hgetall, self.base(execution_id) + "out")
        return [parse_outbox_entry(text(k), text(v)) for k, v in raw.items()]

    def parked(self, execution_id: str) -> dict[str, str]:
        raw = self._call(self.client.hgetall, self.base(execution_id) + "p")
        return {text(k): text(v) for k, v in raw.items()}

    def outputs(self, execution_id: str, fields: Sequence[str]) -> list[Any]:
        if not fields:
            return []
        raw = self._call(self.client.hmget, self.base(execution_id) + "o", list(fields))
        return [None if v is None else json.loads(text(v)) for v in raw]

    def all_outputs(self, execution_id: str) -> dict[str, Any]:
        """Every step output field (``<branch>/<step>`` inside foreach items), for the views
        (their redaction, the dashboard's step outputs)."""
        raw = self._call(self.client.hgetall, self.base(execution_id) + "o")
        return {text(k): json.loads(text(v)) for k, v in raw.items()}

    def all_vars(self, execution_id: str) -> dict[str, Any]:
        raw = self._call(self.client.hgetall, self.base(execution_id) + "v")
        found = {text(k): json.loads(text(v)) for k, v in raw.items()}
        merged = self._call(self.client.hgetall, self.base(execution_id) + "vm")
        if merged:
            from engine.state.reducers import assemble

            found.update(assemble({text(k): text(v) for k, v in merged.items()}))
        return found

    def touch(self, execution_id: str) -> None:
        """Stamp the header's real-time ``updated_rt`` after a script that only set ``updated_at``."""
        self._call(self.client.hset, self.header_key(execution_id), "updated_rt", f"{time.time():.6f}")

    def compensation_top(self, execution_id: str) -> str | None:
        """The newest entry of the compensation stack (the next compensation to run), if any."""
        return text(self._call(self.client.lindex, self.base(execution_id) + "c", -1))

    def status(self, execution_id: str) -> str | None:
        return text(self._call(self.client.hget, self.header_key(execution_id), "status"))

    def exists(self, execution_id: str) -> bool:
        return bool(self._call(self.client.exists, self.header_key(execution_id)))

    # -------------------------------------------------------------------------------------- active

    def add_active(self, execution_id: str, now: float) -> None:
        self._call(self.client.zadd, self.active_key, {execution_id: now}, nx=True)

    def remove_active(self, execution_id: str) -> None:
        self._call(self.client.zrem, self.active_key, execution_id)

    def active(self, limit: int = 100_000) -> list[str]:
        return [text(m) for m in self._call(self.client.zrange, self.active_key, 0, limit - 1)]

    def expire_execution(self, execution_id: str, seconds: int) -> None:
        """Expire every key of a finished execution (retention)."""
        prefix = self.base(execution_id)
        branches = [text(b) for b in self._call(self.client.smembers, prefix + "bs")]
        keys = [prefix + s for s in ("h", "o", "v", "vm", "c", "x", "out", "oc", "p", "bs")]
        keys += [self.branch_key(execution_id, b) for b in branches]
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.expire(k, seconds)
        self._call(pipe.execute)


def parse_outbox_entry(entry_id: str, body: str) -> tuple[str, Outgoing, float]:
    data = json.loads(body)
    return entry_id, Outgoing.from_dict(data), float(data.get("wall") or data.get("at") or 0)


def outbox_entries(raw: Any) -> list[tuple[str, Outgoing]]:
    """A script's ``out`` (list of [id, body]) or an ``HGETALL`` flat list → (id, Outgoing) pairs."""
    if not raw:
        return []
    if isinstance(raw, dict):
        items = list(raw.items())
    elif raw and isinstance(raw[0], list):
        items = [(i, b) for i, b in raw]
    else:
        items = [(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]
    return [(i, Outgoing.from_dict(json.loads(b))) for i, b in items]


def parse_call(data: dict[str, Any]) -> OffloadRequest:
    return OffloadRequest.from_dict(data)


def call_entries(raw: Any) -> list[OffloadRequest]:
    """A script's ``calls`` (an ``HGETALL`` of ``hf:{E}:oc``, flat or as a map) → the requests."""
    if not raw:
        return []
    values = list(raw.values()) if isinstance(raw, dict) else [raw[i + 1] for i in range(0, len(raw), 2)]
    return [parse_call(json.loads(text(v))) for v in values]
