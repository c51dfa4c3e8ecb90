"""The webhook routes the dispatcher calls: advance a node, mark a message dead, complete an offloaded call.

Each reads the raw body (bounded), verifies the delivery signature over those exact bytes, parses
what it carries and calls the runtime in a worker thread. The answers tell the dispatcher what to do:

* 2xx — handled, including duplicates, stale and busy messages (nothing to retry);
* 489 + ``Upstash-NonRetryable-Error: true`` — can never succeed (not a message, unknown
  execution, graph missing): QStash dead-letters it at once;
* 5xx — transient (Redis or QStash unreachable): retry later.

Contract: docs/http-api.md ("The webhook", "Failure callback", "Offloaded calls").
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from engine.web.bodies import JSONRefused, json_response, loads
from engine.web.problems import Problem, non_retryable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.model import Message
    from engine.runtime import Runtime
    from engine.web.core import HopflowApp

BUSY_RETRY_S = 2.0  # a busy delivery is re-published this much later (QStash)
# a callback carries the response *and* the request, both base64 (4/3 of their size) in JSON: with
# QStash's 1 MB message size (upstash/docs qstash/overall/getstarted.mdx) that is ~2.7 MB, more than
# the 1 MiB every other route accepts; the callback route alone takes this much (or 3 times the
# configured HOPFLOW_MAX_BODY_BYTES, for plans with larger messages)
CALLBACK_MIN_BODY_BYTES = 4 * 1_048_576
MAX_SEQ = 2**53 - 1  # what a double (Lua's only number) holds exactly
# "" (the top level) or <owner step>/<index>, nested with "/" ("order/0/items/3")
BRANCH = re.compile(r"[^/]+/[0-9]{1,9}(?:/[^/]+/[0-9]{1,9})*")

log = logging.getLogger("hopflow.asgi")


async def step(hop: HopflowApp, request: Request) -> Response:
    """``POST /v1/step``: advance one node (``?hopflow=failure`` is the failure callback's alias; a
    ``{"schedule": …}`` body is a QStash schedule's fire: :mod:`engine.web.scheduled`)."""
    if request.query_params.get("hopflow") == "failure":
        return await step_failed(hop, request)  # QStashDispatcher.from_env's default callback URL
    from engine.model import MessageError

    body = await hop.body(request)
    scheme = hop.verifier.verify(request, body)
    try:
        data = _loads(body)
        if isinstance(data, dict) and "schedule" in data and "execution_id" not in data:
            from engine.web.scheduled import fire  # a QStash schedule's fire (engine/schedule_sync.py)

            return await fire(hop, data)
        message = parse_message(data)
    except MessageError as exc:
        raise non_retryable(f"not a hopflow message: {exc}") from None
    runtime = await hop.runtime_async()
    # no header decides when a delivery may run: a delayed message's wake-up time is in its
    # checkpoint, and runtime.advance re-defers one that comes early ("deferred")
    result = await _advance(hop, runtime, message)
    kind = getattr(result, "kind", str(result))
    if kind == "busy" and scheme == "qstash":
        # another worker holds this branch. Acknowledging alone could lose the message if that
        # worker died holding the lock (QStash's retry of its delivery may be this very request),
        # and a 5xx would spend QStash retries: re-publish a copy for a little later instead.
        from engine.model import Outgoing

        now = hop.now()
        again = Outgoing(message, not_before=math.ceil(now + BUSY_RETRY_S), dedup_suffix=f":defer{int(now)}")
        await hop.call(runtime.dispatcher.publish, [again])
    payload: dict[str, Any] = {"result": kind, "execution_id": message.execution_id}
    status = getattr(result, "status", None)
    if status:
        payload["status"] = status
    return json_response(payload, 200)


async def _advance(hop: HopflowApp, runtime: Runtime, message: Message) -> Any:
    from engine.errors import GraphMissing, InvalidExecutionId, UnknownExecution

    try:
        return await hop.call(runtime.advance, message)
    except UnknownExecution as exc:
        raise non_retryable(exc.message, kind="unknown-execution", title="Unknown execution") from None
    except GraphMissing as exc:
        raise non_retryable(exc.message, title="Graph missing") from None
    except InvalidExecutionId as exc:
        raise non_retryable(exc.message) from None


async def step_failed(hop: HopflowApp, request: Request) -> Response:
    """``POST /v1/step/failed``: QStash gave up on a message → the execution becomes ``dead``."""
    from engine.dispatch.qstash import parse_callback
    from engine.errors import UnknownExecution
    from engine.model import MessageError

    body = await hop.body(request)
    hop.verifier.verify(request, body)
    try:
        _loads(body)  # strict first: parse_callback's own json.loads must not meet a hostile document
        callback = parse_callback(body)
        message = parse_message(_loads(callback.source_body, "sourceBody"))
    except MessageError as exc:
        raise non_retryable(f"not a failure callback of a hopflow message: {exc}") from None
    reason = dead_reason(callback)
    runtime = await hop.runtime_async()
    eid = message.execution_id
    try:
        kind = await hop.call(runtime.mark_dead, message, reason)
    except UnknownExecution as exc:
        # e.g. the 489 we gave a message for an unknown execution: nothing to mark, acknowledge
        return json_response({"result": "ignored", "execution_id": eid, "detail": exc.message})
    if kind == "dead":
        log.error("execution %s is dead: %s", eid, reason)
        return json_response({"result": "dead", "execution_id": eid, "reason": reason})
    if kind == "stale":
        # a message the execution has already moved past (a duplicate, an old hop, a retry of a
        # node that has since completed): losing it loses nothing, so nothing is marked
        detail = f"the execution had moved past this message (step {message.node}, seq {message.seq})"
        log.info("QStash gave up on an old message of execution %s: %s; nothing marked", eid, detail)
        return json_response({"result": "stale", "execution_id": eid, "detail": detail, "reason": reason})
    detail = "the execution had already ended"
    log.info("QStash gave up on a message of execution %s, which had already ended", eid)
    return json_response({"result": "ignored", "execution_id": eid, "detail": detail, "reason": reason})


async def step_callback(hop: HopflowApp, request: Request) -> Response:
    """``POST /v1/step/callback``: the response of an offloaded http call completes its step.

    The callback URL's query names the node: ``execution_id``, ``node``, ``seq``, ``branch``
    (optional) and ``failure=1`` for the failure callback. It is covered by the signature (the
    JWT's ``sub``), so it can be trusted.
    """
    from engine.dispatch.qstash import parse_callback
    from engine.model import MessageError

    body = await hop.body(request, callback_body_limit(hop.config.max_body_bytes))
    hop.verifier.verify(request, body)
    params = dict(parse_qsl(request.url.query, keep_blank_values=True))
    seq = params.get("seq", "")
    try:
        message = parse_message(
            {
                "execution_id": params.get("execution_id"),
                "node": params.get("node"),
                "seq": int(seq) if seq.isascii() and seq.isdigit() and len(seq) < 20 else None,
                "branch": params.get("branch", ""),
            }
        )
        _loads(body)
        callback = parse_callback(body)
    except MessageError as exc:
        raise non_retryable(f"not an offloaded-call callback: {exc}") from None
    runtime = await hop.runtime_async()
    complete = getattr(runtime, "complete_offloaded", None)
    if complete is None:
        raise Problem(
            "not-implemented",
            "this runtime cannot complete offloaded calls yet (Runtime.complete_offloaded is missing)",
        )
    from engine.errors import GraphMissing, UnknownExecution

    try:
        result = await hop.call(complete, message, callback, failure=params.get("failure") == "1")
    except (UnknownExecution, GraphMissing) as exc:
        raise non_retryable(exc.message) from None
    kind = getattr(result, "kind", str(result))
    if kind == "busy":
        # the branch is locked by another delivery; QStash makes callbacks, so only it can repeat one
        raise Problem(
            "unavailable", "the step is busy; deliver the callback again", headers={"Retry-After": "1"}
        )
    return json_response({"result": kind, "execution_id": message.execution_id})


def callback_body_limit(max_body_bytes: int) -> int:
    """The body bound of ``/v1/step/callback`` (see CALLBACK_MIN_BODY_BYTES)."""
    return max(CALLBACK_MIN_BODY_BYTES, 3 * max_body_bytes)


def parse_message(data: Any) -> Message:
    """A message, checked beyond its shape: an execution id that can be a key (no hash-tag braces,
    no newline), a ``seq`` a Lua number holds exactly, a well-formed branch path. MessageError else."""
    from engine.errors import InvalidExecutionId
    from engine.model import Message, MessageError
    from engine.state.store import check_execution_id

    message = Message.from_dict(data)
    try:
        check_execution_id(message.execution_id)
    except InvalidExecutionId:
        raise MessageError("message.execution_id is not a valid execution id") from None
    if message.seq > MAX_SEQ:
        raise MessageError(f"message.seq is larger than {MAX_SEQ}")
    if message.branch and not BRANCH.fullmatch(message.branch):
        raise MessageError("message.branch is not a branch path (<step>/<index>, nested with /)")
    return message


def _loads(body: bytes, what: str = "body") -> Any:
    from engine.model import MessageError

    try:
        return loads(body)
    except JSONRefused as exc:
        raise MessageError(exc.reason if what == "body" else f"{what}: {exc.reason}") from None


def dead_reason(callback: Any) -> str:
    """What QStash's failure callback says, as one line for the record and the history."""
    if callback.status:
        last = f"last response HTTP {callback.status}"
    else:
        last = "no response at all (connection failures or timeouts)"
    attempts = callback.retried + 1 if callback.retried else callback.max_retries + 1
    reason = f"QStash gave up delivering the message after {attempts} attempt(s); {last}"
    if callback.dlq_id:
        reason += f"; DLQ id {callback.dlq_id}"
    return reason
