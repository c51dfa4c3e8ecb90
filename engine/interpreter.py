"""``advance(message)``: begin → run one node → decide → checkpoint → publish (→ clear what must be).

The common path is two Redis round trips: ``begin.lua`` (check ``seq``, take the branch lock, load
the header, the branch and only the step outputs and vars this node's templates read), then
``checkpoint.lua`` (fenced write of everything the node produced, outbox included); a node chained
in the same call is begun by its predecessor's checkpoint script (``next``), so it costs one. The published
outbox entries of immediate messages to this execution are deleted by their own delivery's
checkpoint; only delayed and foreign ones need an ``HDEL`` (:func:`consumed_later`). The graph comes
from an in-process cache keyed by its hash.

Crash-injection hooks: ``Runtime(faults=f)`` calls ``f(point, message)`` at ``before_step``,
``after_step``, ``after_checkpoint`` and ``after_publish``; raising from it simulates a crash there.

Offloaded ``http`` steps (``offload: true``, :mod:`engine.steps.offload`) park their branch with the
rendered request recorded in the checkpoint (``hf:{E}:oc``); after the checkpoint the request goes to
the dispatcher's ``call`` and its record is cleared, like the outbox. :meth:`Interpreter.complete` is
the way back in: the answer, fenced on the parked ``seq``, continues the step like an inline response.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dsl.graph import Graph, Node, Retry
from engine import context, dynamic, sagas
from engine.clock import wall_of
from engine.context import (
    MISSING,
    build_scope,
    input_field,
    may_end,
    output_field,
    render_value,
    truthy,
    var_names,
)
from engine.decide import (
    Done,
    Ended,
    Failed,
    FanOut,
    Goto,
    Jump,
    Outcome,
    Park,
    Raise,
    RetryLater,
    Skipped,
    after_error,
    after_success,
)
from engine.errors import UnknownExecution
from engine.model import TERMINAL, Message, NotCurrent, Outgoing, Status, StepContext, StepError, StepFailure
from engine.observe import ExecutionEvent, NodeEvent, node_outcome, traceids
from engine.redact import Redactor, env_secrets, remember, secret_strings
from engine.state.store import call_entries, outbox_entries

if TYPE_CHECKING:
    from engine.model import OffloadRequest
    from engine.runtime import Runtime
    from engine.steps.offload import Completion

log = logging.getLogger("hopflow.interpreter")

HFIELDS = ("status", "input", "started_at", "deadline", "stop", "parent", "comp_ran", "error", "created_rt")
CHEAP = frozenset({"set", "switch", "succeed", "fail"})
COMPENSATE = "$compensate"
TIMEOUT = "$timeout"
FANOUT_TIMEOUT = "#join-timeout"  # suffix of the delayed message that ends a parallel/foreach's `timeout`
BRANCH_TIMEOUT = "$branch-timeout"  # a parallel branch's / foreach item's own timeout (expire.lua)
LOCK_MARGIN_MS = 10_000
HIDDEN_PARK_KEYS = frozenset({"token", "id", "at", "expect"})  # park info kept out of history lines
# history fields that are hopflow's own words (ids, names, numbers): never redacted by value
PLAIN_HISTORY = frozenset(
    {"step", "phase", "status", "attempt", "duration_ms", "error", "event", "time", "branch"}
)
BUSY_WAIT_S = 2.0  # how long a completion waits for a branch another delivery holds right now
TEMPLATE_SHARE = 0.5  # the share of the time budget one render may use (then: template.limit)
WAKE_SKEW_S = 1.0  # a delayed message may run this early (QStash counts whole seconds)


@dataclass(frozen=True)
class Advance:
    """What one delivery did. ``kind``: ``advanced`` (a node ran and was checkpointed), ``stale``
    (duplicate, old or fenced-out: acknowledge), ``busy`` (another worker holds the branch: redeliver
    later), ``finished`` (the execution is over: acknowledge), ``deferred`` (a delayed message came
    before the wake-up time its checkpoint recorded: re-published for then, nothing ran)."""

    kind: str
    execution_id: str
    status: str | None = None
    nodes: int = 0
    published: int = 0


@dataclass(frozen=True)
class Chain:
    """The branch's next node, run in this call: its outbox entry (never published: its own
    checkpoint deletes it) and, when the checkpoint script already began it, begin's answer and the
    lock token (one round trip per chained node instead of two)."""

    entry: tuple[str, Outgoing]
    begun: tuple[dict[str, Any], str] | None

    @property
    def outgoing(self) -> Outgoing:
        return self.entry[1]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads(raw: Any) -> Any:
    if raw is None or raw is False:
        return None
    return json.loads(raw)


def _flat_map(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    if isinstance(raw, dict):
        return raw
    return {raw[i]: raw[i + 1] for i in range(0, len(raw), 2)}


def consumed_later(eid: str, outgoing: Outgoing) -> bool:
    """Whether a published outbox entry goes away without a ``HDEL`` of its own: an immediate
    message to a node of the same execution is deleted by the checkpoint its delivery writes
    (``consumed``), or, if that delivery finds it stale or the execution finished, by the re-publish
    and clear of the whole outbox on that path. Delayed ones (a wait, a retry backoff, the
    execution timeout) may go stale long before they are delivered, and other executions'
    messages (a child resuming its parent) are consumed elsewhere: those are cleared at once."""
    m = outgoing.message
    immediate = not outgoing.delay_ms and outgoing.not_before is None
    return immediate and m.execution_id == eid and m.node != TIMEOUT


def merge_vars(graph: Graph, wanted: tuple[str, ...] | None) -> list[str]:
    """The declared `merge` vars a node reads (they are assembled from their own hash by begin)."""
    if not graph.vars:
        return []
    names = graph.vars if wanted is None else wanted
    return [n for n in names if n in graph.vars and graph.vars[n]["reduce"] == "merge"]


class Interpreter:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    # ------------------------------------------------------------------------------------ advance

    def advance(self, message: Message) -> Advance:
        return self._advance(message, None)

    def complete(self, message: Message, callback: Any, *, failure: bool = False) -> Advance:
        """The answer to an offloaded call for the step parked at ``message`` (its ``seq``): continue
        that step as if it had made the call inline. Stale or duplicate answers change nothing; a
        branch busy right now (its timeout message, a concurrent duplicate) is waited for briefly."""
        from engine.steps.offload import Completion

        node = message.node.split("#", 1)[0]
        target = Message(message.execution_id, node, message.seq, message.branch)
        completion = Completion(callback, failure)
        deadline = time.monotonic() + BUSY_WAIT_S
        delay = 0.02
        while True:
            result = self._advance(target, completion)
            if result.kind != "busy" or time.monotonic() >= deadline:
                return result
            time.sleep(delay)
            delay = min(0.25, delay * 2)

    def _advance(self, message: Message, completion: Completion | None) -> Advance:
        """One delivery: a node, then — while :meth:`may_chain` allows — the branch's next node in
        the same call (its outbox entry, recorded by the checkpoint, is never published: that
        node's own checkpoint deletes it; a crash in between leaves it for the redelivery). A chained
        node usually comes already begun by the previous node's checkpoint script (:class:`Chain`)."""
        started = time.monotonic()
        count = [1]

        def may_chain(outgoing: Outgoing, node: Node) -> bool:
            return self.may_chain(outgoing, node, count[0], started)

        result, chained = self.one(message, completion, may_chain)
        nodes, published = result.nodes, result.published
        while chained is not None:
            with self.holding(chained):
                self.rt.fault("before_chain", chained.outgoing.message)
            count[0] += 1
            nxt, next_chain = self.one(chained.outgoing.message, None, may_chain, chained.begun)
            if nxt.kind != "advanced":
                published += self.flush(message.execution_id, [chained.entry], keep_consumed=True)
                break
            chained = next_chain
            result = nxt
            nodes += nxt.nodes
            published += nxt.published
        return Advance(result.kind, result.execution_id, result.status, nodes, published)

    @contextmanager
    def holding(self, chain: Chain | None) -> Iterator[None]:
        """Between a checkpoint that began the next node and that node's run, anything raised (a
        fault, a failed publish) releases the next node's lock on the way out, as a node's own
        failure does: only a real crash leaves it held until it expires."""
        try:
            yield
        except BaseException:
            if chain is not None and chain.begun is not None and chain.begun[0].get("kind") == "ok":
                msg = chain.outgoing.message
                self.rt.store.unlock(msg.execution_id, msg.branch, chain.begun[1])
            raise

    def may_chain(self, outgoing: Outgoing, node: Node, nodes: int, started: float) -> bool:
        """Whether the branch's one immediate next node runs in this call: a cheap node while the
        call has run fewer than ``max_nodes_per_call`` (the webhook's chaining), or any node the
        delivery's fast-path policy takes (``Runtime.in_place``: the local dispatcher with nothing
        else due); never past 80 % of the time budget."""
        if time.monotonic() - started >= self.rt.time_budget_s * 0.8:
            return False
        if node.kind in CHEAP and nodes < self.rt.max_nodes_per_call:
            return True
        return self.rt.in_place(outgoing.message)

    def one(
        self,
        msg: Message,
        completion: Completion | None = None,
        may_chain: Callable[[Outgoing, Node], bool] | None = None,
        begun: tuple[dict[str, Any], str] | None = None,
    ) -> tuple[Advance, Chain | None]:
        """One node. ``begun``: begin's answer and lock token, when the previous node's checkpoint
        script began this one (a chain); else this call runs ``begin.lua`` itself."""
        rt = self.rt
        eid = msg.execution_id
        trips = rt.store.trips()
        if msg.node == TIMEOUT:
            return rt.deadline_reached(eid, msg), None
        if msg.node == BRANCH_TIMEOUT:
            return self.branch_timeout(msg), None
        graph_hash = rt.store.pinned_graph(eid)
        if graph_hash is None:
            raise UnknownExecution(eid)
        graph = rt.store.get_graph(graph_hash)
        node_id = msg.node.split("#", 1)[0]
        node = graph.nodes.get(node_id)
        if node is None and node_id != COMPENSATE:
            return Advance("stale", eid), None  # a node this graph does not have: never current
        fields = self.reads(graph, node, msg.branch)
        if begun is None:
            args, token = self.begin_args(graph, node, msg, fields)
            begin = rt.store.run("begin", eid, args, branch=msg.branch)
        else:
            begin, token = begun
        kind = begin["kind"]
        if kind == "missing":
            raise UnknownExecution(eid)
        if kind == "early":
            self.defer(msg, float(begin["wake"]))
            return Advance("deferred", eid), None
        if kind in ("stale", "finished"):
            published = self.flush(eid, outbox_entries(begin.get("outbox")))
            if kind == "stale":
                self.hand_off(eid, call_entries(begin.get("calls")))
            return Advance(kind, eid, begin.get("status"), 0, published), None
        if kind == "busy":
            return Advance("busy", eid), None

        run = NodeRun(rt, graph, node, msg, begin, token, fields, completion)
        ahead: tuple[dict[str, Any], str] | None = None
        try:
            ops = run.execute()
            run.stamp_due()
            ahead = self.ahead(graph, msg, ops, may_chain)
            if ahead is not None:
                ops["next"] = ahead[0]
        except BaseException as exc:
            rt.store.unlock(eid, msg.branch, token)
            if isinstance(exc, NotCurrent):  # not the answer (or timeout) the parked step waits for
                return Advance("stale", eid), None
            raise
        written = rt.store.run("checkpoint", eid, ops, branch=msg.branch)
        if not written.get("ok"):
            if written.get("why") == "lock":  # lock expired, nobody advanced: redeliver to retry
                return Advance("busy", eid), None
            return Advance("stale", eid), None  # fenced out: a newer worker advanced this branch
        entries = outbox_entries(written.get("out"))
        chained: Chain | None = None
        if ahead is not None and "next" in written:
            # the script began the next node (exactly the one immediate message it emitted to us)
            expected = Message(eid, ahead[0]["node"], ahead[0]["seq"], msg.branch)
            entry = next(
                (i, o)
                for i, o in entries
                if o.message == expected and not o.delay_ms and o.not_before is None
            )
            chained = Chain(entry, (written["next"], ahead[1]))
        with self.holding(chained):
            rt.fault("after_checkpoint", msg)
            if run.status != run.header.get("status") and run.status is not None:
                rt.indexed(eid, str(run.status))
                if rt.observers and run.status in TERMINAL:
                    rt.observers.finished(graph.name, str(run.status))
                    rt.observers.ended(run.execution_event())
            for callback in run.after:
                callback()
            if chained is None:
                candidate = self.chain_candidate(graph, msg, entries, may_chain)
                chained = Chain(candidate, None) if candidate is not None else None
            to_publish = [e for e in entries if chained is None or e[0] != chained.entry[0]]
            published = self.flush(eid, to_publish, msg, keep_consumed=True)
            if written.get("called") and run.call is not None:
                self.hand_off(eid, [run.call])
            if rt.observers:
                rt.observers.node(run.event(rt.store.trips() - trips))
        return Advance("advanced", eid, run.status, 1, published), chained

    def begin_args(
        self, graph: Graph, node: Node | None, msg: Message, fields: list[tuple[str, str]]
    ) -> tuple[dict[str, Any], str]:
        """``begin.lua``'s arguments for ``msg`` (its node, what it reads) and the lock token."""
        rt = self.rt
        wanted = var_names(graph, node.id) if node is not None else ()
        token = secrets.token_hex(12)
        own = node.timeout_ms if node is not None and node.kind in ("http", "action") else None
        if node is not None and node.kind == "http" and node.config.get("offload"):
            own = None  # the call is made elsewhere: this delivery only hands it over (or judges it)
        timeout_ms = own or int(rt.time_budget_s * 1000)  # a wait's timeout is not time spent here
        args = {
            "eid": msg.execution_id,
            "seq": msg.seq,
            "node": msg.node,
            "branch": msg.branch,
            "token": token,
            "lock_ms": timeout_ms + LOCK_MARGIN_MS,
            "hfields": list(HFIELDS),
            "outputs": [f for _, f in fields],
            "vars": "*" if wanted is None else list(wanted),
            "vmerge": merge_vars(graph, wanted),
            "ancestors": context.ancestors(msg.branch),
            "now": rt.clock.now(),
            "skew": WAKE_SKEW_S,
        }
        return args, token

    def ahead(
        self,
        graph: Graph,
        msg: Message,
        ops: dict[str, Any],
        may_chain: Callable[[Outgoing, Node], bool] | None,
    ) -> tuple[dict[str, Any], str] | None:
        """Begin's arguments (and token) for the node this checkpoint is expected to chain: the one
        immediate message the node sends its own branch, if :meth:`may_chain` takes it. The script
        begins it only when that is exactly what it emitted (a stop or a fan-out may change that)."""
        if may_chain is None:
            return None
        own = [m for m in ops["msgs"] if m.get("branch") == msg.branch and "eid" not in m]
        if len(own) != 1 or ops.get("park") or ops.get("fanout") or ops.get("fanout_timeout"):
            return None
        m = own[0]
        if m.get("delay_ms") or m.get("not_before") is not None or m.get("seq", -1) >= 0:
            return None
        node = graph.nodes.get(m["node"])
        if node is None:
            return None
        nxt = Message(msg.execution_id, m["node"], msg.seq + 1, msg.branch)
        if not may_chain(Outgoing(nxt), node):
            return None
        return self.begin_args(graph, node, nxt, self.reads(graph, node, msg.branch))

    def branch_timeout(self, msg: Message) -> Advance:
        """A branch's or item's own timeout passed: flag it (it fails with `timeout` at its next node
        boundary), wake it if it waits. Stale when that run of the branch has finished already."""
        eid = msg.execution_id
        rt = self.rt
        now = rt.clock.now()
        idx = msg.branch.rsplit("/", 1)[-1]
        owner = context.parent_node(msg.branch)
        what = f"branch {idx} of {owner!r}" if owner and "/" in msg.branch else "the branch"
        graph_hash = rt.store.pinned_graph(eid)
        if graph_hash is not None and owner in rt.store.get_graph(graph_hash).nodes:
            if rt.store.get_graph(graph_hash).nodes[owner].kind == "foreach":
                what = f"item {idx} of {owner!r}"
        error = {"name": "timeout", "message": f"{what} did not finish within its timeout", "step": owner}
        found = rt.store.run(
            "expire",
            eid,
            {
                "eid": eid,
                "branch": msg.branch,
                "seq": msg.seq,
                "now": now,
                "skew": WAKE_SKEW_S,
                "error": dumps(error),
                "hist": ["event", "timeout", "branch", msg.branch, "time", f"{now:.3f}"],
            },
            branch=msg.branch,
        )
        if found["kind"] == "missing":
            raise UnknownExecution(eid)
        if found["kind"] == "early":  # delivered before its time (a replay): the stored time decides
            self.defer(msg, float(found["due"]))
            return Advance("deferred", eid, None, 0, 1)
        published = self.flush(eid, outbox_entries(found.get("out")))
        kind = "advanced" if found["kind"] == "expired" else "stale"
        return Advance(kind, eid, None, 0, published)

    def chain_candidate(
        self,
        graph: Graph,
        msg: Message,
        entries: list[tuple[str, Outgoing]],
        may_chain: Callable[[Outgoing, Node], bool] | None,
    ) -> tuple[str, Outgoing] | None:
        """The one immediate next node of this branch, if ``may_chain`` takes it (then it is not
        published: the caller runs it now)."""
        if may_chain is None:
            return None
        own = [
            (i, o)
            for i, o in entries
            if o.message.execution_id == msg.execution_id
            and o.message.branch == msg.branch
            and not o.delay_ms
            and o.not_before is None
        ]
        if len(own) != 1:
            return None
        node = graph.nodes.get(own[0][1].message.node)
        if node is None or not may_chain(own[0][1], node):
            return None
        return own[0]

    def flush(
        self,
        eid: str,
        entries: list[tuple[str, Outgoing]],
        cause: Message | None = None,
        *,
        keep_consumed: bool = False,
    ) -> int:
        """Publish outbox entries, then clear them (a crash in between re-publishes: dedup ids).
        ``cause``: the message being advanced (for the ``after_publish`` fault point).

        ``keep_consumed`` (right after a checkpoint): entries that the checkpoint of their own
        delivery deletes anyway (:func:`consumed_later`) are not cleared here, which saves a round
        trip per node; why that is safe is in docs/engine-design.md ("The outbox")."""
        if not entries:
            return 0
        from engine.dispatch import PartialDispatch

        try:
            later = getattr(self.rt.dispatcher, "publish_later", None) if keep_consumed else None
            kept = [o for _, o in entries if later is not None and consumed_later(eid, o)]
            now = [o for _, o in entries if not (later is not None and consumed_later(eid, o))]
            if now:
                self.publish(now)
            if kept:
                # entries kept in the outbox until consumed: the local dispatcher may queue them with
                # the acknowledgement of the delivery running here (one round trip for both)
                self.publish(kept, later)
        except PartialDispatch as exc:
            # what was accepted may go; what was not stays in the outbox for the redelivery/recover
            taken = set(exc.accepted)
            done = [(i, o) for i, o in entries if o.dedup_id in taken]
            ids = [i for i, o in done if not (keep_consumed and consumed_later(eid, o))]
            self.rt.store.clear_outbox(eid, ids)
            raise
        if cause is not None:
            self.rt.fault("after_publish", cause)
        ids = [i for i, o in entries if not (keep_consumed and consumed_later(eid, o))]
        self.rt.store.clear_outbox(eid, ids)
        return len(entries)

    def publish(self, outgoing: list[Outgoing], via: Any = None) -> None:
        """Hand messages to the dispatcher (counted for the observers: published or failed);
        ``via``: another of its publish methods (``publish_later``)."""
        rt = self.rt
        send = via or rt.dispatcher.publish
        if not rt.observers:
            send(outgoing)
            return
        kind = dispatcher_kind(rt.dispatcher)
        try:
            send(outgoing)
        except Exception:
            rt.observers.published(kind, len(outgoing), False)
            raise
        rt.observers.published(kind, len(outgoing), True)

    def defer(self, msg: Message, wake: float) -> None:
        """Publish ``msg`` again for ``wake``: it was delivered before the wake-up time recorded in
        its checkpoint (a relayed long delay, a replayed delivery). The suffix keeps the copy apart
        from the delivery in flight (one per second, so redeliveries of that one do not multiply)."""
        now = self.rt.clock.now()
        self.publish([Outgoing(msg, not_before=wake, dedup_suffix=f":defer{int(now)}")])
        log.info("%s: %s delivered %.0f s early; deferred", msg.execution_id, msg.node, wake - now)

    def hand_off(self, eid: str, calls: list[OffloadRequest]) -> int:
        """Give recorded offloaded calls to the dispatcher, then clear their records (a crash in
        between hands them over again: ``call`` is idempotent per dedup id)."""
        if not calls:
            return 0
        from engine.dispatch import CallRejected

        call = getattr(self.rt.dispatcher, "call", None)
        for request in calls:
            if call is None:
                log.warning(
                    "%s cannot make offloaded calls: step %s of %s waits for "
                    "Runtime.complete_offloaded from elsewhere, or its timeout",
                    type(self.rt.dispatcher).__name__,
                    request.message.node,
                    eid,
                )
            else:
                try:
                    call(request)
                except CallRejected as exc:
                    from engine.dispatch import CallResult

                    self.rt.store.clear_call(eid, request.dedup_id)
                    self.complete(
                        request.message,
                        CallResult(0, error="http.request", detail=f"the dispatcher refused the call: {exc}"),
                    )
                    continue
            self.rt.store.clear_call(eid, request.dedup_id)
        return len(calls)

    @staticmethod
    def reads(graph: Graph, node: Node | None, branch: str) -> list[tuple[str, str]]:
        """(step id, output field) pairs a node needs: its own reads, plus the workflow's `output`
        template's when the node may end the execution."""
        if node is None:
            return []
        ids = list(node.reads)
        if may_end(node) and graph.has_output:
            ids += [s for s in graph.output_reads if s not in ids]
        ids += [s for s in context.until_reads(graph, node) if s not in ids]
        return [(sid, output_field(graph, sid, branch)) for sid in ids if sid in graph.nodes]


def dispatcher_kind(dispatcher: Any) -> str:
    name = type(dispatcher).__name__
    return {"QStashDispatcher": "qstash", "LocalDispatcher": "local"}.get(name, name.lower())


class NodeRun:
    """One node of one branch: turns the begin snapshot and the node's outcome into checkpoint ops."""

    def __init__(
        self,
        rt: Runtime,
        graph: Graph,
        node: Node | None,
        msg: Message,
        begin: dict[str, Any],
        token: str,
        fields: list[tuple[str, str]],
        completion: Completion | None = None,
    ) -> None:
        self.rt = rt
        self.graph = graph
        self.node = node
        self.msg = msg
        self.completion = completion
        self.call: OffloadRequest | None = None
        self.begin = begin
        self.eid = msg.execution_id
        self.branch = msg.branch
        self.now = rt.clock.now()
        self.header = {k: (None if v is False else v) for k, v in zip(HFIELDS, begin["header"], strict=False)}
        self.b: dict[str, str] = _flat_map(begin.get("branch"))
        self.phase = self.b.get("phase", "run")
        self.attempt = int(self.b.get("attempt") or 1)
        self.comps = int(begin.get("comps") or 0)
        self.input = loads(self.header.get("input"))
        self.steps: dict[str, Any] = {}
        for (sid, _), raw in zip(fields, begin.get("outputs") or [], strict=False):
            if raw is not None and raw is not False:
                self.steps[sid] = json.loads(raw)
        self.vars = self._vars(begin.get("vars"))
        self.loc = self._loc()
        self.error_in = loads(self.b.get("error"))
        self.status: str | None = self.header.get("status")
        self.step_input: Any = None  # what the step ran with (recorded for its compensation)
        self.uuids: Any = None
        self.after: list[Any] = []
        self.undoes: tuple[str, int] | None = None  # a compensation: (branch, seq) of the run it undoes
        self.span: dict[str, Any] = {}  # what the observers' span of this node says beyond the event
        self._redactor: Redactor | None = None
        self.started = time.monotonic()
        self.ops: dict[str, Any] = {
            "eid": self.eid,
            "branch": self.branch,
            "seq": msg.seq,
            "token": token,
            "now": self.now,
            "ancestors": context.ancestors(self.branch),
            "consumed": msg.dedup_id,
            "outputs": {},
            "vars": {},
            "hset": {"updated_at": self.now, "updated_rt": time.time()},
            "hdel": [],
            "bset": {},
            "bdel": [],
            "history": [],
            "msgs": [],
        }

    def stamp_due(self) -> None:
        """Record on the branch when its own delayed message is due (a wait, a retry backoff, an
        event's or offloaded call's timeout), in real time: ``status`` says "until …" from it."""
        for m in self.ops["msgs"]:
            if m.get("branch") == self.branch and "eid" not in m:
                if m.get("not_before") is not None:
                    due = float(m["not_before"])
                elif m.get("delay_ms"):
                    due = self.now + m["delay_ms"] / 1000
                else:
                    continue
                self.ops["bset"]["due"] = f"{due - self.now + time.time():.3f}"
                return
        self.ops["bdel"].append("due")

    def event(self, round_trips: int) -> NodeEvent:
        """What this node did, for the observers (metrics, the per-node log line)."""
        default = self.node.id if self.node is not None else COMPENSATE
        step, phase, outcome = node_outcome(self.ops["history"], default)
        kind = self.node.kind if self.node is not None else "compensate"
        if phase == "compensate" and step in self.graph.nodes:
            comp = self.graph.nodes[step].compensate
            kind = comp.kind if comp is not None else kind
        elif self.phase == "join" and outcome == "ok":
            outcome = "joined"
        if "fanout" in self.ops:
            outcome = "fanout"
        undo = self.ops.get("undo")
        if isinstance(undo, dict) and phase != "compensate":  # a fan-out starting/ending its partial unwind
            outcome = "undone" if undo.get("done") else "undoing"
        undoes = ""
        if phase == "compensate" and self.undoes is not None:
            undoes = traceids.span_id(self.eid, *self.undoes)
        return NodeEvent(
            execution_id=self.eid,
            workflow=self.graph.name,
            step=step,
            kind=kind,
            phase=phase,
            outcome=outcome,
            attempt=self.attempt,
            ms=(time.monotonic() - self.started) * 1000,
            round_trips=round_trips,
            branch=self.branch,
            trace_id=traceids.trace_id(self.eid),
            seq=self.msg.seq,
            ended_at=time.time(),
            undoes=undoes,
            attributes=self.span,
        )

    def execution_event(self) -> ExecutionEvent:
        """This execution's end, for the observers (the trace's root span)."""
        try:
            created = float(self.header.get("created_rt") or 0)
        except ValueError:
            created = 0.0
        return ExecutionEvent(
            execution_id=self.eid,
            workflow=self.graph.name,
            status=str(self.status),
            created_at=created,
            ended_at=time.time(),
            parent=loads(self.header.get("parent")),
        )

    def _vars(self, raw: Any) -> dict[str, Any]:
        wanted = var_names(self.graph, self.node.id) if self.node is not None else ()
        merged = {k: json.loads(v) for k, v in _flat_map(self.begin.get("vmerged")).items()}
        if not raw:
            return merged
        if wanted is None:
            return {**{k: json.loads(v) for k, v in _flat_map(raw).items()}, **merged}
        found = {
            n: json.loads(v) for n, v in zip(wanted, raw, strict=False) if v is not None and v is not False
        }
        return {**found, **merged}

    def _loc(self) -> dict[str, Any]:
        loc = loads(self.b.get("ploc")) or {}
        name = self.b.get("as")
        if name:
            loc[name] = loads(self.b.get("item"))
            loc["index"] = int(self.b.get("idx") or 0)
        return loc

    # ------------------------------------------------------------------------------- scope helpers

    @property
    def scope(self) -> dict[str, Any]:
        scope = build_scope(
            self.graph,
            execution_id=self.eid,
            started_at=float(self.header.get("started_at") or self.now),
            input=self.input,
            steps=self.steps,
            vars=self.vars,
            loc=self.loc,
            error=self.error_in,
            now=self.now,
            uuid_seed=self.step_path(self.node.id) if self.node is not None else "",
        )
        if self.uuids is None:  # one counter for all of this node's renders (with, output, …)
            self.uuids = scope["uuid"]
        scope["uuid"] = self.uuids
        return scope

    def render(self, value: Any, extra: dict[str, Any] | None = None) -> Any:
        scope = self.scope
        if extra:
            scope.update(extra)
        rendered = render_value(
            value,
            scope,
            step=self.node.id if self.node is not None else None,
            seconds=self.rt.time_budget_s * TEMPLATE_SHARE,
        )
        if self.node is not None and self.node.secret:
            self.add_secrets(rendered)
        return rendered

    @staticmethod
    def dumps(value: Any) -> str:
        return dumps(value)

    # -- secrets (engine/redact.py): what this node stores for people is redacted before it is stored

    @property
    def redactor(self) -> Redactor:
        """Secret env values, and the values of the secret steps this node read (built once)."""
        if self._redactor is None:
            redactor = Redactor(env_secrets(self.graph.secret_env))
            for sid, value in self.steps.items():
                if sid in self.graph.nodes and self.graph.nodes[sid].secret:
                    redactor.add(secret_strings(value))
            self._redactor = redactor
            remember(redactor.values)
        return self._redactor

    def add_secrets(self, value: Any) -> None:
        """Values of a secret step (its rendered input, its result, its output) seen by this node."""
        found = secret_strings(value)
        if found:
            self.redactor.add(found)
            remember(found)

    def redact_error(self, error: StepError) -> StepError:
        message = self.redactor.text(error.message) if self.redactor else error.message
        if message == error.message:
            return error
        return StepError(error.name, message, error.step, error.attempt, error.retry_after_ms)

    def step_path(self, step: str) -> str:
        return f"{self.branch}/{step}" if self.branch else step

    def timeout_s(self, timeout_ms: int | None) -> float:
        return (timeout_ms / 1000) if timeout_ms else self.rt.time_budget_s

    def egress(self) -> Any:
        """The egress policy of this workflow's http steps: the runtime's plus ``egress.allow``."""
        return self.rt.egress.for_workflow(self.graph.egress_allow)

    def step_context(self, step: str, timeout_s: float) -> StepContext:
        return StepContext(
            execution_id=self.eid,
            step=step,
            attempt=self.attempt,
            idempotency_key=f"{self.eid}:{self.step_path(step)}",
            deadline=self.now + timeout_s,
            branch=self.branch,
            workflow=self.graph.name,
            traceparent=self.traceparent(),
        )

    def traceparent(self) -> str:
        """The W3C parent of what this node calls, when traces are on: this node's own span; for an
        offloaded call, the span of the delivery that receives its answer (the branch's next seq)."""
        if self.rt.traces is None:
            return ""
        node = self.node
        offloaded = node is not None and node.kind == "http" and bool(node.config.get("offload"))
        return traceids.traceparent(self.eid, self.branch, self.msg.seq + (1 if offloaded else 0))

    def http_span(self, call: str, status: int | None) -> None:
        """What the http step's CLIENT span says: the call (no credentials or query) and the status."""
        method, _, url = call.partition(" ")
        self.span = {"http.request.method": method, "url.full": self.redactor.text(url)}
        if status:
            self.span["http.response.status_code"] = status

    # -- services for step modules

    def wait_token(self) -> str:
        return f"{self.eid}|{self.branch}|{self.msg.seq}"

    def claim_event(self, name: str, key: str, token: str) -> dict[str, Any] | None:
        info = dumps(
            {
                "eid": self.eid,
                "branch": self.branch,
                "node": self.node.id,
                "seq": self.msg.seq + 1,
                "event": name,
                "key": key,
            }
        )
        found = self.rt.store.event(name, key, {"op": "claim", "token": token, "now": self.now, "info": info})
        if found["kind"] != "event":
            return None
        self.after.append(
            lambda: self.rt.store.event(name, key, {"op": "done", "token": token, "now": self.now})
        )
        return json.loads(found["event"])

    def release_event(self, name: str, key: str, token: str) -> None:
        """Let go of slot (name, key): unregister, and put back an event claimed there (a wait on
        several names keeps only the one that won)."""
        self.rt.store.event(name, key, {"op": "release", "token": token, "now": self.now})

    def check_event(self, name: str, key: str, token: str) -> dict[str, Any] | None:
        found = self.rt.store.event(name, key, {"op": "check", "token": token, "now": self.now})
        if found["kind"] != "event":
            return None
        self.after.append(
            lambda: self.rt.store.event(name, key, {"op": "done", "token": token, "now": self.now})
        )
        return json.loads(found["event"])

    def start_child(self, workflow: str, child_input: Any, step: str, resume_node: str | None = None) -> str:
        child = self.rt.child_id(self.eid, self.branch, step, self.msg.seq)
        parent = {
            "eid": self.eid,
            "branch": self.branch,
            "node": resume_node or step,
            "seq": self.msg.seq + 1,
        }
        self.rt.start_child(workflow, child_input, child, parent)
        return child

    def child_state(self, child: str) -> tuple[str | None, Any, dict | None]:
        """The child's state, only if its record names this execution and branch as its parent."""
        return self.rt.child_state(child, {"eid": self.eid, "branch": self.branch})

    def offload(self, request: OffloadRequest) -> None:
        """Record an offloaded call in this checkpoint; it is handed over once the checkpoint holds."""
        self.call = request
        body = dict(request.to_dict(), at=self.now, wall=wall_of(self.rt.clock))  # its age for `recover`
        self.ops["call"] = {"id": request.dedup_id, "body": dumps(body)}

    # ------------------------------------------------------------------------------------ execute

    def execute(self) -> dict[str, Any]:
        if self.completion is not None and not self.awaits_call():
            raise NotCurrent()
        stop = loads(self.header.get("stop"))
        abort = next((loads(a) for a in self.begin.get("aborts") or [] if a), None)
        if self.phase == "compensate":
            sagas.unwind(self)
            return self.ops
        if self.phase == "undo":  # a fan-out's partial unwind: not stopped by a cancel or an abort
            sagas.undo(self)
            return self.ops
        deadline = self.header.get("deadline")
        if stop is None and deadline and self.now >= float(deadline):
            stop = self.rt.stop(
                self.eid,
                {"name": "timeout", "message": "the execution's timeout passed"},
                except_branch=self.branch,
            )
        if self.msg.node.endswith(FANOUT_TIMEOUT):
            if self.phase != "join" or stop or abort:
                raise NotCurrent()  # joined already, or stopping anyway: the timeout has nothing to end
            self.fanout_timeout()
            return self.ops
        if stop or abort:
            self.halt(stop, abort)
            return self.ops
        expired = loads(self.b.get("tmo"))
        if expired:
            if self.phase == "join" and self.msg.node != (self.node.id if self.node else ""):
                raise NotCurrent()  # its children are being stopped: the join message ends it
            self.expire(expired)
            return self.ops
        assert self.node is not None
        if self.phase == "join" and self.begin.get("tail"):  # it ended early: undo its losers first
            statuses = {k[2:]: v for k, v in _flat_map(self.begin.get("results")).items() if k[:2] == "s:"}
            if sagas.start_undo(self, statuses, list(self.begin["tail"])):
                return self.ops
        self.rt.fault("before_step", self.msg)
        outcome = self.run_phase()
        self.rt.fault("after_step", self.msg)
        self.apply(outcome)
        return self.ops

    def fanout_timeout(self) -> None:
        """A parallel/foreach's `timeout` passed while it waits for its join: stop the unfinished
        branches like a failed sibling does (parked ones are woken, running ones stop at their next
        node boundary, queued items never start); the join then fails the step with `timeout`. The
        script joins at once instead when every branch has finished meanwhile."""
        node = self.node
        assert node is not None
        error = StepError(
            "timeout", f"{node.kind} {node.id!r} did not finish within its timeout", node.id, self.attempt
        )
        scope = f"{self.branch}/{node.id}/" if self.branch else f"{node.id}/"
        self.ops["fanout_timeout"] = {"abort": dumps(error.to_dict()), "scope": scope}
        self.ops["self_node"] = node.id
        self.history(event="timeout", step=node.id)

    def expire(self, error: dict[str, Any]) -> None:
        """This branch's own timeout passed (expire.lua flagged it): it fails with `timeout`, which the
        enclosing fan-out treats like any failed branch (abort, or a loss in a race)."""
        info = loads(self.b.get("park"))
        if info:
            self.rt.release(info)
        self.history(event="timeout", step=self.node.id if self.node else None)
        self.finish_branch(None, abort=dumps(error))

    def awaits_call(self) -> bool:
        """Whether this branch is parked on an offloaded call (so an answer may complete it)."""
        if self.phase != "park" or self.node is None or self.node.kind != "http":
            return False
        return (loads(self.b.get("park")) or {}).get("wait") == "offload"

    def run_phase(self) -> Outcome:
        node = self.node
        assert node is not None
        try:
            if self.phase == "park":
                info = loads(self.b.get("park")) or {}
                if node.kind == "http":
                    from engine.steps import offload

                    if info.get("at") is not None:  # the call's whole time, not this delivery's
                        self.started -= max(0.0, self.now - float(info["at"]))
                    if node.secret and self.completion is not None:
                        self.render(node.config)  # its input is secret here too: learn its values again
                    if self.rt.observers:
                        answer = getattr(self.completion, "callback", None)
                        self.http_span(str(info.get("call") or ""), getattr(answer, "status", None))
                    return offload.resume(node, self, info)
                return self.rt.step_module(node.kind).resume(node, self, info)
            if self.phase == "join":
                found = _flat_map(self.begin.get("results")).items()
                results = {int(k): json.loads(v) for k, v in found if k.isdigit()}  # not "s:<i>"
                abort = loads(self.b.get("abort"))
                total = int(self.b.get("total") or 0)
                return self.rt.step_module(node.kind).join(node, self, results, abort, total)
            if node.when is not None and not truthy(self.render(node.when)):
                return Skipped()
            return self.run_kind(node)
        except StepFailure as failure:
            return Failed(failure.error)

    def run_kind(self, node: Node) -> Outcome:
        if node.kind == "http" and node.config.get("offload"):
            from engine.steps import offload

            return offload.run(node, self)
        if node.kind == "http":
            config = self.render(node.config)
            self.step_input = config
            timeout = self.timeout_s(node.timeout_ms)
            ctx = self.step_context(node.id, timeout)
            if not self.rt.observers:
                return Done(self.rt.call_http(config, ctx, timeout_s=timeout, egress=self.egress()))
            from engine.steps.http import safe_url

            call = f"{str(config.get('method') or 'GET').upper()} {safe_url(config.get('url'))}"
            try:
                result = self.rt.call_http(config, ctx, timeout_s=timeout, egress=self.egress())
            except StepFailure as failure:
                code = failure.error.name.removeprefix("http.")
                self.http_span(call, int(code) if code.isdigit() else None)
                raise
            self.http_span(call, result.get("status"))
            return Done(result)
        if node.kind == "action":
            from engine.steps import action

            kwargs = self.render(node.config.get("with") or {})
            self.step_input = kwargs
            timeout = self.timeout_s(node.timeout_ms)
            result = action.execute(
                dynamic.action_name(node.config["name"], self.render, node.id),
                kwargs,
                self.step_context(node.id, timeout),
                timeout_s=timeout,
                registry=self.rt.actions,
            )
            return Done(result)
        return self.rt.step_module(node.kind).run(node, self)

    # ------------------------------------------------------------------------------------- apply

    def history(self, **fields: Any) -> None:
        flat: list[str] = []
        redactor = self.redactor
        for k, v in fields.items():
            if v is not None:
                flat += [k, str(v) if not redactor or k in PLAIN_HISTORY else redactor.text(str(v))]
        flat += ["time", f"{self.now:.3f}"]
        if self.branch and fields.get("branch") is None:
            flat += ["branch", self.branch]
        self.ops["history"].append(flat)

    def node_history(
        self,
        phase: str,
        status: str,
        error: StepError | None = None,
        step: str | None = None,
        branch: str | None = None,
    ) -> None:
        """``branch``: where the step ran, when that is not this branch (a loser's compensation)."""
        self.history(
            step=step or (self.node.id if self.node else None),
            branch=branch,
            phase=phase,
            status=status,
            attempt=self.attempt,
            duration_ms=int((time.monotonic() - self.started) * 1000),
            error=error.name if error else None,
            message=self.redact_error(error).message[:500] if error else None,
        )

    def apply(self, outcome: Outcome) -> None:
        node = self.node
        assert node is not None
        if isinstance(outcome, Failed):
            self.on_error(outcome.error)
        elif isinstance(outcome, Park):
            self.park(outcome)
        elif isinstance(outcome, FanOut):
            self.fan_out(outcome)
        elif isinstance(outcome, Ended):
            self.ended(outcome)
        else:
            try:
                output = self.output_of(outcome)
            except StepFailure as failure:
                self.on_error(failure.error)
                return
            self.complete(outcome, output)

    def output_of(self, outcome: Done | Skipped | Jump) -> Any:
        node = self.node
        assert node is not None
        if not isinstance(outcome, Done):
            return None
        result = outcome.result
        if node.has_output:
            return self.render(node.output, {"result": result})
        if node.kind == "http" and isinstance(result, dict):
            return result.get("json") if result.get("json") is not None else result.get("text")
        return result

    def complete(self, outcome: Done | Skipped | Jump, output: Any) -> None:
        node = self.node
        assert node is not None
        skipped = isinstance(outcome, Skipped)
        if node.secret and isinstance(outcome, Done):
            self.add_secrets(outcome.result)
            self.add_secrets(output)
        field = output_field(self.graph, node.id, self.branch)
        text = None
        if node.kind == "action":
            from engine.steps import action

            text = action.encoded(output)  # the action's result as is: encoded once, when validated
        self.ops["outputs"][field] = text if text is not None else dumps(output)
        self.steps[node.id] = output
        if not skipped:
            self.ops["bset"]["last"] = field
        if isinstance(outcome, Done) and outcome.vars:
            self.assign(outcome.vars, outcome.reduced)
        if not skipped and node.compensate is not None:
            self.register_compensation()
        self.node_history("skip" if skipped else "run", "ok")
        self.goto(after_success(node, outcome).node, MISSING if skipped else output)

    def register_compensation(self) -> None:
        """Push this step's compensation (in this checkpoint) with the input it ran with."""
        node = self.node
        assert node is not None
        self.ops["comp_push"] = sagas.entry(node.id, self.branch, self.loc, self.msg.seq)
        if self.step_input is not None:
            field = output_field(self.graph, node.id, self.branch)
            self.ops["outputs"][input_field(field)] = dumps(self.step_input)

    def assign(self, values: dict[str, Any], encoded: dict[str, dict[str, Any]] | None = None) -> None:
        """Vars a step set: plain ones are written as they are; declared reduced ones go to the
        checkpoint as contributions, which the script combines with what is stored (atomically).
        ``encoded``: contributions the step already encoded (and so type-checked), used as they are."""
        from engine.state import reducers

        for name, value in values.items():
            op = self.graph.reducer(name)
            if op == "replace":
                self.ops["vars"][name] = dumps(value)
                self.vars[name] = value
                continue
            found = (encoded or {}).get(name)
            self.ops.setdefault("reduce", []).append(found or reducers.encode(name, op, value))
            if name in self.vars:  # this node's own view (the script's result when nothing races)
                self.vars[name] = reducers.apply(op, self.vars[name], value)

    def goto(self, target: str | None, output: Any = MISSING, error: StepError | None = None) -> None:
        if target is None:
            self.end_scope(output)
            return
        self.ops["bset"].update({"node": target, "phase": "run", "attempt": 1})
        self.ops["bdel"] += ["park"]
        if error is not None:
            self.ops["bset"]["error"] = dumps(error.to_dict())
        else:
            self.ops["bdel"].append("error")
        self.ops["msgs"].append({"node": target, "branch": self.branch, "seq": -1})

    def end_scope(self, output: Any) -> None:
        if self.branch:
            until = context.until_of(self.graph, self.node) if self.node is not None else None
            held = False
            if until is not None:
                value = output
                if output is MISSING:  # a skipped last step: the item's output is the last one that ran
                    last = self.b.get("last")
                    value = self.rt.store.outputs(self.eid, [last])[0] if last else None
                try:
                    held = truthy(self.render(until, {"result": value}))
                except StepFailure as failure:
                    self.finish_branch(None, abort=dumps(self.redact_error(failure.error).to_dict()))
                    return
                if held:
                    self.history(event="until", step=context.parent_node(self.branch))
            self.finish_branch(None if output is MISSING else dumps(output), until=held)
            return
        if self.graph.has_output:
            try:
                final = self.render(self.graph.output)
            except StepFailure as failure:
                self.fail_execution(failure.error)
                return
            self.finish_execution(Status.SUCCEEDED, output=final)
        elif output is MISSING:
            self.finish_execution(Status.SUCCEEDED, output_from_last=True)
        else:
            self.finish_execution(Status.SUCCEEDED, output=output)

    def ended(self, outcome: Ended) -> None:
        node = self.node
        assert node is not None
        value = outcome.output if outcome.has_output else None
        if node.secret:
            self.add_secrets(value)
        field = output_field(self.graph, node.id, self.branch)
        self.ops["outputs"][field] = dumps(value)
        self.steps[node.id] = value
        self.node_history("run", "ok")
        if outcome.has_output:
            self.ops["bset"]["last"] = field
            self.end_scope(value)
        else:
            self.end_scope(MISSING)

    def on_error(self, error: StepError) -> None:
        node = self.node
        assert node is not None
        error = self.redact_error(
            StepError(
                error.name,
                error.message,
                error.step or node.id,
                error.attempt or self.attempt,
                error.retry_after_ms,
            )
        )
        try:  # retry numbers written as templates are rendered now, with the step's scope
            policies = replace(
                node,
                retry=dynamic.retry_policy(node.retry, self.render, node.id),
                retries=tuple(dynamic.retry_policy(p, self.render, node.id) for p in node.retries),
            )
        except StepFailure as failure:  # a bad retry number: the step fails with that, not retried
            bad = failure.error
            message = f"{bad.message} (after {error.name}: {error.message})"
            error = self.redact_error(StepError(bad.name, message, node.id, self.attempt))
            policies = replace(node, retry=Retry(), retries=())
        self.node_history("run", "error", error)
        decision = after_error(policies, error, self.attempt, rand=self.rt.random)
        failed_for_good = not isinstance(decision, RetryLater)
        if failed_for_good and node.compensate_on_failure and node.compensate is not None:
            self.register_compensation()  # it may have had effects before failing: undo them too
        if isinstance(decision, RetryLater):
            self.ops["bset"].update({"attempt": decision.attempt, "phase": "run"})
            self.ops["bdel"] += ["park"]
            self.ops["msgs"].append(
                {"node": node.id, "branch": self.branch, "seq": -1, "delay_ms": decision.delay_ms}
            )
            self.ops["park"] = decision.delay_ms > 0
            self.ops["self_node"] = node.id
            self.history(event="retry", step=node.id, attempt=decision.attempt, delay_ms=decision.delay_ms)
        elif isinstance(decision, Goto):
            self.goto(decision.node, error=decision.error)
        elif isinstance(decision, Raise):
            error = decision.error
            if decision.rename is not None:
                error = self.renamed(error, decision.rename)
                self.history(event="raise", step=node.id, error=error.name)
            if self.branch:
                self.finish_branch(None, abort=dumps(error.to_dict()))
            else:
                self.fail_execution(error)

    def renamed(self, error: StepError, spec: Any) -> StepError:
        """The error a catch's `raise` turns ``error`` into: its name, its message (a template reading
        `error`; a failing one keeps the caught message), the caught error kept as `cause`."""
        message = error.message
        if spec.get("message") is not None:
            try:
                message = str(self.render(spec["message"], {"error": error.to_dict()}))
            except StepFailure:
                pass
        return StepError(spec["name"], message, error.step, error.attempt, cause=error.to_dict())

    def park(self, outcome: Park) -> None:
        node = self.node
        assert node is not None
        self.ops["bset"].update({"phase": "park", "park": dumps(outcome.info)})
        self.ops["park"] = True
        self.ops["self_node"] = node.id
        if outcome.message:
            msg = {
                "node": node.id + outcome.suffix,
                "branch": self.branch,
                "seq": -1,
                "delay_ms": outcome.delay_ms,
            }
            if outcome.not_before is not None:  # scripts never get nulls (see Store.script)
                msg["not_before"] = outcome.not_before
            self.ops["msgs"].append(msg)
        detail = {f"wait_{k}": v for k, v in outcome.info.items() if k not in HIDDEN_PARK_KEYS}
        self.history(event="park", step=node.id, **detail)

    def fan_out(self, outcome: FanOut) -> None:
        node = self.node
        assert node is not None
        self.ops["bset"].update({"phase": "join"})
        self.ops["bdel"] += ["park"]
        fanout = {
            "node": node.id,
            "kind": outcome.kind,
            "total": outcome.total,
            "start": outcome.start,
            "entries": outcome.entries,
            "items": outcome.items,
            "cloc": dumps(self.loc),
        }
        if outcome.entry is not None:  # foreach only; scripts never get nulls (see Store.script)
            fanout["entry"] = outcome.entry
        if outcome.as_name is not None:
            fanout["as"] = outcome.as_name
        if outcome.wait_for:
            fanout["wait_for"] = outcome.wait_for
        if outcome.item_timeout_ms:
            fanout["item_timeout"] = outcome.item_timeout_ms
        if outcome.timeouts_ms:
            fanout["timeouts"] = list(outcome.timeouts_ms)
        self.ops["fanout"] = fanout
        if node.timeout_ms:
            timeout = {"node": node.id + FANOUT_TIMEOUT, "branch": self.branch, "seq": -1}
            self.ops["msgs"].append({**timeout, "delay_ms": node.timeout_ms})

    # ----------------------------------------------------------------------------- ends and stops

    def finish_branch(
        self, result: str | None, abort: str | None = None, *, halted: bool = False, until: bool = False
    ) -> None:
        """``halted``: stopped by a stop/abort/race (no output, not a success); ``until``: a foreach
        item whose `until` held (no more items start)."""
        finish: dict[str, Any] = {}  # scripts never get nulls (see Store.script)
        if result is not None:
            finish["result"] = result
        if abort is not None:
            finish["abort"] = abort
        if halted:
            finish["halted"] = True
        if until:
            finish["until"] = True
        self.ops["finish_branch"] = finish
        self.ops["bset"]["phase"] = "done"
        self.ops["bdel"] += ["park"]

    def fail_execution(
        self, error: StepError, *, cancelled: bool = False, compensate: bool | None = None
    ) -> None:
        error = self.redact_error(error)
        want = compensate if compensate is not None else self.graph.on_failure == "compensate"
        comps = self.comps + (1 if "comp_push" in self.ops else 0)
        if want and comps > 0:
            self.status = Status.COMPENSATING
            self.ops["hset"].update({"status": Status.COMPENSATING.value, "error": dumps(error.to_dict())})
            self.ops["bset"].update({"node": COMPENSATE, "phase": "compensate", "attempt": 1})
            self.ops["bdel"] += ["park", "error"]
            self.ops["msgs"].append({"node": COMPENSATE, "branch": "", "seq": -1})
            self.history(event="compensating", error=error.name)
        else:
            self.finish_execution(Status.CANCELLED if cancelled else Status.FAILED, error=error.to_dict())

    def finish_execution(
        self,
        status: Status,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
        output_from_last: bool = False,
    ) -> None:
        self.status = status
        hset = self.ops["hset"]
        hset.update({"status": status.value, "finished_at": self.now})
        redactor = self.redactor
        if status == Status.SUCCEEDED:
            if output_from_last:
                self.ops["output_from_last"] = True  # a secret last step's output: the views redact it
            else:
                hset["output"] = dumps(redactor.value(output) if redactor else output)
        if error is not None:
            if redactor and isinstance(error.get("message"), str):
                error = {**error, "message": redactor.text(error["message"])}
            hset["error"] = dumps(error)
        self.ops["bset"]["phase"] = "done"
        self.ops["bdel"] += ["park"]
        parent = loads(self.header.get("parent"))
        if parent:
            self.ops["msgs"].append(
                {
                    "eid": parent["eid"],
                    "node": parent["node"],
                    "branch": parent["branch"],
                    "seq": parent["seq"],
                }
            )
        self.history(event="finished", status=status.value, error=(error or {}).get("name"))
        self.after.append(lambda: self.rt.finished(self.eid))

    def halt(self, stop: dict[str, Any] | None, abort: dict[str, Any] | None) -> None:
        """A stop (cancel, timeout) or a failed sibling: end this branch at its node boundary."""
        info = loads(self.b.get("park"))
        if info:
            self.rt.release(info)
        if self.branch:
            self.history(event="halted", step=self.node.id if self.node else None)
            self.finish_branch(None, halted=True)
            return
        reason = stop or abort or {"name": "cancelled", "message": "cancelled"}
        error = StepError(reason.get("name") or "cancelled", reason.get("message") or "", reason.get("step"))
        self.history(event="halted", step=self.node.id if self.node else None, error=error.name)
        self.fail_execution(
            error,
            cancelled=error.name == "cancelled",
            compensate=reason.get("compensate") if stop else None,
        )
